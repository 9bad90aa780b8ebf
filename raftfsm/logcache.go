package raftfsm

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
)

// maxCachedEntry is the largest log entry the cache keeps.
const maxCachedEntry = 64 << 10

// dropAfterBytes is how many bytes of entries a write or read carries
// before raft.db's pages are dropped from the process's memory map.
const dropAfterBytes = 1 << 20

// logCache is raft.db as raft uses it: the log store (package logstore) with three
// changes for entries that carry whole messages:
//
//   - The cache of recent entries keeps small entries only: a cached entry
//     holds its data in memory until newer ones push it out, and entries
//     carrying large messages would keep tens of megabytes each alive long
//     after they were applied. Large entries are read from the store on the
//     rare occasions raft asks for them again (replay, a lagging follower).
//   - Bolt rewrites the last leaf of the log at each append, copying the
//     large values already in it, and reads them through its memory map:
//     every message written became resident again in the map and stayed
//     there (file-backed, but counted in the process's RSS). After a write
//     or a read of large entries the map's pages are dropped (they are
//     clean: bolt writes with pwrite), so that resident memory is bounded
//     by one write's worth.
//   - Writes (log and stable store) are serialised with that dropping: bolt
//     may move its map only inside a write, and never does while the map's
//     pages are being dropped.
type logCache struct {
	store  raft.LogStore
	stable raft.StableStore
	drop   func() error // drops the map's pages; nil: nothing to drop

	writeMu sync.Mutex // held by every write and by drop

	mu    sync.RWMutex
	cache []*raft.Log
}

// newLogCache wraps the log store (a raft.LogStore and
// raft.StableStore) whose file is path.
func newLogCache(capacity int, store interface {
	raft.LogStore
	raft.StableStore
}, path string) (*logCache, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("log cache capacity must be positive, not %d", capacity)
	}
	return &logCache{store: store, stable: store, drop: mapDropper(path), cache: make([]*raft.Log, capacity)}, nil
}

// IsMonotonic implements raft.MonotonicLogStore as the store does.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// GetLog implements raft.LogStore.
func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.cache[idx%uint64(len(c.cache))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == idx {
		*log = *cached
		return nil
	}
	if err := c.store.GetLog(idx, log); err != nil {
		return err
	}
	if len(log.Data) >= dropAfterBytes {
		c.writeMu.Lock()
		c.dropPages()
		c.writeMu.Unlock()
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(log *raft.Log) error {
	return c.StoreLogs([]*raft.Log{log})
}

// StoreLogs implements raft.LogStore. A large entry clears its cache slot,
// so that an older entry with the same index (replaced after a leader
// change) can never be served from the cache.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("store raft log entries: %w", err)
	}
	var size int
	c.mu.Lock()
	for _, l := range logs {
		n := len(l.Data) + len(l.Extensions)
		size += n
		slot := l.Index % uint64(len(c.cache))
		if n > maxCachedEntry {
			c.cache[slot] = nil
		} else {
			c.cache[slot] = l
		}
	}
	c.mu.Unlock()
	if size >= dropAfterBytes {
		c.dropPages()
	}
	return nil
}

// FirstIndex implements raft.LogStore.
func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex implements raft.LogStore.
func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange implements raft.LogStore. Deleting rewrites the leaves it
// leaves half full, large values included: the pages are dropped after.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	c.cache = make([]*raft.Log, len(c.cache))
	c.mu.Unlock()
	err := c.store.DeleteRange(min, max)
	c.dropPages()
	return err
}

// Set implements raft.StableStore.
func (c *logCache) Set(key, val []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.stable.Set(key, val)
}

// Get implements raft.StableStore.
func (c *logCache) Get(key []byte) ([]byte, error) { return c.stable.Get(key) }

// SetUint64 implements raft.StableStore.
func (c *logCache) SetUint64(key []byte, val uint64) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return c.stable.SetUint64(key, val)
}

// GetUint64 implements raft.StableStore.
func (c *logCache) GetUint64(key []byte) (uint64, error) { return c.stable.GetUint64(key) }

// dropPages drops the map's resident pages; c.writeMu is held. A failure
// costs memory, not correctness: it is not reported.
func (c *logCache) dropPages() {
	if c.drop != nil {
		c.drop()
	}
}

// compacter is a log store that can shrink its file (package logstore).
type compacter interface {
	CompactIfWasteful(ctx context.Context, minFree int64) (logstore.Compaction, bool, error)
}

// compactIfWasteful compacts the store's file if it is mostly free pages,
// and says whether it did. The store replaces its file and so its map:
// that is a write here, serialised with dropping the map's pages, and the
// new map's pages the copy made resident are dropped after. The cached
// entries stay valid: the entries are the same.
func (c *logCache) compactIfWasteful(ctx context.Context, minFree int64) (logstore.Compaction, bool, error) {
	s, ok := c.store.(compacter)
	if !ok {
		return logstore.Compaction{}, false, nil
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	comp, done, err := s.CompactIfWasteful(ctx, minFree)
	if done {
		c.dropPages()
	}
	return comp, done, err
}
