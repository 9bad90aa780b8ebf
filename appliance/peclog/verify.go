package peclog

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"sort"
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

// String renders the report for a human: a summary line, then one line per
// problem.
func (r Report) String() string {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "log OK: %d entries, %d signed heads\n", r.Entries, r.Heads)
		return b.String()
	}
	fmt.Fprintf(&b, "log BROKEN: %d entries, %d signed heads, %d problems\n", r.Entries, r.Heads, len(r.Problems))
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
func VerifyChain(entries []Entry, heads []Head, roots *x509.CertPool) Report {
	r := Report{Entries: len(entries), Heads: len(heads)}
	add := func(seq uint64, format string, args ...any) {
		r.Problems = append(r.Problems, Problem{Seq: seq, What: fmt.Sprintf(format, args...)})
	}

	// Heads on their own: signature, trust, order.
	headOK := make([]bool, len(heads))
	for i, h := range heads {
		if h.Seq == 0 {
			add(0, "signed head %d: Seq 0 (the log starts at 1)", i+1)
		}
		if err := verifyHead(h, roots); err != nil {
			add(h.Seq, "signed head %d (signed at %s): %v", i+1, fmtTime(h.Time), err)
		} else {
			headOK[i] = true
		}
		if i > 0 {
			p := heads[i-1]
			if h.Seq < p.Seq {
				add(h.Seq, "signed head %d out of order: Seq %d after a head for Seq %d", i+1, h.Seq, p.Seq)
			}
			if h.Time.Before(p.Time) {
				add(h.Seq, "signed head %d out of order: signed at %s, before the previous head (%s)", i+1, fmtTime(h.Time), fmtTime(p.Time))
			}
		}
	}

	// The entries: hashes, links, sequence.
	bySeq := make(map[uint64]int, len(entries))
	var maxSeq uint64
	var newest time.Time
	for i := range entries {
		e := &entries[i]
		if j, dup := bySeq[e.Seq]; dup {
			add(e.Seq, "duplicate Seq: entries %d and %d of the log both have it", j+1, i+1)
		} else {
			bySeq[e.Seq] = i
		}
		if i == 0 || e.Seq > maxSeq {
			maxSeq = e.Seq
		}
		if i == 0 || e.Time.After(newest) {
			newest = e.Time
		}
		if !bytes.Equal(HashEntry(*e), e.Hash) {
			add(e.Seq, "content does not match the entry's hash: the entry was altered (%s %s, msgid %q)", fmtTime(e.Time), e.Event, e.MsgID)
		}
		if i == 0 {
			switch {
			case e.Seq == 0:
				add(0, "first entry has Seq 0 (the log starts at 1)")
			case e.Seq == 1:
				if !bytes.Equal(e.PrevHash, ZeroHash()) {
					add(1, "first entry's PrevHash is not 32 zero bytes")
				}
			default:
				anchored, found := false, false
				for k, h := range heads {
					if headOK[k] && h.Seq == e.Seq-1 {
						found = true
						if bytes.Equal(h.Hash, e.PrevHash) {
							anchored = true
						}
					}
				}
				switch {
				case !found:
					add(e.Seq, "the log starts at Seq %d but no valid signed head for Seq %d anchors it (entries removed from the start?)", e.Seq, e.Seq-1)
				case !anchored:
					add(e.Seq, "PrevHash does not match the signed anchor head for Seq %d", e.Seq-1)
				}
			}
			continue
		}
		p := &entries[i-1]
		linked := bytes.Equal(e.PrevHash, p.Hash)
		link := ""
		if !linked {
			link = ", and its PrevHash does not link to that entry"
		}
		switch {
		case e.Seq == p.Seq+1:
			if !linked {
				add(e.Seq, "PrevHash does not match the hash of the preceding entry (Seq %d): the chain is broken here (entry replaced or rewritten)", p.Seq)
			}
		case e.Seq > p.Seq+1 && p.Seq+1 != 0:
			add(e.Seq, "sequence gap: Seq %d follows Seq %d, %d entries missing%s", e.Seq, p.Seq, e.Seq-p.Seq-1, link)
		default:
			add(e.Seq, "out of order: Seq %d follows Seq %d%s", e.Seq, p.Seq, link)
		}
	}

	// Heads against the entries.
	type cover struct {
		seq uint64
		at  time.Time
	}
	var covers []cover
	for i, h := range heads {
		if !headOK[i] {
			continue
		}
		if len(entries) == 0 {
			add(h.Seq, "signed head %d covers Seq %d but the log is empty", i+1, h.Seq)
			continue
		}
		if h.Seq < entries[0].Seq {
			continue // the anchor (checked above) or older: purged entries
		}
		j, ok := bySeq[h.Seq]
		if !ok {
			if h.Seq > maxSeq {
				add(h.Seq, "signed head %d covers Seq %d but the log ends at Seq %d: entries removed from the end", i+1, h.Seq, maxSeq)
			} else {
				add(h.Seq, "signed head %d covers Seq %d, which is missing from the log", i+1, h.Seq)
			}
			continue
		}
		if !bytes.Equal(h.Hash, entries[j].Hash) {
			add(h.Seq, "signed head %d (signed at %s) does not match the entry's hash: the entry or the chain up to it was rewritten", i+1, fmtTime(h.Time))
			continue
		}
		covers = append(covers, cover{h.Seq, h.Time})
	}

	// Signed at least daily.
	sort.SliceStable(covers, func(a, b int) bool { return covers[a].seq < covers[b].seq })
	earliest := make([]time.Time, len(covers)) // earliest signing of a head at or after covers[k].seq
	for k := len(covers) - 1; k >= 0; k-- {
		earliest[k] = covers[k].at
		if k+1 < len(covers) && earliest[k+1].Before(earliest[k]) {
			earliest[k] = earliest[k+1]
		}
	}
	late := SignInterval + SignTolerance
	lateReported := make(map[int]bool)
	tailReported := false
	for i := range entries {
		e := &entries[i]
		k := sort.Search(len(covers), func(k int) bool { return covers[k].seq >= e.Seq })
		if k < len(covers) {
			if earliest[k].Sub(e.Time) > late && !lateReported[k] {
				lateReported[k] = true
				add(e.Seq, "entry of %s first covered by a head signed at %s, more than %s later", fmtTime(e.Time), fmtTime(earliest[k]), late)
			}
			continue
		}
		if !tailReported && newest.Sub(e.Time) > late {
			tailReported = true
			add(e.Seq, "unsigned tail: no signed head covers the entries from Seq %d (%s) on, and the newest entry (%s) is more than %s later", e.Seq, fmtTime(e.Time), fmtTime(newest), late)
		}
	}

	sort.SliceStable(r.Problems, func(a, b int) bool { return r.Problems[a].Seq < r.Problems[b].Seq })
	r.OK = len(r.Problems) == 0
	return r
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
