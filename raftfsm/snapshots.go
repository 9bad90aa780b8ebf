package raftfsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
)

// When to snapshot, and why so.
//
// A start reads every log entry after the newest snapshot twice (raft's
// configuration scan, then the replay that the store skips up to its
// applied index), at about 1 GB/s from the page cache and 0.8 GB/s cold
// with Prefetch; so the log since the last snapshot is the start's cost.
// A snapshot copies the whole database twice (SQLite's backup into a
// scratch file, then into raft's snapshot file), about 0.35 s per 100 MB
// of database here: its cost grows with the store, not with the log.
//
// So: a snapshot when the commands since the last one reach
// SnapshotBytes (256 MiB: a start replays at most that plus what came
// during the snapshot, well under a second), or SnapshotThreshold entries
// (small commands cost per entry, not per byte; at most once a minute, as
// raft's own trigger did), or SnapshotInterval with anything new, so that
// a quiet server's log is short too. A snapshot never starts sooner after
// the previous one than 4 times as long as that one took, and one by time
// not sooner than 100 times: a database whose copy takes a minute is not
// copied for more than a fifth of the time under a flood of large
// messages, nor more than 1% of the time by the clock.
//
// After each snapshot raft deletes the log up to it but for TrailingLogs
// entries; the policy sets that count before each snapshot so that the
// entries kept hold at most TrailingBytes (a quarter of SnapshotBytes):
// the log on disk stays under 1.25 × SnapshotBytes and what came during
// the last snapshot.

// meter counts the entries the FSM is given: the progress of a replay and
// what the log holds since the last snapshot.
type meter struct {
	index   atomic.Uint64 // the last index the FSM has applied
	entries atomic.Int64  // entries given since the process started
	bytes   atomic.Int64  // their data bytes

	// watch is the store's applied index for WaitApplied: unlike index
	// (the replay's progress) it never goes back.
	watch appliedWatch

	// snap is the count at the last snapshot written; frozen, at the one
	// being written.
	snapEntries, snapBytes     atomic.Int64
	frozenEntries, frozenBytes atomic.Int64
	// frozenDBIndex is the database's applied index in the frozen view.
	frozenDBIndex atomic.Uint64
	// snapshotBytes is the size of the last snapshot written.
	snapshotBytes atomic.Int64

	// countFrom: entries below it are replayed at a start, already counted
	// by begin.
	countFrom atomic.Uint64

	mu     sync.Mutex
	recent []int64 // the sizes of the last len(recent) entries, a ring
	next   int
	filled bool
}

func newMeter(trailing int) *meter { return &meter{recent: make([]int64, max(trailing, 1))} }

// begin counts, at a start, the log after the last snapshot as raft holds
// it (its replay may come without the data: see logstore.SkipCommandData).
func (m *meter) begin(entries, bytes int64, last uint64) {
	m.entries.Store(entries)
	m.bytes.Store(bytes)
	m.countFrom.Store(last + 1)
}

// add counts a batch (on the FSM goroutine).
func (m *meter) add(logs []*raft.Log) {
	var b, n int64
	from := m.countFrom.Load()
	m.mu.Lock()
	for _, l := range logs {
		if l.Index < from {
			continue
		}
		n++
		b += int64(len(l.Data))
		m.recent[m.next] = int64(len(l.Data))
		m.next++
		if m.next == len(m.recent) {
			m.next, m.filled = 0, true
		}
	}
	m.mu.Unlock()
	m.bytes.Add(b)
	m.entries.Add(n)
}

// applied records that the FSM is done up to index.
func (m *meter) applied(index uint64) {
	m.index.Store(index)
	m.watch.advance(index)
}

// freeze records the count at a snapshot (on the FSM goroutine, where the
// snapshot's index is the last entry given).
func (m *meter) freeze(dbIndex uint64) {
	m.frozenEntries.Store(m.entries.Load())
	m.frozenBytes.Store(m.bytes.Load())
	m.frozenDBIndex.Store(dbIndex)
}

// written makes the frozen count the last snapshot's, once it is on disk.
func (m *meter) written() {
	m.snapEntries.Store(m.frozenEntries.Load())
	m.snapBytes.Store(m.frozenBytes.Load())
}

// since is what was given since the last snapshot (or since the start,
// which replays everything after the last snapshot).
func (m *meter) since() (entries, bytes int64) {
	return m.entries.Load() - m.snapEntries.Load(), m.bytes.Load() - m.snapBytes.Load()
}

// trailing is how many of the latest entries, at most len(recent), hold
// at most budget bytes together.
func (m *meter) trailing(budget int64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.next
	if m.filled {
		n = len(m.recent)
	}
	var sum int64
	for k := 0; k < n; k++ {
		i := (m.next - 1 - k + len(m.recent)) % len(m.recent)
		sum += m.recent[i]
		if sum > budget {
			return uint64(k)
		}
	}
	return uint64(n)
}

// policy takes the node's snapshots: one goroutine, owned by the Node.
type policy struct {
	n      *Node
	cfg    Config
	logger *slog.Logger
	ctx    context.Context // ends with halt
	cancel context.CancelFunc
	quit   chan struct{}
	done   chan struct{}

	mu       sync.Mutex // one snapshot at a time
	lastEnd  time.Time
	lastTook time.Duration
}

func startPolicy(n *Node, cfg Config) *policy {
	ctx, cancel := context.WithCancel(context.Background())
	p := &policy{n: n, cfg: cfg, logger: n.logger, ctx: ctx, cancel: cancel, quit: make(chan struct{}), done: make(chan struct{}), lastEnd: cfg.Now()}
	go p.run()
	return p
}

func (p *policy) halt() { p.cancel(); close(p.quit) }
func (p *policy) wait() { <-p.done }

func (p *policy) run() {
	defer close(p.done)
	t := time.NewTicker(p.cfg.checkEvery)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		if reason := p.due(); reason != "" {
			if err := p.snapshot(reason); err != nil {
				p.logger.Error("snapshot failed; the log keeps growing until one succeeds", "reason", reason, "err", err)
			}
		}
	}
}

// due says why a snapshot is due now, or "".
func (p *policy) due() string {
	entries, bytes := p.n.fsm.meter.since()
	if entries == 0 {
		return ""
	}
	p.mu.Lock()
	idle, took := p.cfg.Now().Sub(p.lastEnd), p.lastTook
	p.mu.Unlock()
	switch {
	case bytes >= p.cfg.SnapshotBytes && idle >= 4*took:
		return "log bytes"
	case uint64(entries) >= p.cfg.SnapshotThreshold && idle >= max(time.Minute, 4*took):
		return "log entries"
	case idle >= max(p.cfg.SnapshotInterval, 100*took):
		return "interval"
	}
	return ""
}

// snapshot takes one now: the trailing count first, so that raft's
// compaction after it keeps at most TrailingBytes.
func (p *policy) snapshot(reason string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.n.fsm.meter
	entries, bytes := m.since()
	keep := min(m.trailing(p.cfg.TrailingBytes), p.cfg.TrailingLogs)
	rc := p.n.raft.ReloadableConfig()
	rc.TrailingLogs = keep
	if err := p.n.raft.ReloadConfig(rc); err != nil {
		return fmt.Errorf("snapshot: trailing logs: %w", err)
	}
	start := p.cfg.Now()
	f := p.n.raft.Snapshot()
	err := f.Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	if err != nil {
		select {
		case <-p.n.stopped:
			p.logger.Info("snapshot abandoned: stopping", "reason", reason)
			return nil
		default:
		}
		return fmt.Errorf("snapshot: %w", err)
	}
	m.written()
	p.lastEnd = p.cfg.Now()
	p.lastTook = p.lastEnd.Sub(start)
	meta, rd, err := f.Open()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	rd.Close()
	if err := recordSnapshot(p.n.logStore, meta.Index, m.frozenDBIndex.Load()); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	first, _ := p.n.logStore.FirstIndex()
	attrs := []any{"reason", reason, "log_entries", entries, "log_mib", mib(bytes),
		"database_mib", mib(m.snapshotBytes.Load()), "took", p.lastTook.Round(time.Millisecond), "index", meta.Index,
		"log_first_index", first, "trailing", keep}
	p.logger.Info("snapshot taken, log truncated", attrs...)
	p.compact()
	return nil
}

// compact shrinks raft.db after a truncation that left it mostly free
// pages. A failure (a full disk: the copy needs room) leaves the file as
// it was, and is no reason to fail the snapshot.
func (p *policy) compact() {
	if p.n.logs == nil {
		return
	}
	c, done, err := p.n.logs.compactIfWasteful(p.ctx, p.cfg.compactMinFree)
	switch {
	case err != nil:
		p.logger.Warn("raft.db not compacted after the snapshot; it stays as large as it is", "err", err)
	case done:
		logCompaction(p.logger, "raft.db compacted after the snapshot", c)
	}
}

func logCompaction(l *slog.Logger, msg string, c logstore.Compaction) {
	l.Info(msg, "file_mib_before", mib(c.Before), "file_mib_after", mib(c.After), "used_mib", mib(c.Used),
		"took", c.Took.Round(time.Millisecond))
}

// The database records the index of the last command it applied, and raft
// the index of its last entry of any kind; after a restart those are a
// no-op and a barrier, which never reach the FSM. So a snapshot taken then
// is at an index the database never records, though it holds everything
// the snapshot holds. The database's own index in the snapshot is kept in
// the stable store beside the raft index, for catchUpFromSnapshot.
var snapshotKey = []byte("sigillo_snapshot_database_index")

func recordSnapshot(s *logstore.Store, index, dbIndex uint64) error {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, index)
	binary.BigEndian.PutUint64(v[8:], dbIndex)
	return s.Set(snapshotKey, v)
}

// snapshotDatabaseIndex is the database's applied index in the snapshot
// at index, if it was recorded.
func snapshotDatabaseIndex(s *logstore.Store, index uint64) (uint64, bool) {
	v, err := s.Get(snapshotKey)
	if err != nil || len(v) != 16 || binary.BigEndian.Uint64(v) != index {
		return 0, false
	}
	return binary.BigEndian.Uint64(v[8:]), true
}
