package peclog

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

const (
	// SignInterval is how often the chain head must be signed: every entry
	// must be covered by a signed head within SignInterval (+ SignTolerance)
	// of its time.
	SignInterval = 24 * time.Hour
	// SignTolerance absorbs a late signing run or clock skew between
	// successive leaders.
	SignTolerance = time.Hour
	// RetentionMonths is how long the log is kept (DPR 68/2005 art. 11).
	RetentionMonths = 30
)

// Problem is one inconsistency found by VerifyChain, at the entry (or the
// signed head's) Seq it concerns.
type Problem struct {
	Seq  uint64
	What string
}

func (p Problem) String() string { return fmt.Sprintf("seq %d: %s", p.Seq, p.What) }

// Report is the outcome of VerifyChain: how many entries and heads were
// examined, whether everything held, and the problems, ordered by Seq.
type Report struct {
	Entries, Heads int
	OK             bool
	Problems       []Problem
}

// count is "1 entry", "2 entries".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// String renders the report for a human: a summary line, then one line per
// problem.
func (r Report) String() string {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "log OK: %s, %s\n", count(r.Entries, "entry", "entries"), count(r.Heads, "signed head", "signed heads"))
		return b.String()
	}
	fmt.Fprintf(&b, "log BROKEN: %s, %s, %s\n", count(r.Entries, "entry", "entries"), count(r.Heads, "signed head", "signed heads"),
		count(len(r.Problems), "problem", "problems"))
	for _, p := range r.Problems {
		b.WriteString("  ")
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// VerifyChain checks a log, entries in stored order (ascending Seq) and heads
// in signing order:
//
//   - every entry's Hash is recomputed from its content;
//   - every entry's PrevHash is the Hash of the entry before it, and Seq
//     grows by one without gaps, duplicates or reordering;
//   - the first entry is Seq 1 with a zero PrevHash, or — after a purge —
//     Seq N > 1 whose PrevHash is the Hash of a valid signed head for N-1
//     (the anchor kept by Purge);
//   - every head's signature is valid; with roots != nil its certificate
//     (plus any intermediates carried after it) chains to roots at the
//     head's signing time; heads are in Seq and time order;
//   - every head for a Seq still in the log matches that entry's Hash, and
//     no head points past the end of the log (entries removed at the end);
//     heads older than the anchor (before the retained part) are checked
//     for signature and order only;
//   - every entry is covered by a signed head no later than SignInterval +
//     SignTolerance after its time; an uncovered tail is reported
//     ("unsigned tail") once the newest entry is more than that past the
//     oldest uncovered one. The newest entry's time is the clock: the check
//     reads no wall clock, so the verdict depends on the inputs only.
//
// With roots == nil the check is internal consistency only: anyone can sign
// heads with a key of their own. VerifyChain never panics on malformed input.
// A log too large for memory is checked the same way with a Verifier.
func VerifyChain(entries []Entry, heads []Head, roots *x509.CertPool) Report {
	v := NewVerifier(heads, roots)
	for _, e := range entries {
		v.Add(e)
	}
	return v.Report()
}

// RetentionCutoff returns the time before which entries may be purged at
// now: RetentionMonths earlier.
func RetentionCutoff(now time.Time) time.Time { return now.AddDate(0, -RetentionMonths, 0) }

// Purge returns the Seq the log may start at once entries older than before
// are dropped (the 30-month retention, before = RetentionCutoff(now) chosen
// by the proposer): the largest keepFrom = S+1 such that a signed head for S
// exists (signature valid, matching entry S), every entry up to S is older
// than before, and entries from the start through S+1 form an intact chain.
// The newest entry is never purged. The caller deletes entries with
// Seq < keepFrom and may drop heads with Seq < keepFrom-1 (KeepHeads): the
// head for keepFrom-1 stays as the anchor against which VerifyChain checks
// entry keepFrom's PrevHash. When nothing may be purged keepFrom is the
// first entry's Seq; for an empty log it is 0. Purge is deterministic.
func Purge(entries []Entry, heads []Head, before time.Time) (keepFrom uint64) {
	if len(entries) == 0 {
		return 0
	}
	first := entries[0].Seq
	keepFrom = first
	// The intact prefix, and the newest time within it.
	good := 0
	maxTime := make([]time.Time, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		if e.Seq != first+uint64(i) || !bytes.Equal(HashEntry(*e), e.Hash) ||
			(i > 0 && !bytes.Equal(e.PrevHash, entries[i-1].Hash)) {
			break
		}
		t := e.Time
		if i > 0 && maxTime[i-1].After(t) {
			t = maxTime[i-1]
		}
		maxTime = append(maxTime, t)
		good++
	}
	if good < 2 {
		return keepFrom
	}
	for _, h := range heads {
		if h.Seq < first || h.Seq-first >= uint64(good-1) {
			continue // entries S and S+1 must both be in the intact prefix
		}
		idx := int(h.Seq - first)
		if h.Seq+1 <= keepFrom || !maxTime[idx].Before(before) || !bytes.Equal(h.Hash, entries[idx].Hash) {
			continue
		}
		if verifyHead(h, nil) != nil {
			continue
		}
		keepFrom = h.Seq + 1
	}
	return keepFrom
}

// KeepHeads returns the heads still needed after purging up to keepFrom: the
// anchor for keepFrom-1 and every later one.
func KeepHeads(heads []Head, keepFrom uint64) []Head {
	var out []Head
	for _, h := range heads {
		if keepFrom == 0 || h.Seq >= keepFrom-1 {
			out = append(out, h)
		}
	}
	return out
}
