package peclog

import "testing"

// A log read from storage one entry at a time is judged as VerifyChain
// judges it, and the Verifier keeps a few words per head, not per entry.
func TestAVerifierReadingALongLogKeepsLittle(t *testing.T) {
	entries, heads := chain1000(t)
	v := NewVerifier(heads, testRoots)
	for i, e := range entries {
		v.Add(e)
		if i == 499 {
			// Halfway, the later heads point past what was read so far.
			wantProblem(t, v.Report(), heads[len(heads)-1].Seq, "entries removed from the end")
		}
	}
	lows := 0
	for _, l := range v.lows {
		lows += len(l)
	}
	if len(v.seen) != 1 || lows > len(heads)+1 || len(v.atHead) > len(heads) {
		t.Fatalf("kept %d runs, %d lows, %d head refs for %d entries and %d heads", len(v.seen), lows, len(v.atHead), len(entries), len(heads))
	}
	r := v.Report()
	mustOK(t, r)
	if r.Entries != 1000 || r.Heads != len(heads) {
		t.Fatalf("counts: %s", r)
	}
	if again := v.Report(); again.String() != r.String() {
		t.Fatal("a second Report differs")
	}

	// The same log with one entry altered.
	entries, heads = cloneChain(entries, heads)
	entries[600].Detail = "modificato"
	v = NewVerifier(heads, testRoots)
	for _, e := range entries {
		v.Add(e)
	}
	if got, want := v.Report().String(), VerifyChain(entries, heads, testRoots).String(); got != want {
		t.Fatalf("stream verdict:\n%s\nVerifyChain:\n%s", got, want)
	}
	wantProblem(t, v.Report(), 601, "altered")

	// Before any entry only the heads are judged: they cover nothing.
	wantProblem(t, NewVerifier(heads[:1], nil).Report(), heads[0].Seq, "the log is empty")
}
