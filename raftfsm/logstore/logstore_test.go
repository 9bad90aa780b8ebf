package logstore

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func entries(n int, size int) []*raft.Log {
	var logs []*raft.Log
	for i := 1; i <= n; i++ {
		data := bytes.Repeat([]byte{byte('a' + i%26)}, size*i/n)
		logs = append(logs, &raft.Log{Index: uint64(i), Term: 3, Type: raft.LogCommand, Data: data,
			Extensions: []byte("ext"), AppendedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)})
	}
	return logs
}

func same(t *testing.T, got, want *raft.Log) {
	t.Helper()
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) ||
		!bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("entry %d differs: got index %d term %d type %v %d bytes at %v", want.Index, got.Index, got.Term, got.Type, len(got.Data), got.AppendedAt)
	}
}

func TestItReadsARaftDBThatRaftBoltDBWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	old, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := entries(20, 3<<20)
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := old.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if err := old.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s, err := Open(context.Background(), path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if first, _ := s.FirstIndex(); first != 5 {
		t.Fatalf("first index %d, want 5", first)
	}
	if last, _ := s.LastIndex(); last != 20 {
		t.Fatalf("last index %d, want 20", last)
	}
	for _, want := range logs[4:] {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		same(t, &got, want)
	}
	var l raft.Log
	if err := s.GetLog(2, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("deleted entry: %v", err)
	}
	if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 3 {
		t.Fatalf("term %d, %v", term, err)
	}
	if _, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("a key never set: %v (raft expects \"not found\")", err)
	}
}

func TestRaftBoltDBReadsWhatItWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(context.Background(), path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	logs := entries(30, 2<<20)
	if err := s.StoreLogs(logs[:10]); err != nil {
		t.Fatal(err)
	}
	for _, l := range logs[10:] {
		if err := s.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 25); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("node1")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Downgrading stays possible: raft-boltdb opens the file (its freelist
	// is not stored, and bbolt rebuilds it) and reads every entry.
	old, err := raftboltdb.NewBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if first, _ := old.FirstIndex(); first != 26 {
		t.Fatalf("first index %d, want 26", first)
	}
	for _, want := range logs[25:] {
		var got raft.Log
		if err := old.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		same(t, &got, want)
	}
	if v, err := old.Get([]byte("LastVoteCand")); err != nil || string(v) != "node1" {
		t.Fatalf("stable store: %q, %v", v, err)
	}
}

// A 32 MiB entry costs one 32 MiB allocation to read; raft-boltdb's
// decoder regrows its buffer 128 times and allocates about 2 GiB for it.
func TestALargeEntryIsReadWithOneAllocation(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "raft.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const size = 32 << 20
	want := &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte("x"), size)}
	if err := s.StoreLog(want); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var got raft.Log
	if err := s.GetLog(1, &got); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	same(t, &got, want)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size*3/2 {
		t.Fatalf("reading a %d MiB entry allocated %d MiB", size>>20, alloc>>20)
	}
	if s.BytesRead() < size {
		t.Fatalf("BytesRead %d after reading %d", s.BytesRead(), size)
	}
}

func TestPrefetchMeasuresTheEntriesAfterAnIndex(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "raft.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if sp, err := s.Prefetch(0); err != nil || sp.Entries != 0 || sp.First != 0 {
		t.Fatalf("empty log: %+v, %v", sp, err)
	}
	logs := entries(10, 1<<20)
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	sp, err := s.Prefetch(6)
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, l := range logs[6:] {
		data += int64(len(l.Data))
	}
	if sp.First != 7 || sp.Last != 10 || sp.Entries != 4 || sp.Bytes < data || sp.Bytes > data+4*256 {
		t.Fatalf("span after 6: %+v, want entries 7-10 of about %d bytes", sp, data)
	}
}

func TestASecondOpenGivesUpOnTheLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	s, err := Open(context.Background(), path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	start := time.Now()
	if _, err := Open(context.Background(), path, 300*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("second open took %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := Open(ctx, path, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("open with a cancelled context: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("open ignored its context for %v", d)
	}
}

func TestSkippedCommandsComeWithoutTheirData(t *testing.T) {
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "raft.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("servers")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte("x"), 32<<20), Extensions: []byte("e"), AppendedAt: at},
		{Index: 3, Term: 2, Type: raft.LogNoop},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: []byte("after")},
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	s.SkipCommandData(3)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var got raft.Log
	if err := s.GetLog(2, &got); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got.Data != nil || got.Index != 2 || got.Term != 1 || got.Type != raft.LogCommand || string(got.Extensions) != "e" || !got.AppendedAt.Equal(at) {
		t.Fatalf("skipped command: %+v", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("passing over 32 MiB of skipped data allocated %d KiB", alloc>>10)
	}
	for _, want := range []*raft.Log{logs[0], logs[3]} {
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		same(t, &got, want)
	}

	s.SkipCommandData(0)
	if err := s.GetLog(2, &got); err != nil {
		t.Fatal(err)
	}
	same(t, &got, logs[1])
}
