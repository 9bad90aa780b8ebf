package raftfsm

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"sigillo/appliance/apptest"
)

// A burst of large messages between two snapshots grows raft.db to the
// burst's size. Without compaction (as before it), the snapshot's
// truncation leaves the file at that size; the next start compacts it;
// and with compaction, the snapshot after the next burst shrinks raft.db
// back to what it holds, while the node goes on taking writes. Nothing is
// lost on the way.
func TestRaftDBShrinksAfterTheSnapshotThatFollowsABurst(t *testing.T) {
	dir := t.TempDir()
	raftDB := filepath.Join(dir, "raft", "raft.db")
	var logs apptest.LogBuffer
	// No snapshot by size during a burst; 2 MiB kept behind a snapshot.
	// Compaction off at first.
	cfg := Config{SnapshotBytes: 1 << 30, TrailingBytes: 2 << 20, compactMinFree: 1 << 50, Logger: logs.Logger(slog.LevelInfo)}
	n, store := mustOpen(t, dir, cfg)
	const burst, size = 20, 1 << 20
	put(t, n, 0, burst, size)
	peak := logSize(t, n)
	if peak.file < burst*size {
		t.Fatalf("raft.db is %d MiB after %d MiB of messages", peak.file>>20, burst*size>>20)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	truncated := logSize(t, n)
	t.Logf("%d × %d MiB messages: raft.db %v at its peak; after the snapshot without compaction %v", burst, size>>20, peak, truncated)
	if truncated.file < peak.file || truncated.used > 4<<20 {
		t.Fatalf("without compaction: raft.db %v after the snapshot, %v before", truncated, peak)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()

	// Compaction on (over 4 MiB free here; 64 MiB outside tests): the
	// start compacts the file left at its peak.
	cfg.compactMinFree = 4 << 20
	n, store = mustOpen(t, dir, cfg)
	defer func() { store.Close() }()
	defer func() { n.Close() }()
	atStart := logSize(t, n)
	line := lastLine(logs.String(), "raft.db compacted at start")
	t.Logf("the next start: raft.db %v: %s", atStart, line)
	if line == "" || atStart.file > 4<<20 {
		t.Fatalf("raft.db %v after the start; log:\n%s", atStart, logs.String())
	}
	if got := countKV(t, store); got != burst {
		t.Fatalf("%d values after the restart, want %d", got, burst)
	}

	// The next burst, and its snapshot: raft.db shrinks back at once.
	put(t, n, burst, burst, size)
	peak = logSize(t, n)
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	after := logSize(t, n)
	line = lastLine(logs.String(), "raft.db compacted after the snapshot")
	t.Logf("%d × %d MiB messages more: raft.db %v at its peak; after the snapshot %v: %s", burst, size>>20, peak, after, line)
	if line == "" || after.file > 4<<20 || after.file > peak.file/4 {
		t.Fatalf("raft.db %v after the snapshot, %v at its peak; log:\n%s", after, peak, logs.String())
	}
	if fi, err := os.Stat(raftDB); err != nil || fi.Size() != after.file {
		t.Fatalf("raft.db on disk: %v, %v; LogSize said %d", fi, err, after.file)
	}

	// Raft goes on with the compacted file, and a restart finds all.
	put(t, n, 2*burst, 3, size)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	store.Close()
	n, store = mustOpen(t, dir, cfg)
	if got := countKV(t, store); got != 2*burst+3 {
		t.Fatalf("%d values after the restart, want %d", got, 2*burst+3)
	}
	put(t, n, 2*burst+3, 1, 100)
}

type sizes struct{ file, used int64 }

func (s sizes) String() string { return fmtMiB(s.file) + " (" + fmtMiB(s.used) + " used)" }

func fmtMiB(b int64) string { return strconv.FormatFloat(mib(b), 'f', 1, 64) + " MiB" }

func logSize(t *testing.T, n *Node) sizes {
	t.Helper()
	file, used, err := n.LogSize()
	if err != nil {
		t.Fatal(err)
	}
	return sizes{file, used}
}
