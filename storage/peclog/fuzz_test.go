package peclog

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

var (
	miniOnce    sync.Once
	miniEntries []Entry
	miniHeads   []Head
)

// miniChain is a small valid log for the fuzzer: 16 entries, heads over
// entries 5 (ECDSA), 10 (RSA) and 16 (ECDSA).
func miniChain(t testing.TB) ([]Entry, []Head) {
	keys(t)
	miniOnce.Do(func() {
		var prev *Entry
		for i := 0; i < 16; i++ {
			miniEntries = append(miniEntries, Next(prev, sampleEntry(i)))
			prev = &miniEntries[len(miniEntries)-1]
		}
		for i, n := range []int{5, 10, 16} {
			k := ecKey
			if i == 1 {
				k = rsaKey
			}
			e := miniEntries[n-1]
			h, err := SignHead(e, e.Time.Add(time.Minute), k.signer, k.cert)
			if err != nil {
				panic(err)
			}
			miniHeads = append(miniHeads, h)
		}
	})
	return cloneChain(miniEntries, miniHeads)
}

// mutate applies the operations encoded in ops (5 bytes each: kind, index,
// field, position, value) to a copy of the chain.
func mutate(entries []Entry, heads []Head, ops []byte) ([]Entry, []Head) {
	xor := func(b []byte, pos, val byte) []byte {
		if len(b) == 0 {
			return []byte{val}
		}
		b[int(pos)%len(b)] ^= val | 1
		return b
	}
	xorStr := func(s string, pos, val byte) string { return string(xor([]byte(s), pos, val)) }
	for len(ops) >= 5 {
		kind, idx, field, pos, val := ops[0], int(ops[1]), ops[2], ops[3], ops[4]
		ops = ops[5:]
		if kind%16 < 10 && len(entries) > 0 {
			e := &entries[idx%len(entries)]
			switch kind % 16 {
			case 0: // flip a byte of a field
				switch field % 10 {
				case 0:
					e.Event = Event(xorStr(string(e.Event), pos, val))
				case 1:
					e.MsgID = xorStr(e.MsgID, pos, val)
				case 2:
					if len(e.RelatedIDs) > 0 {
						e.RelatedIDs[0] = xorStr(e.RelatedIDs[0], pos, val)
					}
				case 3:
					e.Sender = xorStr(e.Sender, pos, val)
				case 4:
					if len(e.Recipients) > 0 {
						e.Recipients[int(pos)%len(e.Recipients)] = xorStr(e.Recipients[int(pos)%len(e.Recipients)], pos, val)
					}
				case 5:
					e.Subject = xorStr(e.Subject, pos, val)
				case 6:
					e.Gestore = xorStr(e.Gestore, pos, val)
				case 7:
					e.Detail = xorStr(e.Detail, pos, val)
				case 8:
					e.PrevHash = xor(e.PrevHash, pos, val)
				case 9:
					e.Hash = xor(e.Hash, pos, val)
				}
			case 1:
				e.Seq += uint64(int8(val))
			case 2:
				e.Seq = ^uint64(0) - uint64(val)
			case 3:
				e.Time = e.Time.Add(time.Duration(int8(val)) * time.Hour)
			case 4:
				entries = append(entries[:idx%len(entries)], entries[idx%len(entries)+1:]...)
			case 5:
				j := (idx + int(val)) % len(entries)
				entries[idx%len(entries)], entries[j] = entries[j], entries[idx%len(entries)]
			case 6:
				entries = append(entries[:idx%len(entries)+1], entries[idx%len(entries):]...)
			case 7:
				if field%2 == 0 {
					e.Hash = e.Hash[:int(pos)%(len(e.Hash)+1)]
				} else {
					e.PrevHash = e.PrevHash[:int(pos)%(len(e.PrevHash)+1)]
				}
			case 8:
				e.Seq = uint64(val)
			case 9:
				*e = Next(nil, *e)
			}
			continue
		}
		if len(heads) == 0 {
			continue
		}
		h := &heads[idx%len(heads)]
		switch kind % 16 {
		case 10:
			switch field % 3 {
			case 0:
				h.Hash = xor(h.Hash, pos, val)
			case 1:
				h.Signature = xor(h.Signature, pos, val)
			case 2:
				h.Certificate = xor(h.Certificate, pos, val)
			}
		case 11:
			switch field % 3 {
			case 0:
				h.Hash = h.Hash[:int(pos)%(len(h.Hash)+1)]
			case 1:
				h.Signature = h.Signature[:int(pos)%(len(h.Signature)+1)]
			case 2:
				h.Certificate = h.Certificate[:int(pos)*int(val+1)%(len(h.Certificate)+1)]
			}
		case 12:
			h.Seq += uint64(int8(val))
		case 13:
			h.Seq = ^uint64(0) - uint64(val)
		case 14:
			h.Time = h.Time.Add(time.Duration(int8(val)) * 24 * time.Hour)
		case 15:
			if field%2 == 0 {
				heads = append(heads[:idx%len(heads)], heads[idx%len(heads)+1:]...)
			} else {
				j := (idx + int(val)) % len(heads)
				heads[idx%len(heads)], heads[j] = heads[j], heads[idx%len(heads)]
			}
		}
	}
	return entries, heads
}

// FuzzVerifyChain: VerifyChain, Purge and KeepHeads never panic on a
// mutated chain, a mutated chain that still verifies is one whose canonical
// content is unchanged, and the verdict does not depend on when it is run.
func FuzzVerifyChain(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 3, 5, 1, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		entries, heads := miniChain(t)
		entries, heads = mutate(entries, heads, ops)
		var roots = testRoots
		if len(ops)%2 == 1 {
			roots = nil
		}
		r := VerifyChain(entries, heads, roots)
		if r.OK != (len(r.Problems) == 0) {
			t.Fatalf("OK %v with %d problems", r.OK, len(r.Problems))
		}
		r2 := VerifyChain(entries, heads, roots)
		if r.String() != r2.String() {
			t.Fatalf("not deterministic:\n%s\n%s", r, r2)
		}
		_ = r.String()
		k := Purge(entries, heads, time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC))
		kept := KeepHeads(heads, k)
		if len(entries) > 0 && k > entries[0].Seq && r.OK {
			i := k - entries[0].Seq
			if i < uint64(len(entries)) {
				if rr := VerifyChain(entries[i:], kept, roots); !rr.OK {
					t.Fatalf("verified chain fails after Purge to %d:\n%s", k, rr)
				}
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus of
// FuzzVerifyChain when PECLOG_WRITE_FUZZ_SEEDS=1. Each seed is a list of
// mutations of the mini chain (see mutate).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PECLOG_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set PECLOG_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzVerifyChain")
	}
	seeds := map[string][]byte{
		"intact":              {},
		"flip-subject":        {0, 7, 5, 3, 0x20},
		"flip-hash":           {0, 2, 9, 0, 0x01},
		"flip-prevhash-first": {0, 0, 8, 31, 0x80},
		"seq-huge":            {2, 15, 0, 0, 0},
		"seq-zero-first":      {8, 0, 0, 0, 0},
		"delete-entry":        {4, 6, 0, 0, 0},
		"delete-first":        {4, 0, 0, 0, 0},
		"swap-entries":        {5, 3, 0, 0, 1},
		"duplicate-entry":     {6, 9, 0, 0, 0},
		"truncate-hash":       {7, 4, 0, 7, 0},
		"rehash-as-first":     {9, 8, 0, 0, 0},
		"time-backwards":      {3, 12, 0, 0, 0x80},
		"head-sig-flip":       {10, 1, 1, 40, 0x04},
		"head-cert-flip":      {10, 0, 2, 200, 0x10},
		"head-cert-truncate":  {11, 2, 2, 3, 9},
		"head-sig-empty":      {11, 0, 1, 0, 0},
		"head-seq-huge":       {13, 1, 0, 0, 1, 12, 2, 0, 0, 5},
		"head-time-shift":     {14, 2, 0, 0, 0x7f},
		"head-delete-swap":    {15, 0, 0, 0, 0, 15, 0, 1, 0, 1},
		"many": {0, 1, 1, 1, 1, 1, 2, 0, 0, 3, 4, 9, 0, 0, 0, 10, 2, 0, 5, 5,
			12, 0, 0, 0, 0xff, 7, 3, 1, 0, 0, 5, 0, 0, 0, 15},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyChain")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
