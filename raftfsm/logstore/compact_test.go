package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// message is entry i of the log, size bytes of data that say which
// entry they are.
func message(i uint64, size int) *raft.Log {
	data := bytes.Repeat([]byte(fmt.Sprintf("entry %08d;", i)), size/15+1)[:size]
	return &raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: data, Extensions: []byte("v1"),
		AppendedAt: time.Date(2026, 12, 2, 17, 0, 0, int(i), time.UTC)}
}

// fill appends entries from..to, one StoreLogs each, as raft does with
// messages that come one at a time.
func fill(t *testing.T, s *Store, from, to uint64, size int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.StoreLogs([]*raft.Log{message(i, size)}); err != nil {
			t.Fatal(err)
		}
	}
}

var stableKeys = map[string][]byte{
	"CurrentTerm":                     {0, 0, 0, 0, 0, 0, 0, 2},
	"LastVoteTerm":                    {0, 0, 0, 0, 0, 0, 0, 2},
	"LastVoteCand":                    []byte("127.0.0.1:7001"),
	"sigillo_snapshot_database_index": {0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 39},
}

func setStable(t *testing.T, s *Store) {
	t.Helper()
	for k, v := range stableKeys {
		if err := s.Set([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
}

// holds checks that s holds entries first..last of size bytes, nothing
// before, and the stable keys.
func holds(t *testing.T, s *Store, first, last uint64, size int) {
	t.Helper()
	if got, err := s.FirstIndex(); err != nil || got != first {
		t.Fatalf("first index %d (%v), want %d", got, err, first)
	}
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("last index %d (%v), want %d", got, err, last)
	}
	for i := first; i <= last; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		same(t, &got, message(i, size))
	}
	var l raft.Log
	if err := s.GetLog(first-1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("entry %d, deleted: %v", first-1, err)
	}
	for k, want := range stableKeys {
		if got, err := s.Get([]byte(k)); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("stable key %s: %v, %v; want %v", k, got, err, want)
		}
	}
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 2 {
		t.Fatalf("CurrentTerm %d, %v", term, err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("the writer is stuck")
		}
		time.Sleep(time.Millisecond)
	}
}

func mustOpen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func size(t *testing.T, s *Store) (file, used int64) {
	t.Helper()
	file, used, err := s.Size()
	if err != nil {
		t.Fatal(err)
	}
	return file, used
}

// 160 MiB of messages, then a snapshot's truncation keeps the last
// 32 MiB: the file had kept its 160 MiB; compacted, it is the size of what
// it holds, and holds the same.
func TestATruncatedLogShrinksToWhatItHolds(t *testing.T) {
	const mb4 = 4 << 20
	path := filepath.Join(t.TempDir(), "raft.db")
	s := mustOpen(t, path)
	defer func() { s.Close() }()
	fill(t, s, 1, 40, mb4)
	setStable(t, s)
	peak, _ := size(t, s)
	if err := s.DeleteRange(1, 32); err != nil {
		t.Fatal(err)
	}
	before, used := size(t, s)
	if before < peak || used > 34<<20 {
		t.Fatalf("after the truncation: file %d MiB, used %d MiB; want the peak's %d MiB and 32 MiB used", before>>20, used>>20, peak>>20)
	}
	if !Wasteful(before, used, MinWaste) {
		t.Fatalf("a file of %d MiB holding %d MiB is not wasteful", before>>20, used>>20)
	}

	c, done, err := s.CompactIfWasteful(context.Background(), MinWaste)
	if err != nil || !done {
		t.Fatalf("compact: %v, %v", done, err)
	}
	after, usedAfter := size(t, s)
	t.Logf("160 MiB written (4 MiB entries), truncated to the last 8 (32 MiB): file %d MiB, %d MiB used; compacted in %v: file %d MiB (%d MiB used)",
		before>>20, used>>20, c.Took.Round(time.Millisecond), after>>20, usedAfter>>20)
	if after > used+20<<20 || c.After != after || c.Before != before {
		t.Fatalf("compacted file %d MiB (reported %d → %d), holding %d MiB: want at most 20 MiB over", after>>20, c.Before>>20, c.After>>20, used>>20)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != after {
		t.Fatalf("raft.db on disk: %v, %v; want %d bytes", fi, err, after)
	}
	holds(t, s, 33, 40, mb4)

	// A compacted file is not compacted again.
	if _, done, err := s.CompactIfWasteful(context.Background(), MinWaste); err != nil || done {
		t.Fatalf("second compaction: %v, %v", done, err)
	}
	// The store goes on with the new file, and it reopens whole.
	fill(t, s, 41, 42, mb4)
	s.Close()
	s = mustOpen(t, path)
	holds(t, s, 33, 42, mb4)
	s.Close()

	// raft-boltdb still reads it: the format is its own.
	old, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	var got raft.Log
	if err := old.GetLog(42, &got); err != nil {
		t.Fatal(err)
	}
	same(t, &got, message(42, mb4))
	if v, err := old.Get([]byte("LastVoteCand")); err != nil || string(v) != "127.0.0.1:7001" {
		t.Fatalf("raft-boltdb reads LastVoteCand %q, %v", v, err)
	}
}

// A file of raft-boltdb's (an existing raft.db) is compacted as well.
func TestARaftDBThatRaftBoltDBWroteIsCompacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	old, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		if err := old.StoreLog(message(i, 2<<20)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range stableKeys {
		if err := old.Set([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.DeleteRange(1, 38); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s := mustOpen(t, path)
	defer s.Close()
	before, used := size(t, s)
	c, done, err := s.CompactIfWasteful(context.Background(), MinWaste)
	if err != nil || !done {
		t.Fatalf("compact: %v, %v (file %d MiB, %d MiB used)", done, err, before>>20, used>>20)
	}
	if c.After > 24<<20 {
		t.Fatalf("compacted: %+v", c)
	}
	holds(t, s, 39, 40, 2<<20)
}

// A crash at any step of a compaction (during the copy, once copied,
// once renamed) leaves a raft.db that opens whole, and no copy behind.
func TestACrashDuringACompactionLeavesAWholeRaftDB(t *testing.T) {
	const mb2 = 2 << 20
	for _, step := range []string{"batch", "copied", "renamed"} {
		t.Run(step, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "raft.db")
			s := mustOpen(t, path)
			fill(t, s, 1, 16, mb2)
			setStable(t, s)
			if err := s.DeleteRange(1, 10); err != nil {
				t.Fatal(err)
			}
			// Batches of 4 MiB: a crash at the first is in the middle of
			// the copy (12 MiB).
			s.copyBatch = 4 << 20
			s.crash = func(at string) error {
				if at == step {
					return errCrashed
				}
				return nil
			}
			if _, err := s.Compact(context.Background()); !errors.Is(err, errCrashed) {
				t.Fatalf("compaction crashed at %s: %v", step, err)
			}
			// The process dies: its files close as they are.
			s.Close()
			_, err := os.Stat(path + ".compact")
			if left := err == nil; left != (step != "renamed") {
				t.Fatalf("after a crash at %s: raft.db.compact there: %v", step, left)
			}

			s = mustOpen(t, path)
			defer s.Close()
			holds(t, s, 11, 16, mb2)
			if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the crashed compaction's copy is still there: %v", err)
			}
			file, used := size(t, s)
			t.Logf("crash at %s: raft.db reopens with %d MiB, %d MiB used", step, file>>20, used>>20)
			// And the next compaction goes through.
			if _, err := s.Compact(context.Background()); err != nil {
				t.Fatal(err)
			}
			holds(t, s, 11, 16, mb2)
		})
	}
}

// A compaction that fails (here its context ends) leaves the store on the
// old file, working, and no copy behind.
func TestAFailedCompactionChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s := mustOpen(t, path)
	defer s.Close()
	fill(t, s, 1, 8, 2<<20)
	setStable(t, s)
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	before, _ := size(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Compact(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("compaction with an ended context: %v", err)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed compaction left its copy: %v", err)
	}
	if file, _ := size(t, s); file != before {
		t.Fatalf("file %d after a failed compaction, was %d", file, before)
	}
	fill(t, s, 9, 9, 2<<20)
	holds(t, s, 5, 9, 2<<20)
}

// Raft goes on while the file is compacted: appends (large and small),
// truncations, stable-store writes and reads from other goroutines. None
// is lost, before or after a reopen.
func TestWritesDuringACompactionAreKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s := mustOpen(t, path)
	defer func() { s.Close() }()
	entrySize := func(i uint64) int {
		if i%4 == 0 {
			return 1 << 20
		}
		return 2000
	}
	for i := uint64(1); i <= 60; i++ {
		if err := s.StoreLogs([]*raft.Log{message(i, entrySize(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 50); err != nil {
		t.Fatal(err)
	}
	setStable(t, s)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var last atomic.Uint64
	last.Store(60)
	var writeErr, readErr error
	wg.Add(2)
	go func() { // the leader's appends and its term
		defer wg.Done()
		for i := uint64(61); ctx.Err() == nil; i++ {
			if err := s.StoreLogs([]*raft.Log{message(i, entrySize(i))}); err != nil {
				writeErr = err
				return
			}
			if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
				writeErr = err
				return
			}
			if err := s.Set([]byte(fmt.Sprint("k", i)), []byte(fmt.Sprint(i))); err != nil {
				writeErr = err
				return
			}
			last.Store(i)
		}
	}()
	go func() { // a follower being sent entries
		defer wg.Done()
		for ctx.Err() == nil {
			var l raft.Log
			first, err := s.FirstIndex()
			if err == nil {
				err = s.GetLog(first, &l)
			}
			if err == nil && l.Index != first {
				err = fmt.Errorf("read entry %d for %d", l.Index, first)
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	var took []time.Duration
	for range 5 {
		// Each compaction comes after some appends, and others wait for it.
		from := last.Load()
		waitUntil(t, func() bool { return last.Load() >= from+2 })
		c, err := s.Compact(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		took = append(took, c.Took.Round(time.Millisecond))
	}
	cancel()
	wg.Wait()
	if writeErr != nil || readErr != nil {
		t.Fatalf("during compactions: write %v, read %v", writeErr, readErr)
	}
	t.Logf("5 compactions while appending: %v; entries 51..%d", took, last.Load())
	check := func() {
		last := last.Load()
		if got, _ := s.LastIndex(); got != last {
			t.Fatalf("last index %d, want %d", got, last)
		}
		for i := uint64(51); i <= last; i++ {
			var got raft.Log
			if err := s.GetLog(i, &got); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			same(t, &got, message(i, entrySize(i)))
			if i > 60 {
				if v, err := s.Get([]byte(fmt.Sprint("k", i))); err != nil || string(v) != fmt.Sprint(i) {
					t.Fatalf("stable key k%d: %q, %v", i, v, err)
				}
			}
		}
	}
	check()
	s.Close()
	s = mustOpen(t, path)
	check()
}
