package raftfsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

func open(t *testing.T, ctx context.Context, dir string, cfg Config) (*Node, *storage.Store, error) {
	t.Helper()
	store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(dir, "raft")
	cfg.Bootstrap = true
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	n, err := Open(ctx, cfg, store)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return n, store, nil
}

func mustOpen(t *testing.T, dir string, cfg Config) (*Node, *storage.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, s, err := open(t, ctx, dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n, s
}

// put stores count values of size bytes each, as commands of about that
// size in the log.
func put(t *testing.T, n *Node, from, count, size int) {
	t.Helper()
	for i := from; i < from+count; i++ {
		if _, err := n.Apply(context.Background(), &storage.PutKV{Key: fmt.Sprint("k", i), Value: bytes.Repeat([]byte{byte(i)}, size)}); err != nil {
			t.Fatal(err)
		}
	}
}

func countKV(t *testing.T, s *storage.Store) int {
	t.Helper()
	kv, err := s.KVKeys(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	return len(kv)
}

func snapshotCount(t *testing.T, dir string) int {
	t.Helper()
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "raft"), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	list, err := snaps.List()
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLogBytesTriggerASnapshotAndTheLogIsTruncated(t *testing.T) {
	dir := t.TempDir()
	var logs apptest.LogBuffer
	cfg := Config{SnapshotBytes: 1 << 20, TrailingBytes: 600 << 10, checkEvery: 10 * time.Millisecond, Logger: logs.Logger(slog.LevelInfo)}
	n, store := mustOpen(t, dir, cfg)

	// 600 KiB in, below the threshold: no snapshot.
	put(t, n, 0, 3, 200<<10)
	time.Sleep(100 * time.Millisecond)
	if c := snapshotCount(t, dir); c != 0 {
		t.Fatalf("%d snapshots after 600 KiB of a 1 MiB threshold", c)
	}
	// Over it: a snapshot, and the log before it is gone but for at most
	// 600 KiB of trailing entries (two of these).
	put(t, n, 3, 5, 200<<10)
	last, _ := n.logStore.LastIndex()
	// The policy says so once raft has truncated the log.
	waitFor(t, "snapshot of the last entry", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), fmt.Sprintf(" index=%d log_first_index=", last))
	})
	first, _ := n.logStore.FirstIndex()
	var trailing int64
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := n.logStore.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		trailing += int64(len(l.Data))
	}
	if first < 5 || trailing > 600<<10 {
		t.Fatalf("log after the snapshot at %d holds %d to %d, %d bytes: want at most 600 KiB", last, first, last, trailing)
	}
	t.Logf("after 8 × 200 KiB with a 1 MiB threshold: log %d..%d (%d KiB) behind the snapshot at %d", first, last, trailing>>10, last)
	n.Close()
	store.Close()

	// The restart reads nothing the snapshot holds.
	var again apptest.LogBuffer
	cfg.Logger = again.Logger(slog.LevelInfo)
	n, store = mustOpen(t, dir, cfg)
	defer store.Close()
	defer n.Close()
	if got := countKV(t, store); got != 8 {
		t.Fatalf("%d values after the restart, want 8", got)
	}
	if strings.Contains(again.String(), "restoring") {
		t.Fatalf("a restart restored the snapshot into an up-to-date database:\n%s", again.String())
	}
	if line := lastLine(again.String(), "reading the raft log after the last snapshot"); line != "" {
		t.Fatalf("the restart after a snapshot of the last entry read the log: %s", line)
	}
}

func lastLine(text, with string) string {
	var out string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, with) {
			out = l
		}
	}
	return out
}

func TestAQuietLogIsSnapshottedByTheClockWhenSomethingChanged(t *testing.T) {
	dir := t.TempDir()
	clock := apptest.NewClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	var logs apptest.LogBuffer
	cfg := Config{SnapshotInterval: time.Hour, checkEvery: 10 * time.Millisecond, Now: clock.Now, Logger: logs.Logger(slog.LevelInfo)}
	n, store := mustOpen(t, dir, cfg)
	defer store.Close()
	defer n.Close()
	// The policy logs a snapshot once it is done with it.
	taken := func() int { return strings.Count(logs.String(), "snapshot taken") }

	put(t, n, 0, 1, 100)
	time.Sleep(100 * time.Millisecond)
	if c := taken(); c != 0 {
		t.Fatalf("%d snapshots before the interval", c)
	}
	clock.Add(61 * time.Minute)
	waitFor(t, "snapshot after an hour", 5*time.Second, func() bool { return taken() == 1 })
	if !strings.Contains(logs.String(), `reason=interval`) {
		t.Fatalf("snapshot not by the clock:\n%s", logs.String())
	}

	// Another hour with nothing new: no snapshot.
	clock.Add(61 * time.Minute)
	time.Sleep(100 * time.Millisecond)
	if c := taken(); c != 1 {
		t.Fatalf("%d snapshots after a quiet hour, want still 1", c)
	}
	put(t, n, 1, 1, 100)
	clock.Add(61 * time.Minute)
	waitFor(t, "second snapshot", 5*time.Second, func() bool { return taken() == 2 })
	if c := snapshotCount(t, dir); c != 2 {
		t.Fatalf("%d snapshots on disk, want 2", c)
	}
}

func TestSnapshotsAreSpacedByWhatTheyCost(t *testing.T) {
	clock := apptest.NewClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	p := &policy{cfg: Config{SnapshotBytes: 256 << 20, SnapshotThreshold: 4096, SnapshotInterval: time.Hour, Now: clock.Now},
		n: &Node{fsm: &fsm{meter: newMeter(8)}}, lastEnd: clock.Now(), lastTook: 30 * time.Second}
	m := p.n.fsm.meter
	if r := p.due(); r != "" {
		t.Fatalf("nothing logged, due: %q", r)
	}
	m.add([]*raft.Log{{Index: 1, Data: make([]byte, 300<<20)}})
	// The last snapshot took 30 s: the next waits 2 minutes (4 times that).
	clock.Add(time.Minute)
	if r := p.due(); r != "" {
		t.Fatalf("a minute after a 30 s snapshot: due %q", r)
	}
	clock.Add(time.Minute)
	if r := p.due(); r != "log bytes" {
		t.Fatalf("two minutes after a 30 s snapshot with 300 MiB logged: due %q, want log bytes", r)
	}

	// Few small entries: only the clock, and at 100 times the last cost
	// (50 minutes) or the interval, whichever is longer.
	p.lastEnd, p.lastTook = clock.Now(), 45*time.Second
	m.freeze(1)
	m.written()
	m.add([]*raft.Log{{Index: 2, Data: []byte("x")}})
	clock.Add(59 * time.Minute)
	if r := p.due(); r != "" {
		t.Fatalf("59 minutes: due %q", r)
	}
	clock.Add(time.Minute)
	if r := p.due(); r != "" {
		t.Fatalf("60 minutes after a 45 s snapshot (75 minutes at 1%%): due %q", r)
	}
	clock.Add(15 * time.Minute)
	if r := p.due(); r != "interval" {
		t.Fatalf("75 minutes: due %q, want interval", r)
	}

	// Many small entries: a snapshot, but not more than once a minute.
	p.lastEnd, p.lastTook = clock.Now(), time.Second
	m.freeze(2)
	m.written()
	for i := 0; i < 4096; i++ {
		m.add([]*raft.Log{{Index: uint64(3 + i), Data: []byte("x")}})
	}
	clock.Add(30 * time.Second)
	if r := p.due(); r != "" {
		t.Fatalf("4096 entries 30 s after a snapshot: due %q", r)
	}
	clock.Add(30 * time.Second)
	if r := p.due(); r != "log entries" {
		t.Fatalf("4096 entries a minute after a snapshot: due %q, want log entries", r)
	}
}

func TestTrailingEntriesAreCountedToFitTheirBytes(t *testing.T) {
	m := newMeter(4)
	if k := m.trailing(100); k != 0 {
		t.Fatalf("empty: %d", k)
	}
	for i, size := range []int{50, 10, 20, 30, 40} { // the ring keeps the last 4
		m.add([]*raft.Log{{Index: uint64(i + 1), Data: make([]byte, size)}})
	}
	for budget, want := range map[int64]uint64{0: 0, 39: 0, 40: 1, 69: 1, 70: 2, 90: 3, 100: 4, 1000: 4} {
		if k := m.trailing(budget); k != want {
			t.Errorf("budget %d: %d trailing entries, want %d", budget, k, want)
		}
	}
}

func TestARestartAfterASnapshotOfANoOpKeepsTheDatabase(t *testing.T) {
	dir := t.TempDir()
	n, store := mustOpen(t, dir, Config{})
	put(t, n, 0, 3, 10)
	n.Close()
	store.Close()

	// A restart appends raft's no-op and barrier, which never reach the
	// database; a snapshot then is at an index the database never records.
	n, store = mustOpen(t, dir, Config{})
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	store.Close()

	var logs apptest.LogBuffer
	n, store = mustOpen(t, dir, Config{Logger: logs.Logger(slog.LevelInfo)})
	defer store.Close()
	defer n.Close()
	if strings.Contains(logs.String(), "restoring") {
		t.Fatalf("the snapshot was restored into a database that had all of it:\n%s", logs.String())
	}
	if got := countKV(t, store); got != 3 {
		t.Fatalf("%d values, want 3", got)
	}
}

// A lost database is rebuilt from the log, and the start says how far it
// is; the end of its context stops it at once, and the next start
// finishes the job.
func TestALongReplayIsReportedAndStopsWhenAsked(t *testing.T) {
	dir := t.TempDir()
	n, store := mustOpen(t, dir, Config{SnapshotBytes: 1 << 30})
	put(t, n, 0, 16, 1<<20)
	n.Close()
	store.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "sigillo.db"+suffix))
	}

	var logs apptest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		n, s, err := open(t, ctx, dir, Config{Logger: logs.Logger(slog.LevelInfo), ProgressEvery: time.Millisecond})
		if err == nil {
			n.Close()
			s.Close()
		}
		done <- result{err, 0}
	}()
	waitFor(t, "progress report", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "starting: re")
	})
	cancel()
	stopped := time.Now()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("Open went on for 5 s after its context ended:\n%s", logs.String())
	}
	t.Logf("stopped %v after the context ended", time.Since(stopped).Round(time.Millisecond))
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Open after its context ended: %v\n%s", r.err, logs.String())
	}
	plan := lastLine(logs.String(), "reading the raft log after the last snapshot")
	var snapIndex, entries, lastIndex, dbIndex, toRead int
	var mb, toReadMiB float64
	if _, err := fmt.Sscanf(plan[strings.Index(plan, "snapshot_index="):],
		"snapshot_index=%d entries=%d mib=%g last_index=%d database_index=%d to_read_entries=%d to_read_mib=%g",
		&snapIndex, &entries, &mb, &lastIndex, &dbIndex, &toRead, &toReadMiB); err != nil || dbIndex != 0 || toRead != entries || mb < 16 || toReadMiB != mb {
		t.Fatalf("the start did not say what it had to do (%v): %q", err, plan)
	}

	n, store = mustOpen(t, dir, Config{})
	defer store.Close()
	defer n.Close()
	if got := countKV(t, store); got != 16 {
		t.Fatalf("%d values after the rebuild, want 16", got)
	}
}

// The usual restart: the database has every command of a long log. The
// start goes through the log's entries without reading their data, and the
// log still counts for the next snapshot.
func TestARestartPassesOverTheCommandsTheDatabaseHas(t *testing.T) {
	dir := t.TempDir()
	n, store := mustOpen(t, dir, Config{SnapshotBytes: 1 << 30})
	put(t, n, 0, 20, 1<<20)
	n.Close()
	store.Close()

	var logs apptest.LogBuffer
	n, store = mustOpen(t, dir, Config{SnapshotBytes: 8 << 20, checkEvery: 10 * time.Millisecond, Logger: logs.Logger(slog.LevelInfo)})
	t.Cleanup(func() { n.Close(); store.Close() })
	plan := lastLine(logs.String(), "reading the raft log after the last snapshot")
	var mb, toReadMiB float64
	var toRead int
	if _, err := fmt.Sscanf(plan[strings.Index(plan, "mib="):], "mib=%g", &mb); err != nil || mb < 20 {
		t.Fatalf("the log after the last snapshot: %q (%v)", plan, err)
	}
	if _, err := fmt.Sscanf(plan[strings.Index(plan, "to_read_entries="):], "to_read_entries=%d to_read_mib=%g", &toRead, &toReadMiB); err != nil ||
		toRead > 3 || toReadMiB > 0.1 {
		t.Fatalf("a start with an up-to-date database reads whole: %q (%v)", plan, err)
	}
	if read := n.logStore.BytesRead(); read > 3*int64(mb*(1<<20)) {
		t.Fatalf("went through %d bytes", read)
	}
	if got := countKV(t, store); got != 20 {
		t.Fatalf("%d values, want 20", got)
	}
	waitFor(t, "snapshot of the 20 MiB replayed", 5*time.Second, func() bool { return strings.Contains(logs.String(), "snapshot taken") })
	t.Logf("%s\n%s", plan, lastLine(logs.String(), "snapshot taken"))

	// Nothing stays behind that snapshot (20 MiB is over a quarter of the
	// 8 MiB threshold): the log is empty, and a start from the snapshot
	// alone serves as well.
	if first, _ := n.logStore.FirstIndex(); first != 0 {
		t.Fatalf("log starts at %d after the snapshot, want it empty", first)
	}
	n.Close()
	store.Close()
	n, store = mustOpen(t, dir, Config{})
	if got := countKV(t, store); got != 20 {
		t.Fatalf("%d values after a start on an empty log, want 20", got)
	}
	put(t, n, 20, 1, 10)
	if got := countKV(t, store); got != 21 {
		t.Fatalf("%d values, want 21", got)
	}
}
