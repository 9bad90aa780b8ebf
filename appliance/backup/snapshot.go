package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"sigillo/appliance/backup/archive"
	"sigillo/storage"
)

// Part names and kinds of a snapshot set.
const (
	partDatabase = "sigillo.db"
	partConfig   = "sigillo.toml"
	partSecrets  = "secrets.tar"
)

// snapshot is a copy of the database in a temporary directory, written to
// one or more targets and removed when the last of them is done.
type snapshot struct {
	dir    string
	db     string
	index  uint64
	time   time.Time
	size   int64
	counts map[string]int64
	refs   int // guarded by Backuper.mu
}

func (s *snapshot) id() string { return archive.SnapshotID(s.time, s.index) }

// takeSnapshot copies the database into a new temporary directory and
// counts what the copy holds.
func (b *Backuper) takeSnapshot(ctx context.Context) (*snapshot, error) {
	dir, err := os.MkdirTemp(b.cfg.TempDir, "sigillo-backup-")
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	s := &snapshot{dir: dir, db: filepath.Join(dir, partDatabase), time: b.cfg.Now().UTC(), refs: 1}
	fail := func(err error) (*snapshot, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if s.index, err = b.src.Snapshot(ctx, s.db); err != nil {
		return fail(err)
	}
	if s.counts, err = countsOf(ctx, s.db); err != nil {
		return fail(err)
	}
	fi, err := os.Stat(s.db)
	if err != nil {
		return fail(err)
	}
	s.size = fi.Size()
	// Opening the copy may have left SQLite's side files; only the
	// database goes to the targets.
	os.Remove(s.db + "-wal")
	os.Remove(s.db + "-shm")
	b.log.Debug("snapshot taken", "index", s.index, "bytes", s.size, "counts", s.counts)
	return s, nil
}

// countsOf opens the copy at path read-only and counts its domains,
// mailboxes and messages.
func countsOf(ctx context.Context, path string) (map[string]int64, error) {
	st, err := storage.OpenReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Counts(ctx)
}

// sharedSnapshot is a snapshot for a worker of Run whose target holds the
// state up to index after: the one another worker is writing when it is
// newer than that, else a new one. release gives it back.
func (b *Backuper) sharedSnapshot(ctx context.Context, after uint64) (*snapshot, error) {
	select {
	case b.snapTurn <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.snapTurn }()
	b.mu.Lock()
	if s := b.shared; s != nil && s.index > after {
		s.refs++
		b.mu.Unlock()
		return s, nil
	}
	b.mu.Unlock()
	s, err := b.takeSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.shared = s
	b.mu.Unlock()
	return s, nil
}

// release gives back a snapshot; the last one out removes its files.
func (b *Backuper) release(s *snapshot) {
	b.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && b.shared == s {
		b.shared = nil
	}
	b.mu.Unlock()
	if last {
		if err := os.RemoveAll(s.dir); err != nil {
			b.log.Warn("removing a snapshot's temporary copy", "dir", s.dir, "err", err)
		}
	}
}

// Now takes one snapshot and writes it to every target at once, each
// independently: one target's failure does not stop another. It returns one
// Result per target, in the order of Config.Targets, and an error naming
// every target that failed (nil when all have the snapshot). When the
// snapshot itself cannot be taken it returns no Result and that error.
// progress, when not nil, is called (never concurrently) as bytes are
// written.
func (b *Backuper) Now(ctx context.Context, progress func(Progress)) ([]Result, error) {
	if len(b.targets) == 0 {
		return nil, errors.New("backup: no target configured")
	}
	s, err := b.takeSnapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer b.release(s)
	rep := &reporter{fn: progress}
	results := make([]Result, len(b.targets))
	var wg sync.WaitGroup
	for i, ts := range b.targets {
		wg.Go(func() {
			tr := rep.target(ts.name, s.size+b.configSize())
			results[i] = b.writeSnapshot(ctx, ts, s, tr)
			tr.done(results[i].Err)
		})
	}
	wg.Wait()
	var errs []error
	for i, r := range results {
		if r.Err != nil {
			n := b.failed(b.targets[i], r.Err)
			b.log.Error("backup snapshot failed", "target", r.Target, "failures", n, "err", r.Err)
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// configSize is the size of the config file, for progress (0 when none).
func (b *Backuper) configSize() int64 {
	if b.cfg.ConfigFile == "" {
		return 0
	}
	fi, err := os.Stat(b.cfg.ConfigFile)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// writeSnapshot writes s to one target, then applies the target's
// retention. The error of the Result names the snapshot and the target;
// the caller records it.
func (b *Backuper) writeSnapshot(ctx context.Context, ts *targetState, s *snapshot, tr *tracker) Result {
	res := Result{Target: ts.name, ID: s.id()}
	m := archive.Manifest{
		Kind:    archive.KindSnapshot,
		ID:      res.ID,
		Time:    s.time,
		Index:   s.index,
		Version: b.cfg.Version,
		Schema:  storage.SchemaVersion(),
		Node:    b.cfg.NodeID,
		Counts:  s.counts,
	}
	start := time.Now()
	written, err := archive.Write(ctx, tr.store(ts.t.Store), m, tr.sources(b.snapshotParts(s)), b.cfg.Options)
	if errors.Is(err, fs.ErrExist) {
		// The same state at the same second: the set is already there.
		written, err = archive.ReadManifest(ctx, ts.t.Store, m.Kind, m.ID)
	}
	if err != nil {
		res.Err = err // archive's errors name the set and the target
		return res
	}
	for _, p := range written.Parts {
		res.Bytes += p.Bytes
	}
	b.succeeded(ts, written)
	b.log.Info("backup snapshot written", "target", ts.name, "id", res.ID, "index", s.index,
		"bytes", res.Bytes, "duration", time.Since(start).Round(time.Millisecond))
	if err := b.applyRetention(ctx, ts); err != nil {
		b.log.Warn("backup retention not applied", "target", ts.name, "err", err)
	}
	return res
}

// snapshotParts are the parts of a snapshot set: the database, the config
// file when there is one, and the secret files when the set is encrypted.
func (b *Backuper) snapshotParts(s *snapshot) []archive.Source {
	parts := []archive.Source{{Name: partDatabase, Kind: "database", Open: openFile(s.db)}}
	if b.cfg.ConfigFile != "" {
		parts = append(parts, archive.Source{Name: partConfig, Kind: "config", Open: openFile(b.cfg.ConfigFile)})
	}
	if len(b.cfg.SecretFiles) > 0 {
		if len(b.cfg.Options.Recipients) > 0 {
			files := b.cfg.SecretFiles
			parts = append(parts, archive.Source{Name: partSecrets, Kind: "secrets", Open: func(ctx context.Context) (io.ReadCloser, error) {
				return openSecrets(ctx, files), nil
			}})
		} else {
			b.secretsNote.Do(func() {
				b.log.Info("backups are not encrypted, so they hold no secret files (keys); set an age recipient to include them",
					"files", len(b.cfg.SecretFiles))
			})
		}
	}
	return parts
}

func openFile(path string) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
}

// applyRetention removes the snapshots the target's retention drops, then
// the log sets that end at or before the oldest snapshot kept (a restore
// starts from a snapshot, so they can no longer be used).
func (b *Backuper) applyRetention(ctx context.Context, ts *targetState) error {
	st := ts.t.Store
	snaps, err := b.sets(ctx, st, archive.KindSnapshot)
	if err != nil || len(snaps) == 0 {
		return err
	}
	times := make(map[string]time.Time, len(snaps))
	for _, m := range snaps {
		times[m.ID] = m.Time
	}
	_, drop := ts.t.Retention.Keep(times, b.cfg.Now())
	dropped := make(map[string]bool, len(drop))
	for _, id := range drop {
		dropped[id] = true
	}
	oldest, found := uint64(0), false
	for _, m := range snaps {
		if dropped[m.ID] {
			if err := archive.DeleteSet(ctx, st, m); err != nil {
				return fmt.Errorf("delete snapshot %s: %w", m.ID, err)
			}
			b.log.Info("backup snapshot removed by retention", "target", ts.name, "id", m.ID)
			continue
		}
		if !found || m.Index < oldest {
			oldest, found = m.Index, true
		}
	}
	if !found {
		return nil
	}
	logs, err := b.sets(ctx, st, archive.KindLog)
	if err != nil {
		return err
	}
	for _, m := range logs {
		if m.Index <= oldest {
			if err := archive.DeleteSet(ctx, st, m); err != nil {
				return fmt.Errorf("delete log %s: %w", m.ID, err)
			}
			b.log.Debug("backup log removed by retention", "target", ts.name, "id", m.ID)
		}
	}
	return nil
}

// sets lists the complete sets of one kind on st. Damaged manifests are
// logged and left out; the error is only for a target that cannot be
// listed.
func (b *Backuper) sets(ctx context.Context, st archive.Store, kind string) ([]archive.Manifest, error) {
	ms, err := archive.Sets(ctx, st, kind)
	if err == nil {
		return ms, nil
	}
	// Sets' error is either the listing's or the damaged manifests'.
	errStop := errors.New("stop")
	if lerr := st.List(ctx, kind+"s/", func(string, int64) error { return errStop }); lerr != nil && !errors.Is(lerr, errStop) {
		return nil, fmt.Errorf("list %ss on %s: %w", kind, st, lerr)
	}
	b.log.Warn("backup target holds damaged sets", "target", st.String(), "kind", kind, "err", err)
	return ms, nil
}
