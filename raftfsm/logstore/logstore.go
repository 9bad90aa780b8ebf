// Package logstore is raft's log and stable store on a bbolt file, in
// raft-boltdb v2's format (buckets "logs" and "conf", msgpack entries), so
// that an existing raft.db opens as it is and raft-boltdb can still read
// what this package writes.
//
// It exists for what raft-boltdb does with large entries, and Sigillo's
// entries carry whole messages: raft-boltdb decodes an entry's data in
// 256 KiB steps, copying everything read so far at each step, so reading a
// 28 MB entry moves about 1.5 GB of memory; and bbolt maps the file with
// MADV_RANDOM, so a cold read faults one page at a time (55 MB/s where the
// disk gives 800). Here an entry is decoded with one allocation, and
// Prefetch asks the kernel for the entries a restart is about to read.
//
// And a start need not read the data of commands the database already
// holds: SkipCommandData lets GetLog leave it out (see its conditions).
//
// And the file follows what it holds: bolt reuses the pages a truncation
// frees but never gives them back, so after a burst of large messages
// raft.db kept gigabytes of free pages for good; Compact copies what is
// left into a new file and puts it in place (see compact.go).
//
// It is not a general key/value store and knows nothing of what entries
// mean.
package logstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

var (
	bucketLogs = []byte("logs")
	bucketConf = []byte("conf")
)

// ErrKeyNotFound is the stable store's answer for a key never set; raft
// recognises it by its text, "not found".
var ErrKeyNotFound = errors.New("not found")

// ErrLocked means another process holds the file.
var ErrLocked = errors.New("locked by another process")

// Store is an open raft.db.
type Store struct {
	// mu guards db: every use of it holds mu shared, and a compaction
	// holds it alone to put the compacted file in place.
	mu sync.RWMutex
	db *bbolt.DB
	// writeMu is held by every write and by a compaction's copy, so that
	// no write lands in the file being copied from.
	writeMu sync.Mutex
	path    string
	// crash, in tests, stops a compaction after a step as a crash would;
	// copyBatch, in tests, is a smaller compactBatch.
	crash     func(step string) error
	copyBatch int
	// read counts the bytes of entries GetLog has gone through, for
	// progress reports while a restart replays the log.
	read atomic.Int64
	// skipUpTo: GetLog leaves out the data of commands at or below it.
	skipUpTo atomic.Uint64
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
)

// Open opens or creates the file at path. If another process holds it,
// Open waits up to lockWait (or until ctx ends) and then fails with
// ErrLocked. A compaction's copy that a crash left beside it is removed.
func Open(ctx context.Context, path string, lockWait time.Duration) (*Store, error) {
	deadline := time.Now().Add(lockWait)
	for {
		db, err := bbolt.Open(path, 0o600, options())
		if err == nil {
			s := &Store{db: db, path: path}
			if err := db.Update(func(tx *bbolt.Tx) error {
				if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
					return err
				}
				_, err := tx.CreateBucketIfNotExists(bucketConf)
				return err
			}); err != nil {
				db.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			// Only the holder of raft.db's lock compacts it, so a copy
			// found now is a dead process's.
			if err := os.Remove(s.compactPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
				db.Close()
				return nil, fmt.Errorf("%s: remove a compaction's leftover: %w", path, err)
			}
			return s, nil
		}
		if !errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: waiting for its lock: %w", path, err)
		}
	}
}

// options are bolt's options for raft.db and for its compacted copy.
func options() *bbolt.Options {
	opts := &bbolt.Options{
		Timeout: 100 * time.Millisecond,
		// The freelist is rebuilt from the tree at open instead of being
		// written at every commit: after a burst of large entries is
		// compacted away, the list of free pages is long, and writing it
		// with every small append would cost more than the append.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
	if strconv.IntSize == 64 {
		// Entries carry whole messages, and bolt copies every value of the
		// transaction being written onto the heap each time it has to grow
		// its memory map: with the default map, which doubles from 32 KiB, a
		// burst of large messages was copied three times over. A map reserved
		// large from the start costs address space only (nothing is resident
		// until read), so raft.db is not remapped before it reaches that size.
		opts.InitialMmapSize = 4 << 30
	}
	return opts
}

// view runs fn in a read transaction of the current file.
func (s *Store) view(fn func(*bbolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(fn)
}

// update runs fn in a write transaction of the current file.
func (s *Store) update(fn func(*bbolt.Tx) error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Update(fn)
}

// Close closes the file.
func (s *Store) Close() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// Path is the file's path.
func (s *Store) Path() string { return s.path }

// BytesRead is how many bytes of entries GetLog has gone through so far.
func (s *Store) BytesRead() int64 { return s.read.Load() }

// SkipCommandData makes GetLog return the command entries at or below
// index without their data (nil), not even reading it from the file; other
// entries (configuration changes) and later commands come whole. 0 turns
// it off. It is for a start, when the database already holds those
// commands and skips them, and only where nothing else reads the log: a
// node alone in its cluster (no follower to send them to).
func (s *Store) SkipCommandData(index uint64) { s.skipUpTo.Store(index) }

// FirstIndex implements raft.LogStore.
func (s *Store) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.view(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// LastIndex implements raft.LogStore.
func (s *Store) LastIndex() (uint64, error) {
	var idx uint64
	err := s.view(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// GetLog implements raft.LogStore.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	return s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketLogs).Get(key(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		if index <= s.skipUpTo.Load() {
			var h header
			if err := decodeHeader(v, &h); err != nil {
				return fmt.Errorf("raft log entry %d: %w", index, err)
			}
			if h.Type == raft.LogCommand {
				*l = raft.Log{Index: h.Index, Term: h.Term, Type: h.Type, Extensions: h.Extensions, AppendedAt: h.AppendedAt}
				s.read.Add(int64(len(v)))
				return nil
			}
		}
		if err := decode(v, l); err != nil {
			return fmt.Errorf("raft log entry %d: %w", index, err)
		}
		s.read.Add(int64(len(v)))
		return nil
	})
}

// StoreLog implements raft.LogStore.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore: one transaction, fsynced.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	return s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			v, err := encode(l)
			if err != nil {
				return fmt.Errorf("raft log entry %d: %w", l.Index, err)
			}
			if err := b.Put(key(l.Index), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange implements raft.LogStore: it removes min to max inclusive.
func (s *Store) DeleteRange(min, max uint64) error {
	return s.update(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, _ := c.Seek(key(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set implements raft.StableStore.
func (s *Store) Set(k, v []byte) error {
	return s.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketConf).Put(k, v) })
}

// Get implements raft.StableStore.
func (s *Store) Get(k []byte) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketConf).Get(k)
		if v == nil {
			return ErrKeyNotFound
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// SetUint64 implements raft.StableStore.
func (s *Store) SetUint64(k []byte, v uint64) error { return s.Set(k, key(v)) }

// GetUint64 implements raft.StableStore.
func (s *Store) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable store %q: %d bytes, want 8", k, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Span is a stretch of the log.
type Span struct {
	First, Last uint64 // 0, 0 when empty
	Entries     int64
	Bytes       int64 // as stored
}

// Measure is the span of the entries after index.
func (s *Store) Measure(after uint64) (Span, error) { return s.span(after, false) }

// Prefetch measures the entries after index and asks the kernel to read
// them into memory now, in large sequential reads, ahead of the GetLog
// calls of a restart (raft reads them twice: once for configuration
// changes, once to apply them). It returns at once; the reads go on in
// the background.
func (s *Store) Prefetch(after uint64) (Span, error) { return s.span(after, true) }

func (s *Store) span(after uint64, prefetch bool) (Span, error) {
	var sp Span
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, v := c.Seek(key(after + 1)); k != nil; k, v = c.Next() {
			idx := binary.BigEndian.Uint64(k)
			if sp.First == 0 {
				sp.First = idx
			}
			sp.Last = idx
			sp.Entries++
			sp.Bytes += int64(len(v))
			if prefetch {
				willNeed(v)
			}
		}
		return nil
	})
	return sp, err
}

// willNeed advises the kernel that v, a slice of bbolt's memory map, is
// about to be read. The kernel reads at most its readahead window per
// call (8 MiB here, often less), so the advice goes in 4 MiB pieces. It is
// advice: a failure changes nothing but speed.
func willNeed(v []byte) {
	page := uintptr(os.Getpagesize())
	for len(v) > 0 {
		n := min(len(v), 4<<20)
		start := uintptr(unsafe.Pointer(&v[0]))
		end := start + uintptr(n)
		start &^= page - 1
		syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_WILLNEED)
		v = v[n:]
	}
}

func key(i uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, i)
	return b
}

// decode reads an entry as raft-boltdb wrote it. MaxInitLen is what makes
// it linear: a byte string is never longer than the encoding it is in, so
// the decoder may allocate its full length at once.
func decode(v []byte, l *raft.Log) error {
	*l = raft.Log{}
	h := codec.MsgpackHandle{}
	h.MaxInitLen = len(v)
	return codec.NewDecoderBytes(v, &h).Decode(l)
}

// header is raft.Log without its data: decoding into it passes over the
// data (the field is unknown to it) without copying or even touching it.
type header struct {
	Index      uint64
	Term       uint64
	Type       raft.LogType
	Extensions []byte
	AppendedAt time.Time
}

func decodeHeader(v []byte, h *header) error {
	hd := codec.MsgpackHandle{}
	hd.MaxInitLen = len(v)
	return codec.NewDecoderBytes(v, &hd).Decode(h)
}

// encode writes an entry as raft-boltdb does by default (time in the
// format go-msgpack v1 wrote, which every version reads).
func encode(l *raft.Log) ([]byte, error) {
	h := codec.MsgpackHandle{}
	h.TimeNotBuiltin = true
	buf := bytes.NewBuffer(make([]byte, 0, len(l.Data)+len(l.Extensions)+64))
	if err := codec.NewEncoder(buf, &h).Encode(l); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
