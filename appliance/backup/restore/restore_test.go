package restore_test

import (
	"archive/tar"
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

	"filippo.io/age"
	"github.com/hashicorp/raft"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/restore"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// oldNode is the node of the cluster that was backed up: a real raft node
// and its store.
type oldNode struct {
	t       *testing.T
	dir     string
	node    *raftfsm.Node
	store   *storage.Store
	mailbox int64
	sent    int
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startOld(t *testing.T) *oldNode {
	t.Helper()
	o := &oldNode{t: t, dir: t.TempDir()}
	var err error
	if o.store, err = storage.Open(filepath.Join(o.dir, "sigillo.db")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if o.node, err = raftfsm.Open(ctx, raftfsm.Config{Dir: filepath.Join(o.dir, "raft"), NodeID: "n1", Bootstrap: true, Logger: quiet()}, o.store); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.stop)
	o.apply(&storage.AddDomain{Name: "example.test"})
	o.apply(&storage.AddMailbox{Address: "alice@example.test", PasswordHash: "x", At: 1})
	mb, err := o.store.MailboxByAddress(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	o.mailbox = mb.ID
	return o
}

func (o *oldNode) apply(c storage.Command) storage.Applied {
	o.t.Helper()
	a, err := o.node.Apply(context.Background(), c)
	if err != nil {
		o.t.Fatal(err)
	}
	return a
}

// deliver stores n messages in alice's INBOX.
func (o *oldNode) deliver(n int) {
	o.t.Helper()
	for range n {
		o.sent++
		o.apply(&storage.Deliver{Targets: []storage.Target{{MailboxID: o.mailbox}}, InternalDate: int64(o.sent),
			Data: []byte(fmt.Sprintf("Message-ID: <m%d@example.test>\r\nSubject: %d\r\n\r\nbody %d\r\n", o.sent, o.sent, o.sent))})
	}
}

func (o *oldNode) stop() {
	if o.node != nil {
		o.node.Close()
		o.store.Close()
		o.node = nil
	}
}

// backedUp is the scenario every test starts from: a node with 5
// messages, a snapshot of it, then 3 messages, a moment (cut), 2 more
// messages, and the log after the snapshot shipped in two sets (the
// second starting at the first of the last 2 messages' entries).
type backedUp struct {
	st   apptest.DirStore
	snap archive.Manifest
	logs []archive.Manifest
	cut  time.Time
	last uint64
}

func backup(t *testing.T) backedUp {
	t.Helper()
	o := startOld(t)
	b := backedUp{st: apptest.DirStore{Root: t.TempDir()}}
	o.deliver(5)
	b.snap = apptest.BackupSnapshot(t, b.st, filepath.Join(o.dir, "sigillo.db"), time.Now(), archive.Options{})
	o.deliver(3)
	time.Sleep(20 * time.Millisecond)
	b.cut = time.Now()
	time.Sleep(20 * time.Millisecond)
	split := o.apply(&storage.PutKV{Key: "marker", Value: []byte("after the cut")}).Index
	o.deliver(2)
	o.stop()
	_, last, appended := apptest.RaftLog(t, filepath.Join(o.dir, "raft"))
	if !appended[split].After(b.cut) || !appended[split-1].Before(b.cut) {
		t.Fatalf("the cut is not between entries %d and %d", split-1, split)
	}
	b.last = last
	b.logs = append(b.logs, apptest.ShipLog(t, b.st, filepath.Join(o.dir, "raft"), b.snap.Index+1, split-1))
	b.logs = append(b.logs, apptest.ShipLog(t, b.st, filepath.Join(o.dir, "raft"), split, last))
	t.Logf("backup: snapshot %s (%v), log sets %s and %s", b.snap.ID, b.snap.Counts, b.logs[0].ID, b.logs[1].ID)
	return b
}

// restored is a node started on a restored data directory, as serve
// starts it: the database and the raft directory in it.
type restored struct {
	t     *testing.T
	dir   string
	id    string
	trans *raft.InmemTransport
	node  *raftfsm.Node
	store *storage.Store
}

func openRestored(t *testing.T, dir, id string, connect ...*restored) *restored {
	t.Helper()
	r := &restored{t: t, dir: dir, id: id}
	var err error
	if r.store, err = storage.Open(filepath.Join(dir, restore.DatabaseFile)); err != nil {
		t.Fatal(err)
	}
	_, r.trans = raft.NewInmemTransport(raft.ServerAddress(id))
	for _, c := range connect {
		r.trans.Connect(raft.ServerAddress(c.id), c.trans)
		c.trans.Connect(raft.ServerAddress(id), r.trans)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// No Bootstrap: the restored directory has raft state, and a joining
	// node has none and waits to be added.
	if r.node, err = raftfsm.Open(ctx, raftfsm.Config{Dir: filepath.Join(dir, "raft"), NodeID: id, Transport: r.trans, Logger: quiet()}, r.store); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

func (r *restored) close() {
	if r.node != nil {
		r.node.Close()
		r.store.Close()
		r.node = nil
	}
}

func (r *restored) messages() int {
	r.t.Helper()
	ctx := context.Background()
	mb, err := r.store.MailboxByAddress(ctx, "alice@example.test")
	if err != nil {
		r.t.Fatal(err)
	}
	f, err := r.store.FolderByName(ctx, mb.ID, "INBOX")
	if err != nil {
		r.t.Fatal(err)
	}
	ms, err := r.store.Messages(ctx, f.ID)
	if err != nil {
		r.t.Fatal(err)
	}
	return len(ms)
}

// The whole backup restores into a new directory: the snapshot's 5
// messages and the log's 5 after it; the node started on it leads its
// one-node cluster, a write after the restore gets an index after the
// restored ones and survives a restart, and a second node that joins has
// all of it.
func TestARestoredDirectoryStartsAOneNodeClusterOthersJoin(t *testing.T) {
	ctx := context.Background()
	b := backup(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	rep, err := restore.Restore(ctx, restore.Options{From: b.st, DataDir: dataDir, NodeID: "r1", RaftAddr: "r1", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	if rep.Snapshot != b.snap.ID || rep.Index != b.snap.Index || rep.FinalIndex != b.last || rep.LogSets != 2 || rep.LogEnd != "end" ||
		rep.LogEntries != int(b.last-b.snap.Index) || rep.Counts["messages"] != 10 {
		t.Fatalf("report %+v: want snapshot %s at %d, 2 log sets to the end at %d, 10 messages", rep, b.snap.ID, b.snap.Index, b.last)
	}
	for name, mode := range map[string]os.FileMode{".": 0o700, "sigillo.db": 0o600, "node-id": 0o600} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v (want mode %v)", name, fi.Mode(), err, mode)
		}
	}

	r1 := openRestored(t, dataDir, "r1")
	if !r1.node.IsLeader() {
		t.Fatal("the restored node does not lead")
	}
	if n := r1.messages(); n != 10 {
		t.Fatalf("the restored node has %d messages, want 10", n)
	}
	a, err := r1.node.Apply(ctx, &storage.AddDomain{Name: "after.test"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Index <= b.last {
		t.Fatalf("a write after the restore got index %d, not after the restored %d", a.Index, b.last)
	}
	r1.close()
	r1 = openRestored(t, dataDir, "r1")
	if ok, _ := r1.store.IsLocalDomain(ctx, "after.test"); !ok {
		t.Fatal("the write after the restore is lost across a restart")
	}
	t.Logf("a write after the restore got index %d (> %d) and survived a restart", a.Index, b.last)

	r2 := openRestored(t, t.TempDir(), "r2", r1)
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r1.node.AddVoter(jctx, "r2", "r2"); err != nil {
		t.Fatal(err)
	}
	a, err = r1.node.Apply(ctx, &storage.AddDomain{Name: "joined.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.node.WaitApplied(jctx, a.Index); err != nil {
		t.Fatal(err)
	}
	if n := r2.messages(); n != 10 {
		t.Fatalf("the joined node has %d messages, want 10", n)
	}
	if ok, _ := r2.store.IsLocalDomain(ctx, "after.test"); !ok {
		t.Fatal("the joined node lacks the write made after the restore")
	}
	t.Log("r2 joined r1 and has the 10 messages and the later writes")
}

// With At, only the entries appended at or before it are replayed: the
// 3 messages before the cut, not the 2 after it.
func TestRestoreAtATimeStopsTheLogThere(t *testing.T) {
	ctx := context.Background()
	b := backup(t)
	rep, err := restore.Restore(ctx, restore.Options{From: b.st, At: b.cut, DataDir: filepath.Join(t.TempDir(), "data"), NodeID: "r1", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	if rep.LogEnd != "at" || rep.Counts["messages"] != 8 || rep.FinalIndex != b.logs[1].FirstIndex-1 {
		t.Fatalf("restored to %s with %d messages at %d; want 8 messages, stopped at the cut (%d)", rep.LogEnd, rep.Counts["messages"],
			rep.FinalIndex, b.logs[1].FirstIndex-1)
	}
	r := openRestored(t, rep.DataDir, "r1")
	if kv, _ := r.store.KV(ctx, "marker"); kv != nil {
		t.Fatal("the entry after the cut was applied")
	}
	a, err := r.node.Apply(ctx, &storage.PutKV{Key: "new", Value: []byte("x")})
	if err != nil || a.Index <= rep.FinalIndex {
		t.Fatalf("first write at %d (%v), want after %d", a.Index, err, rep.FinalIndex)
	}

	// At before the snapshot: no snapshot qualifies.
	_, err = restore.Restore(ctx, restore.Options{From: b.st, At: b.snap.Time.Add(-time.Hour), DataDir: filepath.Join(t.TempDir(), "data"), Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "no snapshot") {
		t.Fatalf("At before every snapshot: %v", err)
	}
	t.Log(err)
}

// A log set missing: the replay stops at the gap, says so, and applies
// nothing after it.
func TestAGapInTheLogStopsTheReplayAndIsReported(t *testing.T) {
	ctx := context.Background()
	b := backup(t)
	if err := archive.DeleteSet(ctx, b.st, b.logs[0]); err != nil {
		t.Fatal(err)
	}
	rep, err := restore.Restore(ctx, restore.Options{From: b.st, DataDir: filepath.Join(t.TempDir(), "data"), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("log end: %s", rep.LogEnd)
	if !strings.HasPrefix(rep.LogEnd, "gap") || !strings.Contains(rep.LogEnd, fmt.Sprint(b.snap.Index+1)) || rep.LogEntries != 0 ||
		rep.Counts["messages"] != 5 || rep.FinalIndex != b.snap.Index {
		t.Fatalf("report %+v: want a gap at %d, the snapshot's 5 messages only", rep, b.snap.Index+1)
	}
}

// A data directory that is not empty is refused and left as it was.
func TestANonEmptyDataDirectoryIsRefusedAndUntouched(t *testing.T) {
	ctx := context.Background()
	b := backup(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dataDir, "sigillo.db")
	if err := os.WriteFile(keep, []byte("the live database"), 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := restore.Restore(ctx, restore.Options{From: b.st, DataDir: dataDir, Logger: quiet()})
	if !errors.Is(err, restore.ErrNotEmpty) {
		t.Fatalf("restore into a non-empty directory: %v", err)
	}
	t.Log(err)
	entries, _ := os.ReadDir(dataDir)
	got, _ := os.ReadFile(keep)
	if len(entries) != 1 || string(got) != "the live database" {
		t.Fatalf("the directory was changed: %d entries, %q", len(entries), got)
	}
	siblings, _ := os.ReadDir(filepath.Dir(dataDir))
	if len(siblings) != 1 {
		t.Fatalf("something was left beside the data directory: %v", siblings)
	}

	// An empty directory is fine (and keeps its place).
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Restore(ctx, restore.Options{From: b.st, DataDir: empty, Logger: quiet()}); err != nil {
		t.Fatalf("restore into an empty directory: %v", err)
	}
}

// flip changes one byte in the middle of a stored object.
func flip(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A flipped byte in the stored database is refused, naming the snapshot
// and the part, and leaves no data directory (nor anything beside it);
// Verify finds it too. A flipped byte in a log set is refused the same
// way, naming that set.
func TestAFlippedByteIsRefusedNamingThePart(t *testing.T) {
	ctx := context.Background()
	b := backup(t)
	flip(t, b.st.Path("snapshots/"+b.snap.ID+"/sigillo.db"))
	parent := t.TempDir()
	dataDir := filepath.Join(parent, "data")
	_, err := restore.Restore(ctx, restore.Options{From: b.st, DataDir: dataDir, Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "sigillo.db") || !strings.Contains(err.Error(), b.snap.ID) {
		t.Fatalf("restore of a damaged snapshot: %v", err)
	}
	t.Log(err)
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Fatalf("a failed restore left %v", left)
	}
	rep, err := restore.Verify(ctx, b.st, b.snap.ID, nil)
	if !errors.Is(err, restore.ErrVerify) || !strings.Contains(err.Error(), "part sigillo.db") {
		t.Fatalf("verify of a damaged snapshot: %v", err)
	}
	for _, c := range rep.Checks {
		t.Logf("verify: %-18s %-5v %s", c.Name, c.OK, c.Detail)
	}

	c := backup(t)
	flip(t, c.st.Path("logs/"+c.logs[1].ID+"/entries"))
	_, err = restore.Restore(ctx, restore.Options{From: c.st, DataDir: dataDir, Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "entries") || !strings.Contains(err.Error(), c.logs[1].ID) {
		t.Fatalf("restore with a damaged log set: %v", err)
	}
	t.Log(err)
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Fatalf("a failed restore left %v", left)
	}
}

// Verify of a good snapshot: every check passes and is reported.
func TestVerifyReportsEveryCheck(t *testing.T) {
	b := backup(t)
	rep, err := restore.Verify(context.Background(), b.st, b.snap.ID, nil)
	for _, c := range rep.Checks {
		t.Logf("verify: %-18s %-5v %s", c.Name, c.OK, c.Detail)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"manifest", "signature", "part sigillo.db", "restore", "open", "integrity", "counts", "legal log", "raft seed"}
	if len(rep.Checks) != len(want) {
		t.Fatalf("checks %+v, want %v", rep.Checks, want)
	}
	for i, c := range rep.Checks {
		if c.Name != want[i] || !c.OK {
			t.Fatalf("check %d: %+v, want %s ok", i, c, want[i])
		}
	}
	if rep.Counts["messages"] != 5 || rep.FinalIndex != b.snap.Index {
		t.Fatalf("verify restored %v at %d: want the snapshot alone (5 messages at %d)", rep.Counts, rep.FinalIndex, b.snap.Index)
	}
}

// An encrypted backup with its secrets: restored with the identity, the
// secret files are in the data directory (0600); without it, a clear
// refusal and nothing made.
func TestAnEncryptedBackupRestoresItsSecrets(t *testing.T) {
	ctx := context.Background()
	o := startOld(t)
	o.deliver(2)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("-----BEGIN EC PRIVATE KEY-----\nnot really\n-----END EC PRIVATE KEY-----\n")
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "var/lib/sigillo/acme-storage.key", Size: int64(len(key)), Mode: 0o600})
	tw.Write(key)
	tw.Close()
	st := apptest.DirStore{Root: t.TempDir()}
	secrets := archive.Source{Name: "secrets.tar", Kind: "secrets", Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBuf.Bytes())), nil
	}}
	m := apptest.BackupSnapshot(t, st, filepath.Join(o.dir, "sigillo.db"), time.Now(), archive.Options{Recipients: []age.Recipient{id.Recipient()}}, secrets)
	if !m.Encrypted {
		t.Fatal("not encrypted")
	}

	parent := t.TempDir()
	_, err = restore.Restore(ctx, restore.Options{From: st, DataDir: filepath.Join(parent, "data"), Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("restore without the identity: %v", err)
	}
	t.Log(err)
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Fatalf("a failed restore left %v", left)
	}

	rep, err := restore.Restore(ctx, restore.Options{From: st, Identities: []age.Identity{id}, DataDir: filepath.Join(parent, "data"), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(parent, "data", "acme-storage.key")
	got, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || !bytes.Equal(got, key) || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret restored: %q, %v, mode %v", got, err, fi.Mode())
	}
	t.Logf("secrets: %v; counts %v", rep.Secrets, rep.Counts)
}
