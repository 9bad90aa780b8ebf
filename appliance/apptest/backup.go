package apptest

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/backup/archive"
	"sigillo/raftfsm/logstore"
	"sigillo/storage"
)

// BackupSnapshot writes a snapshot set of the database at dbPath to st as
// the backup job does: a consistent copy (storage.Store.Snapshot; the
// database may be a running server's), with its applied index and counts
// in the manifest, taken at the time at. extra parts (a secrets tar, say)
// are added to the set.
func BackupSnapshot(t testing.TB, st archive.Store, dbPath string, at time.Time, opt archive.Options, extra ...archive.Source) archive.Manifest {
	t.Helper()
	ctx := context.Background()
	live, err := storage.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "sigillo.db")
	err = live.Snapshot(ctx, copyPath)
	live.Close()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := storage.Open(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	index, err := cp.AppliedIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := cp.Counts(ctx)
	cp.Close()
	if err != nil {
		t.Fatal(err)
	}
	m := archive.Manifest{Kind: archive.KindSnapshot, ID: archive.SnapshotID(at, index), Time: at.UTC(), Index: index,
		Version: "test", Schema: storage.SchemaVersion(), Node: "n1", Counts: counts}
	parts := append([]archive.Source{{Name: "sigillo.db", Kind: "database", Open: func(context.Context) (io.ReadCloser, error) {
		return os.Open(copyPath)
	}}}, extra...)
	m, err = archive.Write(ctx, st, m, parts, opt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ShipLog writes a log set of the entries first to last of the raft log
// in raftDir (a stopped node's: raft.db is locked while it runs), as the
// backup job ships them.
func ShipLog(t testing.TB, st archive.Store, raftDir string, first, last uint64) archive.Manifest {
	t.Helper()
	ctx := context.Background()
	ls, err := logstore.Open(ctx, filepath.Join(raftDir, "raft.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	var buf bytes.Buffer
	w := archive.NewEntryWriter(&buf)
	var at time.Time
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := ls.GetLog(i, &l); err != nil {
			t.Fatalf("raft log entry %d: %v", i, err)
		}
		if err := w.Write(archive.Entry{Index: l.Index, Term: l.Term, Type: uint8(l.Type), AppendedAt: l.AppendedAt, Data: l.Data}); err != nil {
			t.Fatal(err)
		}
		at = l.AppendedAt
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	m := archive.Manifest{Kind: archive.KindLog, ID: archive.LogID(first, last), Time: at.UTC(), Index: last, FirstIndex: first,
		Version: "test", Schema: storage.SchemaVersion(), Node: "n1"}
	m, err = archive.Write(ctx, st, m, []archive.Source{{Name: "entries", Kind: "log", Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}}}, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// RaftLog is the first and last index of the raft log in raftDir (a
// stopped node's), and each entry's AppendedAt.
func RaftLog(t testing.TB, raftDir string) (first, last uint64, appended map[uint64]time.Time) {
	t.Helper()
	ls, err := logstore.Open(context.Background(), filepath.Join(raftDir, "raft.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if first, err = ls.FirstIndex(); err != nil {
		t.Fatal(err)
	}
	if last, err = ls.LastIndex(); err != nil {
		t.Fatal(err)
	}
	appended = map[uint64]time.Time{}
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := ls.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		appended[i] = l.AppendedAt
	}
	return first, last, appended
}

// DirStore is a backup target on a directory for tests (Put: temp file,
// fsync, rename), until target.File is there to use.
type DirStore struct{ Root string }

func (d DirStore) String() string { return "file://" + filepath.ToSlash(d.Root) }

// Path is where the object name is stored.
func (d DirStore) Path(name string) string { return filepath.Join(d.Root, filepath.FromSlash(name)) }

// Put implements archive.Store.
func (d DirStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	p := d.Path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	return n, err
}

// Get implements archive.Store.
func (d DirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	return os.Open(d.Path(name))
}

// List implements archive.Store.
func (d DirStore) List(_ context.Context, prefix string, fn func(string, int64) error) error {
	type obj struct {
		name string
		size int64
	}
	var objs []obj
	err := filepath.WalkDir(d.Root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || strings.HasPrefix(e.Name(), ".put-") {
			return err
		}
		rel, _ := filepath.Rel(d.Root, p)
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		objs = append(objs, obj{name, info.Size()})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(objs, func(a, b obj) int { return strings.Compare(a.name, b.name) })
	for _, o := range objs {
		if err := fn(o.name, o.size); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements archive.Store.
func (d DirStore) Delete(_ context.Context, name string) error {
	err := os.Remove(d.Path(name))
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
