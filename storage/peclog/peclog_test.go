package peclog

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	chainOnce    sync.Once
	chainEntries []Entry
	chainHeads   []Head
)

// chain1000 is the shared, never modified, 1000-entry chain; tests tamper
// with copies.
func chain1000(t *testing.T) ([]Entry, []Head) {
	t.Helper()
	chainOnce.Do(func() { chainEntries, chainHeads = buildChain(t, 1000) })
	if len(chainEntries) != 1000 {
		t.Fatal("chain not built")
	}
	return cloneChain(chainEntries, chainHeads)
}

func mustOK(t *testing.T, r Report) {
	t.Helper()
	if !r.OK || len(r.Problems) != 0 {
		t.Fatalf("chain should verify:\n%s", r)
	}
}

// wantProblem requires a broken report with a problem at seq whose text
// contains want.
func wantProblem(t *testing.T, r Report, seq uint64, want string) {
	t.Helper()
	if r.OK {
		t.Fatalf("tampering not detected (want seq %d %q)", seq, want)
	}
	for _, p := range r.Problems {
		if p.Seq == seq && strings.Contains(p.What, want) {
			return
		}
	}
	t.Fatalf("no problem at seq %d containing %q:\n%s", seq, want, r)
}

func TestChainVerifies(t *testing.T) {
	entries, heads := chain1000(t)
	if len(heads) < 10 {
		t.Fatalf("only %d heads", len(heads))
	}
	r := VerifyChain(entries, heads, testRoots)
	mustOK(t, r)
	if r.Entries != 1000 || r.Heads != len(heads) {
		t.Fatalf("counts %d/%d", r.Entries, r.Heads)
	}
	mustOK(t, VerifyChain(entries, heads, nil))
	if !strings.HasPrefix(r.String(), "log OK: 1000 entries") {
		t.Fatalf("String: %q", r.String())
	}
	for i, e := range entries {
		if e.Seq != uint64(i+1) || len(e.Hash) != 32 || e.Time.Location() != time.UTC {
			t.Fatalf("entry %d: seq %d hash %x time %v", i, e.Seq, e.Hash, e.Time)
		}
	}
	if !bytes.Equal(entries[0].PrevHash, make([]byte, 32)) {
		t.Fatal("first PrevHash not zero")
	}
}

// Changing any byte of any field of one entry is reported at that Seq.
func TestTamperOneByteEachField(t *testing.T) {
	base, heads := chain1000(t)
	const target = 437
	mutations := map[string]func(e *Entry){
		"Event":      func(e *Entry) { e.Event = Event(flip(string(e.Event), 2)) },
		"MsgID":      func(e *Entry) { e.MsgID = flip(e.MsgID, 5) },
		"RelatedIDs": func(e *Entry) { e.RelatedIDs[0] = flip(e.RelatedIDs[0], 3) },
		"Sender":     func(e *Entry) { e.Sender = flip(e.Sender, 0) },
		"Recipients": func(e *Entry) { e.Recipients[1] = flip(e.Recipients[1], 7) },
		"Subject":    func(e *Entry) { e.Subject = flip(e.Subject, 9) },
		"Gestore":    func(e *Entry) { e.Gestore = flip(e.Gestore, 1) },
		"Detail":     func(e *Entry) { e.Detail = "x" },
		"Time":       func(e *Entry) { e.Time = e.Time.Add(time.Millisecond) },
		"Seq":        func(e *Entry) { e.Seq ^= 1 << 40 },
		"PrevHash":   func(e *Entry) { e.PrevHash[31] ^= 1 },
		"Hash":       func(e *Entry) { e.Hash[0] ^= 0x80 },
	}
	for name, mut := range mutations {
		t.Run(name, func(t *testing.T) {
			entries, hs := cloneChain(base, heads)
			mut(&entries[target-1])
			r := VerifyChain(entries, hs, testRoots)
			seq := entries[target-1].Seq
			wantProblem(t, r, seq, "")
			if name != "Seq" && r.Problems[0].Seq != target {
				t.Fatalf("first problem not at %d:\n%s", target, r)
			}
		})
	}
	// The classic one: content changed, stored hash left alone.
	entries, hs := cloneChain(base, heads)
	entries[target-1].Subject = flip(entries[target-1].Subject, 4)
	r := VerifyChain(entries, hs, testRoots)
	wantProblem(t, r, target, "content does not match the entry's hash")
	if len(r.Problems) != 1 {
		t.Fatalf("one altered entry should make one problem:\n%s", r)
	}
}

// A forger who recomputes the altered entry's hash (and even every later
// hash) is still caught: by the next link, or by the signed heads.
func TestRewriteCaughtByHeads(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	entries[499].Subject = "nulla da segnalare"
	entries[499].Hash = HashEntry(entries[499])
	wantProblem(t, VerifyChain(entries, hs, testRoots), 501, "PrevHash does not match")

	// Rewrite the rest of the chain too.
	for i := 500; i < len(entries); i++ {
		entries[i] = Next(&entries[i-1], entries[i])
	}
	r := VerifyChain(entries, hs, testRoots)
	found := false
	for _, p := range r.Problems {
		if strings.Contains(p.What, "does not match the entry's hash") {
			found = true
			if p.Seq < 500 {
				t.Fatalf("head before the rewrite blamed: %v", p)
			}
		}
	}
	if !found {
		t.Fatalf("rewrite after entry 500 not caught by the heads:\n%s", r)
	}
}

func TestDeleteEntry(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	entries = append(entries[:299], entries[300:]...) // drop Seq 300
	r := VerifyChain(entries, hs, testRoots)
	wantProblem(t, r, 301, "sequence gap: Seq 301 follows Seq 299, 1 entry missing, and its PrevHash does not link")
}

func TestDeleteFirstAndLast(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	wantProblem(t, VerifyChain(entries[1:], hs, testRoots), 2, "no valid signed head for Seq 1 anchors it")
	// The last entry is covered by the last head: removing it is visible.
	wantProblem(t, VerifyChain(entries[:999], hs, testRoots), 1000, "the log ends at Seq 999")
	// A head covering a Seq in the middle that is gone.
	mid := hs[3].Seq
	cut := append(append([]Entry{}, entries[:mid-1]...), entries[mid:]...)
	wantProblem(t, VerifyChain(cut, hs, testRoots), mid, "missing from the log")
}

func TestReorderTwo(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	entries[600], entries[601] = entries[601], entries[600] // Seq 601 and 602
	r := VerifyChain(entries, hs, testRoots)
	wantProblem(t, r, 602, "sequence gap: Seq 602 follows Seq 600")
	wantProblem(t, r, 601, "out of order: Seq 601 follows Seq 602")
}

func TestSeqGapAndDuplicate(t *testing.T) {
	base, heads := chain1000(t)
	// Renumbered (with hashes recomputed so only the gap shows).
	entries, hs := cloneChain(base, heads)
	entries[700].Seq = 710
	entries[700].Hash = HashEntry(entries[700])
	r := VerifyChain(entries, hs, testRoots)
	wantProblem(t, r, 710, "sequence gap: Seq 710 follows Seq 700, 9 entries missing")

	entries, hs = cloneChain(base, heads)
	entries = append(entries[:801], entries[800:]...) // Seq 801 twice
	r = VerifyChain(entries, hs, testRoots)
	wantProblem(t, r, 801, "duplicate Seq")
	wantProblem(t, r, 801, "out of order: Seq 801 follows Seq 801")
}

func TestHeadTampering(t *testing.T) {
	base, heads := chain1000(t)
	t.Run("signature ECDSA", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[2].Signature[len(hs[2].Signature)/2] ^= 1
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[2].Seq, "ECDSA signature invalid")
	})
	t.Run("signature RSA", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[3].Signature[10] ^= 1
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[3].Seq, "RSA signature invalid")
	})
	t.Run("time moved", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[4].Time = hs[4].Time.Add(-time.Hour)
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[4].Seq, "signature invalid")
	})
	t.Run("hash field changed", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[5].Hash[0] ^= 1
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[5].Seq, "signature invalid")
	})
	t.Run("validly signed wrong hash", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		fake := entries[hs[5].Seq-1]
		fake.Subject = "altro"
		fake.Hash = HashEntry(fake)
		h, err := SignHead(fake, hs[5].Time, ecKey.signer, ecKey.cert)
		if err != nil {
			t.Fatal(err)
		}
		hs[5] = h
		wantProblem(t, VerifyChain(entries, hs, testRoots), h.Seq, "does not match the entry's hash")
	})
	t.Run("untrusted signer", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		h, err := SignHead(entries[hs[6].Seq-1], hs[6].Time, otherKey.signer, otherKey.cert)
		if err != nil {
			t.Fatal(err)
		}
		hs[6] = h
		wantProblem(t, VerifyChain(entries, hs, testRoots), h.Seq, "not trusted at signing time")
		mustOK(t, VerifyChain(entries, hs, nil)) // internal consistency holds
		wantProblem(t, VerifyChain(entries, heads, otherRoots), heads[0].Seq, "not trusted")
	})
	t.Run("certificate expired at signing time", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		// Signed while valid: still fine years later (judged at signing time).
		h, err := SignHead(entries[hs[0].Seq-1], hs[0].Time, shortKy.signer, shortKy.cert)
		if err != nil {
			t.Fatal(err)
		}
		hs[0] = h
		mustOK(t, VerifyChain(entries, hs, testRoots))
		// SignHead refuses to sign outside the validity; a forged late head fails.
		if _, err := SignHead(entries[hs[5].Seq-1], hs[5].Time, shortKy.signer, shortKy.cert); err == nil {
			t.Fatal("signed outside the certificate validity")
		}
	})
	t.Run("heads out of order", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[7], hs[8] = hs[8], hs[7]
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[8].Seq, "out of order")
	})
	t.Run("head deleted leaves a late gap", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		firstUncovered := hs[3].Seq + 1
		hs = append(hs[:4], hs[5:]...)
		wantProblem(t, VerifyChain(entries, hs, testRoots), firstUncovered, "more than 25h0m0s later")
	})
	t.Run("no certificate", func(t *testing.T) {
		entries, hs := cloneChain(base, heads)
		hs[1].Certificate = nil
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[1].Seq, "no certificate")
		hs[1].Certificate = []byte{0x30, 0x03, 0x02, 0x01, 0x01}
		wantProblem(t, VerifyChain(entries, hs, testRoots), hs[1].Seq, "certificate unreadable")
	})
}

func TestUnsignedTail(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	last := hs[len(hs)-1]
	prev := &entries[len(entries)-1]
	// 20 hours later: still within the daily window.
	e := Next(prev, Entry{Time: prev.Time.Add(20 * time.Hour), Event: EventConsegna, MsgID: "x"})
	entries = append(entries, e)
	mustOK(t, VerifyChain(entries, hs, testRoots))
	// More than 25 h after the first unsigned entry: the tail must be signed.
	e2 := Next(&entries[len(entries)-1], Entry{Time: e.Time.Add(25*time.Hour + time.Second), Event: EventConsegna, MsgID: "y"})
	entries = append(entries, e2)
	wantProblem(t, VerifyChain(entries, hs, testRoots), last.Seq+1, "unsigned tail")
	// Signing it fixes it.
	h, err := SignHead(e2, e2.Time.Add(time.Minute), rsaKey.signer, rsaKey.cert)
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, VerifyChain(entries, append(hs, h), testRoots), last.Seq+1, "first covered by a head signed at")
	h2, err := SignHead(e, e.Time.Add(time.Minute), rsaKey.signer, rsaKey.cert)
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, VerifyChain(entries, append(hs, h2, h), testRoots))

	// A log without any head: fine for a day, then an unsigned tail.
	var fresh []Entry
	var p *Entry
	for i := 0; i < 150; i++ { // 37.5 h
		fresh = append(fresh, Next(p, sampleEntry(i)))
		p = &fresh[len(fresh)-1]
	}
	mustOK(t, VerifyChain(fresh[:90], nil, nil))
	wantProblem(t, VerifyChain(fresh, nil, nil), 1, "unsigned tail")
}

func TestPurge(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	if k := Purge(entries, hs, chainStart); k != 1 {
		t.Fatalf("nothing is old enough, keepFrom = %d", k)
	}
	before := chainStart.Add(5*24*time.Hour + 3*time.Hour)
	keep := Purge(entries, hs, before)
	if keep <= 1 || keep > 1000 {
		t.Fatalf("keepFrom = %d", keep)
	}
	anchorOK := false
	for _, h := range hs {
		if h.Seq == keep-1 {
			anchorOK = true
		}
	}
	if !anchorOK {
		t.Fatalf("no head at %d", keep-1)
	}
	for _, e := range entries[:keep-1] {
		if !e.Time.Before(before) {
			t.Fatalf("entry %d (%v) purged though not older than %v", e.Seq, e.Time, before)
		}
	}
	// The best anchor was chosen: the next head covers entries too new.
	for _, h := range hs {
		if h.Seq >= keep && h.Seq < 1000 && entries[h.Seq-1].Time.Before(before) {
			t.Fatalf("head %d would have allowed purging further", h.Seq)
		}
	}
	rest := entries[keep-1:]
	if rest[0].Seq != keep {
		t.Fatalf("rest starts at %d", rest[0].Seq)
	}
	mustOK(t, VerifyChain(rest, KeepHeads(hs, keep), testRoots))
	mustOK(t, VerifyChain(rest, hs, testRoots)) // older heads are harmless
	if len(KeepHeads(hs, keep)) >= len(hs) {
		t.Fatal("KeepHeads dropped nothing")
	}
	// Without the anchor, or with one entry too many removed, it fails.
	var noAnchor []Head
	for _, h := range hs {
		if h.Seq != keep-1 {
			noAnchor = append(noAnchor, h)
		}
	}
	wantProblem(t, VerifyChain(rest, noAnchor, testRoots), keep, "no valid signed head")
	wantProblem(t, VerifyChain(rest[1:], KeepHeads(hs, keep), testRoots), keep+1, "anchors it")
	// Tampering with the first kept entry's link is caught by the anchor.
	rest2, hs2 := cloneChain(rest, hs)
	rest2[0].PrevHash[0] ^= 1
	rest2[0].Hash = HashEntry(rest2[0])
	wantProblem(t, VerifyChain(rest2, hs2, testRoots), keep, "does not match the signed anchor head")

	// Purging again from the purged log: idempotent, and moves on later.
	if k := Purge(rest, KeepHeads(hs, keep), before); k != keep {
		t.Fatalf("second purge %d, want %d", k, keep)
	}
	later := Purge(rest, KeepHeads(hs, keep), before.Add(3*24*time.Hour))
	if later <= keep {
		t.Fatalf("later purge %d <= %d", later, keep)
	}
	mustOK(t, VerifyChain(entries[later-1:], KeepHeads(hs, later), testRoots))
	// Far in the future: everything but the newest head's successor; never the last entry.
	all := Purge(entries, hs, before.AddDate(3, 0, 0))
	if all > 1000 {
		t.Fatalf("purged the newest entry: %d", all)
	}
	mustOK(t, VerifyChain(entries[all-1:], KeepHeads(hs, all), testRoots))
	// A broken chain is not purged past its break.
	broken, bh := cloneChain(base, heads)
	broken[10].Detail = "manomesso"
	if k := Purge(broken, bh, before); k != 1 {
		t.Fatalf("purged across a broken entry: %d", k)
	}
	if Purge(nil, hs, before) != 0 {
		t.Fatal("empty log")
	}
	if !RetentionCutoff(time.Date(2028, 9, 15, 0, 0, 0, 0, time.UTC)).Equal(time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC)) {
		t.Fatal("RetentionCutoff")
	}
}

func TestNextAndSignHead(t *testing.T) {
	keys(t)
	in := sampleEntry(3)
	in.Time = time.Date(2025, 5, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 7200))
	in.Seq, in.Hash, in.PrevHash = 99, []byte("junk"), []byte("junk")
	e := Next(nil, in)
	if e.Seq != 1 || !bytes.Equal(e.PrevHash, make([]byte, 32)) {
		t.Fatalf("first: %d %x", e.Seq, e.PrevHash)
	}
	if !e.Time.Equal(time.Date(2025, 5, 1, 10, 0, 0, 123000000, time.UTC)) || e.Time.Location() != time.UTC {
		t.Fatalf("time %v", e.Time)
	}
	in.Recipients[0] = "changed@x"
	if e.Recipients[0] == "changed@x" {
		t.Fatal("Next shares the Recipients slice")
	}
	if again := Next(nil, sampleEntry(3)); !bytes.Equal(Next(nil, sampleEntry(3)).Hash, again.Hash) {
		t.Fatal("Next not deterministic")
	}
	in4 := sampleEntry(4)
	in4.Time = e.Time.Add(time.Minute)
	e2 := Next(&e, in4)
	if e2.Seq != 2 || !bytes.Equal(e2.PrevHash, e.Hash) {
		t.Fatal("link")
	}
	if _, err := SignHead(e, e.Time, ecKey.signer, rsaKey.cert); err == nil {
		t.Fatal("signed with a certificate of another key")
	}
	bad := e
	bad.Subject = "x"
	if _, err := SignHead(bad, e.Time, ecKey.signer, ecKey.cert); err == nil {
		t.Fatal("signed an entry whose hash does not match")
	}
	if _, err := SignHead(e, e.Time, nil, nil); err == nil {
		t.Fatal("nil signer")
	}
	h, err := SignHead(e, e.Time.Add(time.Second), rsaKey.signer, rsaKey.cert)
	if err != nil {
		t.Fatal(err)
	}
	if h.Seq != 1 || !bytes.Equal(h.Hash, e.Hash) || !bytes.Equal(h.Certificate, rsaKey.cert.Raw) {
		t.Fatalf("head %+v", h)
	}
	mustOK(t, VerifyChain([]Entry{e, e2}, []Head{h}, testRoots))
	for _, ev := range Events() {
		if !ev.Known() {
			t.Fatal(ev)
		}
	}
	if Event("boh").Known() {
		t.Fatal("unknown event known")
	}
}

// decodeCanonical inverts Canonical; that it exists (and round-trips) shows
// the encoding is unambiguous.
func decodeCanonical(b []byte) (Entry, bool) {
	var e Entry
	ok := true
	take := func(n int) []byte {
		if !ok || n < 0 || n > len(b) {
			ok = false
			return nil
		}
		p := b[:n]
		b = b[n:]
		return p
	}
	u32 := func() int {
		p := take(4)
		if p == nil {
			return 0
		}
		return int(binary.BigEndian.Uint32(p))
	}
	str := func() string { return string(take(u32())) }
	list := func() []string {
		n := u32()
		if n > len(b) {
			ok = false
			return nil
		}
		var l []string
		for range n {
			l = append(l, str())
		}
		return l
	}
	if v := take(1); v == nil || v[0] != 1 || str() != "sigillo-peclog-entry" {
		return e, false
	}
	if p := take(8); p != nil {
		e.Seq = binary.BigEndian.Uint64(p)
	}
	if p := take(8); p != nil {
		e.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(p))).UTC()
	}
	e.Event = Event(str())
	e.MsgID = str()
	e.RelatedIDs = list()
	e.Sender = str()
	e.Recipients = list()
	e.Subject = str()
	e.Gestore = str()
	e.Detail = str()
	e.PrevHash = []byte(str())
	return e, ok && len(b) == 0
}

func normal(e Entry) Entry {
	e.Hash = nil
	e.Time = msTime(e.Time)
	if len(e.RelatedIDs) == 0 {
		e.RelatedIDs = nil
	}
	if len(e.Recipients) == 0 {
		e.Recipients = nil
	}
	if len(e.PrevHash) == 0 {
		e.PrevHash = []byte{}
	}
	return e
}

func randString(r *rand.Rand) string {
	alphabet := []string{"", "a", "b", "@", ":", "\x00", "\xff", "à", "\x00\x00\x00\x01", " "}
	var s strings.Builder
	for range r.IntN(6) {
		s.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return s.String()
}

func randEntry(r *rand.Rand) Entry {
	list := func() []string {
		n := r.IntN(4) - 1
		if n < 0 {
			return nil
		}
		l := make([]string, n)
		for i := range l {
			l[i] = randString(r)
		}
		return l
	}
	pv := make([]byte, r.IntN(3)*16)
	for i := range pv {
		pv[i] = byte(r.IntN(3))
	}
	return Entry{
		Seq:        r.Uint64N(4),
		Time:       time.UnixMilli(r.Int64N(5) - 2),
		Event:      Event(randString(r)),
		MsgID:      randString(r),
		RelatedIDs: list(),
		Sender:     randString(r),
		Recipients: list(),
		Subject:    randString(r),
		Gestore:    randString(r),
		Detail:     randString(r),
		PrevHash:   pv,
	}
}

// Canonical is injective: it decodes back to the same entry, and random
// pairs of different entries never collide.
func TestCanonicalRoundTripAndInjective(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]Entry{}
	for range 20000 {
		e := randEntry(r)
		c := Canonical(e)
		d, ok := decodeCanonical(c)
		if !ok || !reflect.DeepEqual(normal(d), normal(e)) {
			t.Fatalf("round trip:\n%#v\n%#v", normal(e), normal(d))
		}
		if prev, dup := seen[string(c)]; dup && !reflect.DeepEqual(normal(prev), normal(e)) {
			t.Fatalf("collision:\n%#v\n%#v", prev, e)
		}
		seen[string(c)] = e
	}
}

// Changing any single field changes the encoding, including the boundary
// cases where bytes move between neighbouring fields or list elements.
func TestCanonicalEveryFieldMatters(t *testing.T) {
	base := Entry{
		Seq: 7, Time: time.Date(2025, 1, 2, 3, 4, 5, 6000000, time.UTC), Event: EventConsegna,
		MsgID: "id@x", RelatedIDs: []string{"ab", "c"}, Sender: "mario@pec.it", Recipients: []string{"a@b"},
		Subject: "Oggetto", Gestore: "G", Detail: "D", PrevHash: bytes.Repeat([]byte{1}, 32),
		Hash: []byte("ignored"),
	}
	cases := map[string]func(e *Entry){
		"Seq":                         func(e *Entry) { e.Seq++ },
		"Seq high bit":                func(e *Entry) { e.Seq |= 1 << 63 },
		"Time ms":                     func(e *Entry) { e.Time = e.Time.Add(time.Millisecond) },
		"Time before 1970":            func(e *Entry) { e.Time = time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC) },
		"Event":                       func(e *Entry) { e.Event = EventMancataConsegna },
		"MsgID":                       func(e *Entry) { e.MsgID = "id@y" },
		"RelatedIDs element":          func(e *Entry) { e.RelatedIDs = []string{"ab", "d"} },
		"RelatedIDs split moved":      func(e *Entry) { e.RelatedIDs = []string{"a", "bc"} },
		"RelatedIDs joined":           func(e *Entry) { e.RelatedIDs = []string{"abc"} },
		"RelatedIDs extra empty":      func(e *Entry) { e.RelatedIDs = []string{"ab", "c", ""} },
		"RelatedIDs to Recipients":    func(e *Entry) { e.RelatedIDs = []string{"ab"}; e.Recipients = []string{"c", "a@b"} },
		"Sender":                      func(e *Entry) { e.Sender = "mario@pec.iu" },
		"Sender→Subject char":         func(e *Entry) { e.Sender = "mario@pec.i"; e.Subject = "tOggetto" },
		"Subject→Sender char":         func(e *Entry) { e.Sender = "mario@pec.itO"; e.Subject = "ggetto" },
		"Recipients":                  func(e *Entry) { e.Recipients = []string{"a@c"} },
		"Recipients empty":            func(e *Entry) { e.Recipients = nil },
		"Recipients one empty string": func(e *Entry) { e.Recipients = []string{"a@b", ""} },
		"Subject":                     func(e *Entry) { e.Subject = "oggetto" },
		"Subject→Gestore":             func(e *Entry) { e.Subject = "Oggett"; e.Gestore = "oG" },
		"Gestore":                     func(e *Entry) { e.Gestore = "H" },
		"Gestore→Detail":              func(e *Entry) { e.Gestore = ""; e.Detail = "GD" },
		"Detail":                      func(e *Entry) { e.Detail = "" },
		"Detail→PrevHash":             func(e *Entry) { e.Detail = ""; e.PrevHash = append([]byte("D"), e.PrevHash...) },
		"PrevHash":                    func(e *Entry) { e.PrevHash = bytes.Repeat([]byte{1}, 31) },
		"PrevHash empty":              func(e *Entry) { e.PrevHash = nil },
	}
	want := Canonical(base)
	for name, mut := range cases {
		e := base
		e.RelatedIDs = cloneStrings(base.RelatedIDs)
		e.Recipients = cloneStrings(base.Recipients)
		mut(&e)
		if bytes.Equal(Canonical(e), want) {
			t.Errorf("%s: same canonical encoding", name)
		}
		if bytes.Equal(HashEntry(e), HashEntry(base)) {
			t.Errorf("%s: same hash", name)
		}
	}
	// What is not part of the entry does not count.
	e := base
	e.Hash = []byte("other")
	e.Time = e.Time.In(time.FixedZone("X", 3600)).Add(999 * time.Microsecond)
	if !bytes.Equal(Canonical(e), want) {
		t.Error("Hash, time zone or sub-millisecond digits changed the encoding")
	}
	// Property over random entries: every single-field change is visible.
	r := rand.New(rand.NewPCG(3, 4))
	fields := reflect.TypeFor[Entry]().NumField()
	for range 3000 {
		a := randEntry(r)
		b := randEntry(r)
		for f := 0; f < fields; f++ {
			name := reflect.TypeFor[Entry]().Field(f).Name
			if name == "Hash" {
				continue
			}
			c := a
			reflect.ValueOf(&c).Elem().Field(f).Set(reflect.ValueOf(b).Field(f))
			same := reflect.DeepEqual(normal(c), normal(a))
			if bytes.Equal(Canonical(c), Canonical(a)) != same {
				t.Fatalf("field %s: encoding equality %v but entries equal %v\n%#v\n%#v", name, !same, same, a, c)
			}
		}
	}
	// The documented layout, spelled out once.
	h := Head{Seq: 2, Hash: []byte{0xaa}, Time: time.UnixMilli(1)}
	wantHead := []byte("\x01\x00\x00\x00\x13sigillo-peclog-head\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01\xaa\x00\x00\x00\x00\x00\x00\x00\x01")
	if !bytes.Equal(CanonicalHead(h), wantHead) {
		t.Errorf("CanonicalHead = %q", CanonicalHead(h))
	}
}

func flip(s string, i int) string {
	b := []byte(s)
	b[i%len(b)] ^= 0x01
	return string(b)
}

func TestReportString(t *testing.T) {
	base, heads := chain1000(t)
	entries, hs := cloneChain(base, heads)
	entries[5].MsgID = "x"
	s := VerifyChain(entries, hs, nil).String()
	if !strings.HasPrefix(s, "log BROKEN: 1000 entries") || !strings.Contains(s, "\n  seq 6: content does not match") {
		t.Fatalf("%q", s)
	}
}
