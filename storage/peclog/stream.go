package peclog

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"sort"
	"time"
)

// VerifyHead checks one signed head on its own: its signature against the
// certificate it carries and, with roots != nil, that certificate's chain
// to roots at the head's signing time. It does not look at the entries
// (VerifyChain does).
func VerifyHead(h Head, roots *x509.CertPool) error { return verifyHead(h, roots) }

// Verifier is VerifyChain fed one entry at a time, for a log too large to
// hold in memory: NewVerifier takes the signed heads (few, about one a
// day), Add takes the entries in stored order, and Report gives the same
// Report VerifyChain gives for the same entries and heads (VerifyChain is a
// Verifier fed from a slice).
//
// What it keeps grows with the number of heads, not of entries, for a log
// read in ascending Seq order with times that do not go backwards; each
// irregularity (a Seq out of order, a time earlier than those before it)
// costs a few words more. A Verifier is not safe for concurrent use.
type Verifier struct {
	heads    []Head
	headOK   []bool
	problems []Problem // in VerifyChain's order: heads, then entries

	n        int // entries added
	firstSeq uint64
	prevSeq  uint64
	prevHash []byte
	maxSeq   uint64
	newest   time.Time

	seen seqRuns // the first entry with each Seq
	// atHead is, for each Seq a valid head covers, the Hash of the first
	// entry with that Seq, once one was added.
	atHead map[uint64]headRef

	// The signing-interval check. cands are the distinct Seqs of the valid
	// heads at or after the first entry, ascending: only those can cover
	// entries. lows[b] holds the entries falling to candidate b (Seq in
	// (cands[b-1], cands[b]]; b == len(cands): after every candidate)
	// whose time is earlier than that of every entry added before them to
	// the same bucket: the first entry of a bucket that is too old for a
	// signing time is always one of them.
	cands []uint64
	lows  [][]low
}

type headRef struct {
	found bool
	hash  []byte
}

type low struct {
	idx int // position in the stream
	seq uint64
	at  time.Time
}

// NewVerifier starts a verification against heads, in signing order, and,
// with roots != nil, checks their certificates' chains to roots (see
// VerifyChain). The heads are checked on their own here; Add and Report do
// the rest.
func NewVerifier(heads []Head, roots *x509.CertPool) *Verifier {
	v := &Verifier{
		heads:  append([]Head(nil), heads...),
		headOK: make([]bool, len(heads)),
		atHead: make(map[uint64]headRef),
	}
	for i, h := range v.heads {
		if h.Seq == 0 {
			v.add(0, "signed head %d: Seq 0 (the log starts at 1)", i+1)
		}
		if err := verifyHead(h, roots); err != nil {
			v.add(h.Seq, "signed head %d (signed at %s): %v", i+1, fmtTime(h.Time), err)
		} else {
			v.headOK[i] = true
			v.atHead[h.Seq] = headRef{}
		}
		if i > 0 {
			p := v.heads[i-1]
			if h.Seq < p.Seq {
				v.add(h.Seq, "signed head %d out of order: Seq %d after a head for Seq %d", i+1, h.Seq, p.Seq)
			}
			if h.Time.Before(p.Time) {
				v.add(h.Seq, "signed head %d out of order: signed at %s, before the previous head (%s)", i+1, fmtTime(h.Time), fmtTime(p.Time))
			}
		}
	}
	return v
}

func (v *Verifier) add(seq uint64, format string, args ...any) {
	v.problems = append(v.problems, Problem{Seq: seq, What: fmt.Sprintf(format, args...)})
}

// Add checks the next entry of the log: its hash, its link to the entry
// added before it, its Seq (and, for the first, its anchor).
func (v *Verifier) Add(e Entry) {
	i := v.n
	v.n++
	if j, dup := v.seen.lookup(e.Seq); dup {
		v.add(e.Seq, "duplicate Seq: entries %d and %d of the log both have it", j+1, i+1)
	} else {
		v.seen.insert(e.Seq, i)
		if _, ok := v.atHead[e.Seq]; ok {
			v.atHead[e.Seq] = headRef{found: true, hash: clone(e.Hash)}
		}
	}
	if i == 0 || e.Seq > v.maxSeq {
		v.maxSeq = e.Seq
	}
	if i == 0 || e.Time.After(v.newest) {
		v.newest = e.Time
	}
	if i == 0 {
		v.firstSeq = e.Seq
		for k, h := range v.heads {
			if v.headOK[k] && h.Seq >= e.Seq {
				v.cands = append(v.cands, h.Seq)
			}
		}
		sort.Slice(v.cands, func(a, b int) bool { return v.cands[a] < v.cands[b] })
		distinct := v.cands[:0]
		for k, s := range v.cands {
			if k == 0 || s != v.cands[k-1] {
				distinct = append(distinct, s)
			}
		}
		v.cands = distinct
		v.lows = make([][]low, len(v.cands)+1)
	}
	b := sort.Search(len(v.cands), func(b int) bool { return v.cands[b] >= e.Seq })
	if l := v.lows[b]; len(l) == 0 || e.Time.Before(l[len(l)-1].at) {
		v.lows[b] = append(l, low{idx: i, seq: e.Seq, at: e.Time})
	}

	if !bytes.Equal(HashEntry(e), e.Hash) {
		v.add(e.Seq, "content does not match the entry's hash: the entry was altered (%s %s, msgid %q)", fmtTime(e.Time), e.Event, e.MsgID)
	}
	prevSeq, prevHash := v.prevSeq, v.prevHash
	v.prevSeq, v.prevHash = e.Seq, clone(e.Hash)
	if i == 0 {
		switch {
		case e.Seq == 0:
			v.add(0, "first entry has Seq 0 (the log starts at 1)")
		case e.Seq == 1:
			if !bytes.Equal(e.PrevHash, ZeroHash()) {
				v.add(1, "first entry's PrevHash is not 32 zero bytes")
			}
		default:
			anchored, found := false, false
			for k, h := range v.heads {
				if v.headOK[k] && h.Seq == e.Seq-1 {
					found = true
					if bytes.Equal(h.Hash, e.PrevHash) {
						anchored = true
					}
				}
			}
			switch {
			case !found:
				v.add(e.Seq, "the log starts at Seq %d but no valid signed head for Seq %d anchors it (entries removed from the start?)", e.Seq, e.Seq-1)
			case !anchored:
				v.add(e.Seq, "PrevHash does not match the signed anchor head for Seq %d", e.Seq-1)
			}
		}
		return
	}
	linked := bytes.Equal(e.PrevHash, prevHash)
	link := ""
	if !linked {
		link = ", and its PrevHash does not link to that entry"
	}
	switch {
	case e.Seq == prevSeq+1:
		if !linked {
			v.add(e.Seq, "PrevHash does not match the hash of the preceding entry (Seq %d): the chain is broken here (entry replaced or rewritten)", prevSeq)
		}
	case e.Seq > prevSeq+1 && prevSeq+1 != 0:
		v.add(e.Seq, "sequence gap: Seq %d follows Seq %d, %s missing%s", e.Seq, prevSeq, count(int(e.Seq-prevSeq-1), "entry", "entries"), link)
	default:
		v.add(e.Seq, "out of order: Seq %d follows Seq %d%s", e.Seq, prevSeq, link)
	}
}

// Report checks the heads against the entries added so far and the
// signing interval, and returns the verdict. It may be called more than
// once; entries added afterwards count in the next Report.
func (v *Verifier) Report() Report {
	r := Report{Entries: v.n, Heads: len(v.heads)}
	r.Problems = append([]Problem(nil), v.problems...)
	add := func(seq uint64, format string, args ...any) {
		r.Problems = append(r.Problems, Problem{Seq: seq, What: fmt.Sprintf(format, args...)})
	}

	// Heads against the entries.
	type cover struct {
		seq uint64
		at  time.Time
	}
	var covers []cover
	for i, h := range v.heads {
		if !v.headOK[i] {
			continue
		}
		if v.n == 0 {
			add(h.Seq, "signed head %d covers Seq %d but the log is empty", i+1, h.Seq)
			continue
		}
		if h.Seq < v.firstSeq {
			continue // the anchor (checked by Add) or older: purged entries
		}
		ref := v.atHead[h.Seq]
		if !ref.found {
			if h.Seq > v.maxSeq {
				add(h.Seq, "signed head %d covers Seq %d but the log ends at Seq %d: entries removed from the end", i+1, h.Seq, v.maxSeq)
			} else {
				add(h.Seq, "signed head %d covers Seq %d, which is missing from the log", i+1, h.Seq)
			}
			continue
		}
		if !bytes.Equal(h.Hash, ref.hash) {
			add(h.Seq, "signed head %d (signed at %s) does not match the entry's hash: the entry or the chain up to it was rewritten", i+1, fmtTime(h.Time))
			continue
		}
		covers = append(covers, cover{h.Seq, h.Time})
	}

	// Signed at least daily. An entry falls to the first cover whose Seq
	// is at or after its own; each cover reports its first entry (in log
	// order) signed too late, and the entries after every cover their
	// first one too old to be still unsigned. Those first entries are
	// among the lows of the candidate buckets the cover spans.
	sort.SliceStable(covers, func(a, b int) bool { return covers[a].seq < covers[b].seq })
	earliest := make([]time.Time, len(covers)) // earliest signing of a head at or after covers[k].seq
	for k := len(covers) - 1; k >= 0; k-- {
		earliest[k] = covers[k].at
		if k+1 < len(covers) && earliest[k+1].Before(earliest[k]) {
			earliest[k] = earliest[k+1]
		}
	}
	late := SignInterval + SignTolerance
	cand := func(seq uint64) int { // the bucket of a cover's Seq
		return sort.Search(len(v.cands), func(b int) bool { return v.cands[b] >= seq })
	}
	// firstLow is the earliest-added low of buckets from..to (inclusive)
	// for which tooOld holds.
	firstLow := func(from, to int, tooOld func(time.Time) bool) (low, bool) {
		var best low
		found := false
		for b := from; b <= to && b < len(v.lows); b++ {
			for _, l := range v.lows[b] {
				if tooOld(l.at) {
					if !found || l.idx < best.idx {
						best, found = l, true
					}
					break
				}
			}
		}
		return best, found
	}
	type hit struct {
		idx int
		p   Problem
	}
	var hits []hit
	from := 0
	for k := range covers {
		if k > 0 && covers[k-1].seq == covers[k].seq {
			continue // entries fall to the first of equal covers
		}
		to := cand(covers[k].seq)
		ek := earliest[k]
		if l, ok := firstLow(from, to, func(t time.Time) bool { return ek.Sub(t) > late }); ok {
			hits = append(hits, hit{l.idx, Problem{l.seq, fmt.Sprintf("entry of %s first covered by a head signed at %s, more than %s later", fmtTime(l.at), fmtTime(ek), late)}})
		}
		from = to + 1
	}
	if v.n > 0 {
		newest := v.newest
		if l, ok := firstLow(from, len(v.cands), func(t time.Time) bool { return newest.Sub(t) > late }); ok {
			hits = append(hits, hit{l.idx, Problem{l.seq, fmt.Sprintf("unsigned tail: no signed head covers the entries from Seq %d (%s) on, and the newest entry (%s) is more than %s later", l.seq, fmtTime(l.at), fmtTime(newest), late)}})
		}
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].idx < hits[b].idx })
	for _, h := range hits {
		r.Problems = append(r.Problems, h.p)
	}

	sort.SliceStable(r.Problems, func(a, b int) bool { return r.Problems[a].Seq < r.Problems[b].Seq })
	r.OK = len(r.Problems) == 0
	return r
}

// seqRuns records the position of the first entry with each Seq as runs of
// consecutive Seqs at consecutive positions: one run for a log read in
// order, however long.
type seqRuns []seqRun

// seqRun: Seqs lo..hi are the entries at positions idx..idx+(hi-lo).
type seqRun struct {
	lo, hi uint64
	idx    int
}

// before is the number of runs starting at or before seq.
func (rs seqRuns) before(seq uint64) int {
	return sort.Search(len(rs), func(i int) bool { return rs[i].lo > seq })
}

// lookup returns the position of the first entry with seq, if any.
func (rs seqRuns) lookup(seq uint64) (int, bool) {
	i := rs.before(seq) - 1
	if i < 0 || seq > rs[i].hi {
		return 0, false
	}
	return rs[i].idx + int(seq-rs[i].lo), true
}

// insert records seq (not yet present) at position idx, the newest.
func (rs *seqRuns) insert(seq uint64, idx int) {
	i := rs.before(seq)
	if i > 0 {
		p := &(*rs)[i-1]
		if p.hi+1 == seq && p.idx+int(p.hi-p.lo)+1 == idx {
			p.hi = seq
			return
		}
	}
	*rs = append(*rs, seqRun{})
	copy((*rs)[i+1:], (*rs)[i:])
	(*rs)[i] = seqRun{lo: seq, hi: seq, idx: idx}
}
