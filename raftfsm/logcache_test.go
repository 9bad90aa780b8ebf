package raftfsm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
)

func openLogCache(t *testing.T) (*logCache, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raft.db")
	bolt, err := logstore.Open(context.Background(), path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	s, err := newLogCache(8, bolt, path)
	if err != nil {
		t.Fatal(err)
	}
	return s, path
}

// mappedKiB is the resident size of this process's mappings of path.
func mappedKiB(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	real, _ := filepath.EvalSymlinks(path)
	var kb int64
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = len(f) >= 6 && f[len(f)-1] == real
		} else if in && len(f) >= 2 && f[0] == "Rss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			kb += n
		}
	}
	return kb
}

func entry(i uint64, size int) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte('a' + i%26)}, size)}
}

func TestTheLogCacheKeepsSmallEntriesOnly(t *testing.T) {
	s, _ := openLogCache(t)
	if err := s.StoreLogs([]*raft.Log{entry(1, 100), entry(2, 3<<20), entry(3, 100)}); err != nil {
		t.Fatal(err)
	}
	if s.cache[1] == nil || s.cache[3] == nil || s.cache[2] != nil {
		t.Fatalf("cached: 1 %v, 2 %v, 3 %v; want the small ones only", s.cache[1] != nil, s.cache[2] != nil, s.cache[3] != nil)
	}
	var got raft.Log
	for _, i := range []uint64{1, 2, 3} {
		if err := s.GetLog(i, &got); err != nil || got.Index != i || !bytes.Equal(got.Data, entry(i, len(got.Data)).Data) {
			t.Fatalf("GetLog(%d): %v, %d bytes", i, err, len(got.Data))
		}
	}
	// An index written again (a new leader's entry) replaces the cached one,
	// large or small.
	if err := s.StoreLogs([]*raft.Log{entry(11, 3<<20)}); err != nil { // 11 % 8 == 3
		t.Fatal(err)
	}
	if s.cache[3] != nil {
		t.Fatal("a large entry left an older entry in its cache slot")
	}
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(1, &got); err == nil {
		t.Fatal("a deleted entry is still served")
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
		t.Fatalf("stable store: %d, %v", v, err)
	}
}

func TestLargeEntriesDoNotStayResidentInTheLogsMap(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pages are dropped on Linux only")
	}
	s, path := openLogCache(t)
	const size = 4 << 20
	for i := uint64(1); i <= 8; i++ {
		// One at a time, as raft appends them: bolt rewrites the last
		// leaf, reading the large values already in it through its map.
		if err := s.StoreLogs([]*raft.Log{entry(i, size)}); err != nil {
			t.Fatal(err)
		}
	}
	after := mappedKiB(t, path)
	var got raft.Log
	if err := s.GetLog(5, &got); err != nil || !bytes.Equal(got.Data, entry(5, size).Data) {
		t.Fatalf("GetLog(5): %v", err)
	}
	afterRead := mappedKiB(t, path)
	t.Logf("raft.db resident after 8 × 4 MiB appended: %d KiB; after reading one back: %d KiB", after, afterRead)
	if after > 1024 || afterRead > 1024 {
		t.Fatalf("raft.db keeps %d KiB (after writes) and %d KiB (after a read) resident; want the pages dropped", after, afterRead)
	}

	// Without dropping, the same appends leave the values resident: the
	// test above measures something.
	s.drop = nil
	for i := uint64(9); i <= 16; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i, size)}); err != nil {
			t.Fatal(err)
		}
	}
	if kept := mappedKiB(t, path); kept < size>>10 {
		t.Fatalf("without dropping, only %d KiB resident: the measure is broken", kept)
	}
}

func TestParseMaps(t *testing.T) {
	maps := fmt.Sprint(
		"5556a7ab8000-5556a7aba000 r--p 00000000 fe:00 247026                     /usr/bin/cat\n",
		"7f0000000000-7f0100000000 r--s 00000000 fe:00 1234                       /data/raft/raft.db\n",
		"7f0200000000-7f0200001000 rw-p 00000000 00:00 0 \n",
		"7f0300000000-7f0300002000 r--s 00000000 fe:00 99                         /data/raft/raft.db (deleted)\n",
		"7f0400000000-7f0400002000 r--s 00000000 fe:00 98                         /data dir/raft.db\n",
		"garbage\n",
	)
	got := parseMaps([]byte(maps), "/data/raft/raft.db")
	if len(got) != 1 || got[0] != [2]uintptr{0x7f0000000000, 0x7f0100000000} {
		t.Fatalf("parseMaps = %x", got)
	}
	if got := parseMaps([]byte(maps), "/data dir/raft.db"); len(got) != 1 {
		t.Fatalf("a path with a space: %x", got)
	}
}
