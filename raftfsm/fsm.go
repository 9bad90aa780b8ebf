package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// fsm applies committed log entries to the store.
type fsm struct {
	store  *storage.Store
	logger *slog.Logger
	meter  *meter
	// ctx ends when the node stops: a batch being applied and a snapshot
	// being copied give up.
	ctx  context.Context
	halt context.CancelFunc

	// unknown is the command this binary does not know that stopped the
	// FSM (storage.CommandVersion); stuck is closed then.
	unknown atomic.Pointer[storage.UnknownCommandError]
	stuck   chan struct{}
	// restoring: a snapshot from the leader is being installed.
	restoring atomic.Bool
	// onHalt is called once when the FSM stops at an unknown command
	// (set by Open once raft runs).
	onHalt atomic.Pointer[func()]
	// translate, when set, is what the binary makes of an entry's data
	// before the store decodes it: tests stand for a newer binary with it.
	translate func([]byte) []byte
}

func newFSM(store *storage.Store, logger *slog.Logger, trailing int) *fsm {
	ctx, cancel := context.WithCancel(context.Background())
	return &fsm{store: store, logger: logger, meter: newMeter(trailing), ctx: ctx, halt: cancel, stuck: make(chan struct{})}
}

// haltedErr is the command that stopped the FSM, or nil.
func (f *fsm) haltedErr() error {
	if u := f.unknown.Load(); u != nil {
		return u
	}
	return nil
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// applyChunkBytes bounds the commands applied in one SQLite transaction:
// a replay hands the FSM up to 256 entries at once, and with whole
// messages in them one transaction would hold gigabytes and say nothing of
// its progress until the end.
const applyChunkBytes = 64 << 20

// ApplyBatch implements raft.BatchingFSM: the commands of a batch share
// SQLite transactions of up to applyChunkBytes. A failure of the database
// itself (disk full) must not skip an entry, since every node has to apply
// the same log: the transaction is retried until it goes through or the
// node stops, and meanwhile proposers time out with a temporary error. On
// stop the entries stay unapplied in the database and are replayed from
// the log at the next start.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.meter.add(logs)
	out := make([]any, len(logs))
	var entries []storage.Entry
	var at []int
	size := 0
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			out[i] = storage.Result{}
			continue
		}
		data := l.Data
		if f.translate != nil {
			data = f.translate(data)
		}
		entries = append(entries, storage.Entry{Index: l.Index, Data: data})
		at = append(at, i)
		size += len(l.Data)
		if size >= applyChunkBytes {
			if !f.applyChunk(entries, at, out) {
				return f.stopped(out)
			}
			entries, at, size = nil, nil, 0
		}
	}
	if len(entries) > 0 && !f.applyChunk(entries, at, out) {
		return f.stopped(out)
	}
	if len(logs) > 0 {
		f.meter.applied(logs[len(logs)-1].Index)
	}
	return out
}

// stopped answers the entries of a batch left unapplied by a stop.
func (f *fsm) stopped(out []any) []any {
	for i := range out {
		if out[i] == nil {
			out[i] = storage.Result{Err: fmt.Errorf("%w: node stopping", ErrUnavailable)}
		}
	}
	return out
}

// applyChunk applies entries in one transaction and puts their results
// at their places in out. It returns false when it stopped before the end
// of the chunk: the node is stopping, or the chunk holds a command this
// binary does not know. That command must be neither applied nor
// skipped, since every node applies the same log: the FSM applies what
// comes before it and then waits, applying nothing more, until the node
// stops; a restart with a binary that knows the command goes on from
// there (the database's applied index is before it).
func (f *fsm) applyChunk(entries []storage.Entry, at []int, out []any) bool {
	backoff := 50 * time.Millisecond
	for {
		err := f.ctx.Err()
		if err == nil {
			var results []storage.Result
			results, err = f.store.Apply(f.ctx, entries)
			var unknown *storage.UnknownCommandError
			if errors.As(err, &unknown) {
				for j, e := range entries {
					if e.Index >= unknown.Index {
						break
					}
					out[at[j]] = results[j]
				}
				f.stopAt(unknown)
				return false
			}
			if err == nil {
				for j, r := range results {
					out[at[j]] = r
				}
				f.meter.applied(entries[len(entries)-1].Index)
				return true
			}
			if f.ctx.Err() == nil {
				f.logger.Error("applying committed commands failed; retrying", "first_index", entries[0].Index, "count", len(entries), "err", err)
			}
		}
		select {
		case <-f.ctx.Done():
			for _, i := range at {
				out[i] = storage.Result{Err: fmt.Errorf("%w: node stopping: %w", ErrUnavailable, err)}
			}
			return false
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// stopAt stops the FSM at a command this binary does not know: it says so
// once, then waits for the node to stop.
func (f *fsm) stopAt(u *storage.UnknownCommandError) {
	f.meter.applied(u.Index - 1)
	if f.unknown.CompareAndSwap(nil, u) {
		close(f.stuck)
		f.logger.Error("stopped applying the raft log: a command this version does not know; "+
			"upgrade this node to the version of the leader and restart it", "index", u.Index, "op", u.Op,
			"format", u.Version, "known_format", storage.CommandVersion)
		if fn := f.onHalt.Load(); fn != nil {
			(*fn)()
		}
	}
	<-f.ctx.Done()
}

// Snapshot implements raft.FSM. It runs on the FSM goroutine, between two
// applies, and only freezes a read view there: the copy is made in Persist
// while commands go on being applied.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	v, err := f.store.Freeze(f.ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	// The FSM is the only writer and this is its goroutine: the index read
	// now is the one of the frozen view.
	applied, err := f.store.AppliedIndex(f.ctx)
	if err != nil {
		v.Close()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	f.meter.freeze(applied)
	return &snapshot{ctx: f.ctx, view: v, dir: filepath.Dir(f.store.Path()), written: &f.meter.snapshotBytes}, nil
}

// Restore implements raft.FSM: the state becomes the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.restoring.Store(true)
	defer f.restoring.Store(false)
	before, _ := f.store.AppliedIndex(f.ctx)
	f.logger.Info("installing a snapshot from the leader: this node is too far behind for the log", "applied", before)
	start := time.Now()
	if err := restoreFrom(context.Background(), f.store, rc); err != nil {
		return err
	}
	if applied, err := f.store.AppliedIndex(f.ctx); err == nil {
		f.meter.applied(applied)
		f.logger.Info("snapshot installed", "applied", applied, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func restoreFrom(ctx context.Context, store *storage.Store, r io.Reader) error {
	dir, err := os.MkdirTemp(filepath.Dir(store.Path()), tempPrefix+"restore-")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "db.sqlite")
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(file, r); err != nil {
		file.Close()
		return fmt.Errorf("restore: copy snapshot: %w", err)
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return store.Restore(ctx, path)
}

type snapshot struct {
	ctx     context.Context
	view    *storage.View
	dir     string
	written *atomic.Int64 // the size of the last snapshot written
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.persist(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return nil
}

func (s *snapshot) persist(w io.Writer) error {
	dir, err := os.MkdirTemp(s.dir, tempPrefix+"snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "db.sqlite")
	if err := s.view.CopyTo(s.ctx, path); err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	n, err := io.Copy(w, ctxReader{s.ctx, file})
	if err == nil {
		s.written.Store(n)
	}
	return err
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Release implements raft.FSMSnapshot.
func (s *snapshot) Release() { s.view.Close() }

// tempPrefix marks the scratch directories of snapshots and restores in
// the data directory; those left by a crash are removed at the next start.
const tempPrefix = "tmp-raftfsm-"

// RemoveStaleTemp deletes scratch directories a crash left in dir.
func RemoveStaleTemp(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	for _, m := range matches {
		os.RemoveAll(m)
	}
}
