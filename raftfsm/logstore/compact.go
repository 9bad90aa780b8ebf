package logstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// Compaction: why and how.
//
// Bolt keeps the pages a DeleteRange frees on its freelist and reuses them,
// but never shortens the file. Entries carry whole messages, so a burst
// (a mailing list, a migration) grows raft.db by gigabytes that the
// snapshot's truncation frees and the file then keeps for good, while it
// holds only the trailing entries (at most TrailingBytes, 64 MiB by
// default). Consul's raft-boltdb has the same complaint open for years;
// raft-wal avoids it with segment files it deletes; etcd shrinks its bolt
// file with "defrag", a copy into a new file that blocks writes meanwhile.
//
// Compact is etcd's defrag in raft-boltdb's format: the entries and the
// stable store's keys are copied, bucket by bucket and key by key, into
// raft.db.compact (committed and fsynced in batches), which is then renamed
// over raft.db, and the store goes on with it. Writes wait for the whole
// copy (they must not land in the file being copied from); reads go on
// from the old file until the rename. After a snapshot's truncation what
// is copied is small, so the wait is short (the figures are in the
// commit and in the tests' output).
//
// A crash at any point leaves a whole raft.db: before the rename it is the
// old file untouched (the copy is removed by the next Open), after it the
// copy, complete and fsynced before being renamed.
//
// It is the caller's to say when: CompactIfWasteful compacts when the free
// space is over half the file and over a floor (MinWaste, 64 MiB, as a
// rule), so that a log that truncates and refills in a steady rhythm is
// not copied at every snapshot for a few megabytes.

// compactBatch is how many bytes of values one transaction of the copy
// carries: bolt holds a transaction's pages in memory until it commits.
const compactBatch = 32 << 20

// MinWaste is the free space below which CompactIfWasteful's callers
// should leave a file as it is: copying the file costs more than the
// space is worth.
const MinWaste = 64 << 20

// Compaction is what a compaction did.
type Compaction struct {
	// Before and After are the file's sizes, Used what it held.
	Before, After, Used int64
	Took                time.Duration
}

// Size is how large the file is and how much of it holds entries and keys
// (bolt's pages in use); the rest is free pages, which bolt reuses for
// new entries but never gives back without Compact.
func (s *Store) Size() (file, used int64, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.size()
}

// size is Size with s.mu held.
func (s *Store) size() (file, used int64, err error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, 0, fmt.Errorf("raft log size: %w", err)
	}
	var top int64
	if err := s.db.View(func(tx *bbolt.Tx) error { top = tx.Size(); return nil }); err != nil {
		return 0, 0, fmt.Errorf("raft log size: %w", err)
	}
	st := s.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
	return fi.Size(), top - free, nil
}

// Wasteful says whether a file of that size holding used bytes is worth
// compacting: its free space is over minFree and over half the file.
func Wasteful(file, used, minFree int64) bool {
	free := file - used
	return free > minFree && free > file/2
}

// CompactIfWasteful compacts the file if Wasteful says so (with minFree,
// MinWaste as a rule), and says whether it did.
func (s *Store) CompactIfWasteful(ctx context.Context, minFree int64) (Compaction, bool, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	file, used, err := s.size()
	s.mu.RUnlock()
	if err != nil || !Wasteful(file, used, minFree) {
		return Compaction{}, false, err
	}
	c, err := s.compact(ctx)
	return c, err == nil, err
}

// Compact copies what the file holds into a new file and puts it in
// place of the old one. Writes wait for it; reads do not. On an error the
// store goes on with the old file, unchanged.
func (s *Store) Compact(ctx context.Context) (Compaction, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.compact(ctx)
}

// errCrashed ends a compaction that a test stopped as a crash would: what
// is on disk stays as it is.
var errCrashed = errors.New("crashed (test)")

// compact is Compact with s.writeMu held.
func (s *Store) compact(ctx context.Context) (Compaction, error) {
	start := time.Now()
	s.mu.RLock()
	before, used, err := s.size()
	s.mu.RUnlock()
	if err != nil {
		return Compaction{}, err
	}
	tmp := s.compactPath()
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Compaction{}, fmt.Errorf("compact raft log: %w", err)
	}
	dst, err := bbolt.Open(tmp, 0o600, options())
	if err != nil {
		return Compaction{}, fmt.Errorf("compact raft log: %w", err)
	}
	// abandon leaves the old file in use and removes the copy; after a
	// simulated crash it only closes, as a crash would.
	abandon := func(err error) (Compaction, error) {
		dst.Close()
		if !errors.Is(err, errCrashed) {
			os.Remove(tmp)
		}
		return Compaction{}, fmt.Errorf("compact raft log: %w", err)
	}
	s.mu.RLock()
	err = s.db.View(func(src *bbolt.Tx) error { return s.copyInto(ctx, dst, src) })
	s.mu.RUnlock()
	if err != nil {
		return abandon(err)
	}
	if err := s.step("copied"); err != nil {
		return abandon(err)
	}

	// Every batch of the copy was committed and fsynced: the copy is
	// whole on disk before it takes raft.db's name. The copy is open
	// already (and holds the lock of the file that will be raft.db), so
	// nothing can fail after the rename.
	s.mu.Lock()
	if err := os.Rename(tmp, s.path); err != nil {
		s.mu.Unlock()
		return abandon(err)
	}
	if err := s.step("renamed"); err != nil {
		s.mu.Unlock()
		return abandon(err)
	}
	old := s.db
	s.db = dst
	syncErr := syncDir(filepath.Dir(s.path))
	s.mu.Unlock()
	old.Close()

	s.mu.RLock()
	after, _, err := s.size()
	s.mu.RUnlock()
	c := Compaction{Before: before, After: after, Used: used, Took: time.Since(start)}
	if err == nil && syncErr != nil {
		// Both names hold a whole file: a crash before the directory
		// reaches the disk brings back the old one.
		err = fmt.Errorf("compact raft log: %w", syncErr)
	}
	return c, err
}

// step lets a test stop a compaction after the named step.
func (s *Store) step(name string) error {
	if s.crash == nil {
		return nil
	}
	return s.crash(name)
}

func (s *Store) compactPath() string { return s.path + ".compact" }

// copier copies buckets and keys into dst in transactions of about
// compactBatch bytes.
type copier struct {
	ctx     context.Context
	s       *Store
	dst     *bbolt.DB
	tx      *bbolt.Tx
	pending int
	batch   int
}

// copyInto copies every bucket (nested ones too, with their sequences) and
// key of src into dst.
func (s *Store) copyInto(ctx context.Context, dst *bbolt.DB, src *bbolt.Tx) error {
	c := &copier{ctx: ctx, s: s, dst: dst, batch: compactBatch}
	if s.copyBatch > 0 {
		c.batch = s.copyBatch
	}
	err := src.ForEach(func(name []byte, b *bbolt.Bucket) error {
		return c.bucket([][]byte{name}, b)
	})
	if err == nil {
		err = c.commit()
	}
	if c.tx != nil {
		c.tx.Rollback()
	}
	return err
}

func (c *copier) bucket(path [][]byte, src *bbolt.Bucket) error {
	b, err := c.open(path)
	if err != nil {
		return err
	}
	if err := b.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v == nil {
			return c.bucket(append(path[:len(path):len(path)], k), src.Bucket(k))
		}
		b, err := c.open(path)
		if err != nil {
			return err
		}
		// Keys come in order (raft's indexes ascending): full pages.
		b.FillPercent = 1
		// bolt keeps v (a slice of src's map) until the commit, which
		// comes before src's transaction ends.
		if err := b.Put(k, v); err != nil {
			return err
		}
		c.pending += len(k) + len(v)
		if c.pending >= c.batch {
			return c.commit()
		}
		return nil
	})
}

// open is the bucket at path in the current transaction, made if new.
func (c *copier) open(path [][]byte) (*bbolt.Bucket, error) {
	if c.tx == nil {
		tx, err := c.dst.Begin(true)
		if err != nil {
			return nil, err
		}
		c.tx = tx
	}
	b, err := c.tx.CreateBucketIfNotExists(path[0])
	for _, name := range path[1:] {
		if err != nil {
			break
		}
		b, err = b.CreateBucketIfNotExists(name)
	}
	return b, err
}

// commit ends the current transaction (fsynced) and checks ctx.
func (c *copier) commit() error {
	if c.tx != nil {
		tx := c.tx
		c.tx = nil
		c.pending = 0
		if err := tx.Commit(); err != nil {
			return err
		}
		if err := c.s.step("batch"); err != nil {
			return err
		}
	}
	return c.ctx.Err()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
