package backup_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/backup"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
	"sigillo/storage"
)

// node is a one-node "cluster" for the tests: a real storage.Store to which
// commands are applied one log index after the other, as the raft FSM
// does, with the log of those entries kept in memory. It is the
// backup.Source the job is given.
type node struct {
	t     testing.TB
	store *storage.Store

	mu      sync.Mutex
	log     []archive.Entry // entries from index first on
	first   uint64          // index of log[0]; entries before it are gone (compacted)
	applied uint64
}

func newNode(t testing.TB) *node {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "data", "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &node{t: t, store: s, first: 1}
}

// apply applies cmds in one batch, each at the next index, and logs them.
func (n *node) apply(cmds ...storage.Command) []storage.Result {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	entries := make([]storage.Entry, len(cmds))
	for i, c := range cmds {
		data, err := storage.Encode(c)
		if err != nil {
			n.t.Fatal(err)
		}
		entries[i] = storage.Entry{Index: n.applied + uint64(i) + 1, Data: data}
	}
	res, err := n.store.Apply(context.Background(), entries)
	if err != nil {
		n.t.Fatal(err)
	}
	for i, e := range entries {
		if res[i].Err != nil {
			n.t.Fatalf("%s: %v", cmds[i].Op(), res[i].Err)
		}
		n.log = append(n.log, archive.Entry{Index: e.Index, Term: 1, Type: 0, AppendedAt: time.Now(), Data: e.Data})
	}
	n.applied += uint64(len(cmds))
	return res
}

// compact forgets the log up to the applied index, as raft does after a
// snapshot of its own.
func (n *node) compact() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.log, n.first = nil, n.applied+1
}

func (n *node) Snapshot(ctx context.Context, path string) (uint64, error) {
	v, err := n.store.Freeze(ctx)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	idx, err := v.AppliedIndex(ctx)
	if err != nil {
		return 0, err
	}
	return idx, v.CopyTo(ctx, path)
}

func (n *node) AppliedIndex(ctx context.Context) (uint64, error) {
	return n.store.AppliedIndex(ctx)
}

func (n *node) LogEntries(ctx context.Context, from uint64, fn func(archive.Entry) error) error {
	n.mu.Lock()
	log, first := n.log, n.first
	n.mu.Unlock()
	if from < first {
		return fmt.Errorf("entries from %d (the log starts at %d): %w", from, first, backup.ErrLogGone)
	}
	for _, e := range log[from-first:] {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// mailDomain adds a domain with two mailboxes and delivers n messages to
// the first; it returns the first mailbox's id.
func (n *node) mailDomain(domain string, messages int) int64 {
	n.t.Helper()
	n.apply(&storage.AddDomain{Name: domain, At: 1})
	res := n.apply(
		&storage.AddMailbox{Address: "alice@" + domain, PasswordHash: "h", At: 1},
		&storage.AddMailbox{Address: "bob@" + domain, PasswordHash: "h", At: 1},
	)
	id := res[0].Value.(int64)
	n.deliver(id, messages)
	return id
}

func (n *node) deliver(mailbox int64, messages int) {
	n.t.Helper()
	for i := 0; i < messages; i++ {
		n.apply(&storage.Deliver{Targets: []storage.Target{{MailboxID: mailbox}},
			Data: fmt.Appendf(nil, "Subject: message %d at %d\r\n\r\nbody\r\n", i, time.Now().UnixNano()), InternalDate: 5})
	}
}

// fileTarget is a backup target in a new directory of the test.
type fileTarget struct {
	dir   string
	store archive.Store
}

func newFileTarget(t testing.TB) *fileTarget {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "backup")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := target.Open("file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return &fileTarget{dir: dir, store: st}
}

// breakIt puts a file where the target's directory was: every write fails.
func (f *fileTarget) breakIt(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.dir, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fix gives the target its (empty) directory back.
func (f *fileTarget) fix(t testing.TB) {
	t.Helper()
	if err := os.Remove(f.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// snapshots are the complete snapshot sets on st, oldest first.
func snapshots(t testing.TB, st archive.Store) []archive.Manifest {
	t.Helper()
	ms, err := archive.Sets(context.Background(), st, archive.KindSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func logSets(t testing.TB, st archive.Store) []archive.Manifest {
	t.Helper()
	ms, err := archive.Sets(context.Background(), st, archive.KindLog)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// eventually waits up to 10 s for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: not %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runJob runs b.Run until the test ends (or stop is called).
func runJob(t testing.TB, b *backup.Backuper) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func equalCounts(a, b map[string]int64) bool { return maps.Equal(a, b) }

func equalIndexes(a, b []uint64) bool { return slices.Equal(a, b) }

// fillIncompressible fills b with bytes zstd cannot shrink, different for
// every seed.
func fillIncompressible(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 42))
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
