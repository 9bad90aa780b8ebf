package raftfsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// fsm applies committed log entries to the store.
type fsm struct {
	store  *storage.Store
	logger *slog.Logger
	stop   chan struct{}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM: the commands of a batch share one
// SQLite transaction. A failure of the database itself (disk full) must not
// skip an entry, since every node has to apply the same log: the batch is
// retried until it goes through or the node stops, and meanwhile proposers
// time out with a temporary error. On stop the entries stay unapplied in
// the database and are replayed from the log at the next start.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var entries []storage.Entry
	var at []int
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			out[i] = storage.Result{}
			continue
		}
		entries = append(entries, storage.Entry{Index: l.Index, Data: l.Data})
		at = append(at, i)
	}
	if len(entries) == 0 {
		return out
	}
	backoff := 50 * time.Millisecond
	for {
		results, err := f.store.Apply(context.Background(), entries)
		if err == nil {
			for j, r := range results {
				out[at[j]] = r
			}
			return out
		}
		f.logger.Error("applying committed commands failed; retrying", "first_index", entries[0].Index, "count", len(entries), "err", err)
		select {
		case <-f.stop:
			for _, i := range at {
				out[i] = storage.Result{Err: fmt.Errorf("%w: node stopping: %w", ErrUnavailable, err)}
			}
			return out
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// Snapshot implements raft.FSM. It runs on the FSM goroutine, between two
// applies, and only freezes a read view there: the copy is made in Persist
// while commands go on being applied.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	v, err := f.store.Freeze(context.Background())
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &snapshot{view: v, dir: filepath.Dir(f.store.Path())}, nil
}

// Restore implements raft.FSM: the state becomes the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return restoreFrom(context.Background(), f.store, rc)
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
	view *storage.View
	dir  string
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
	if err := s.view.CopyTo(context.Background(), path); err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	_, err = io.Copy(w, file)
	return err
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
