package raftfsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigillo/storage"
)

// oldClusterCopy runs a one-node cluster, writes count domains, and
// returns a consistent copy of its database (as a backup takes it) and
// that copy's applied index.
func oldClusterCopy(t *testing.T, count int) (string, uint64) {
	t.Helper()
	ctx := context.Background()
	n, store := openNode(t, t.TempDir(), Config{})
	defer store.Close()
	defer n.Close()
	for i := range count {
		if _, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("old%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := store.Snapshot(ctx, path); err != nil {
		t.Fatal(err)
	}
	copied, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Close()
	applied, err := copied.AppliedIndex(ctx)
	if err != nil || applied < uint64(count) {
		t.Fatalf("copy's applied index %d (%v), want at least %d", applied, err, count)
	}
	return path, applied
}

// restoredMember is a member whose data directory holds the copy as its
// database.
func restoredMember(t *testing.T, id, copyPath string) *member {
	t.Helper()
	m := &member{id: id, dir: t.TempDir()}
	copyFile(t, copyPath, filepath.Join(m.dir, "sigillo.db"))
	s, err := storage.Open(filepath.Join(m.dir, "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	m.store = s
	t.Cleanup(m.close)
	return m
}

func domainCount(t *testing.T, s *storage.Store) int {
	t.Helper()
	ds, err := s.Domains(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(ds)
}

// A database copied from a running cluster at applied index N, seeded as
// a raft snapshot at N, starts as a one-node cluster whose log goes on
// after N: a write after the restore is applied and survives a restart,
// and a second node that joins gets the whole state. Bootstrapped on a
// fresh log instead, the same write would be acknowledged and skipped
// ("already applied"): the control case shows that loss.
func TestASeededDatabaseStartsAClusterThatContinuesAfterItsIndex(t *testing.T) {
	ctx := context.Background()
	copyPath, n := oldClusterCopy(t, 40)
	t.Logf("the copy holds 40 domains at applied index %d", n)

	// The pitfall, for the record: a fresh log's first entries are at or
	// below N, and the store skips them.
	fresh := restoredMember(t, "fresh", copyPath)
	fresh.open(t, Config{Dir: filepath.Join(fresh.dir, "raft"), NodeID: "fresh", Bootstrap: true, Logger: quiet()})
	a, err := fresh.node.Apply(ctx, &storage.AddDomain{Name: "lost.test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := domainCount(t, fresh.store); got != 40 || a.Index > n {
		t.Fatalf("control case: fresh log wrote at index %d (N %d) and the store has %d domains; expected the write skipped", a.Index, n, got)
	}
	t.Logf("control: on a fresh log the write got index %d <= %d and was skipped (40 domains, not 41)", a.Index, n)
	fresh.close()

	// Seeded: the same copy, a raft snapshot at N.
	r := restoredMember(t, "r1", copyPath)
	if err := Seed(ctx, filepath.Join(r.dir, "raft"), r.id, string(r.addr()), r.store, n, 1); err != nil {
		t.Fatal(err)
	}
	joiner := &member{id: "r2", dir: t.TempDir()}
	t.Cleanup(joiner.close)
	rcfg, jcfg := r.config(Config{}), joiner.config(Config{})
	r.trans.Connect(joiner.addr(), joiner.trans)
	joiner.trans.Connect(r.addr(), r.trans)
	r.open(t, rcfg)
	if !r.node.IsLeader() {
		t.Fatal("the seeded node does not lead its one-node cluster")
	}
	if got := domainCount(t, r.store); got != 40 {
		t.Fatalf("restored store has %d domains, want 40", got)
	}
	a, err = r.node.Apply(ctx, &storage.AddDomain{Name: "after.test"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Index <= n {
		t.Fatalf("the first write after the restore got index %d, not after the seed index %d", a.Index, n)
	}
	if got := domainCount(t, r.store); got != 41 {
		t.Fatalf("after a write the store has %d domains, want 41", got)
	}
	t.Logf("seeded: the first write got index %d > %d and is in the store", a.Index, n)

	// A restart keeps it (the database is not restored over by the seed
	// snapshot, nor the log replayed into nothing).
	r.node.Close()
	r.node = nil
	rcfg = r.config(Config{})
	r.trans.Connect(joiner.addr(), joiner.trans)
	joiner.trans.Connect(r.addr(), r.trans)
	r.open(t, rcfg)
	if got := domainCount(t, r.store); got != 41 {
		t.Fatalf("after a restart the store has %d domains, want 41", got)
	}

	// A second node joins from nothing: it receives the seed snapshot and
	// the log after it.
	joiner.open(t, jcfg)
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r.node.AddVoter(jctx, joiner.id, string(joiner.addr())); err != nil {
		t.Fatal(err)
	}
	a, err = r.node.Apply(ctx, &storage.AddDomain{Name: "joined.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := joiner.node.WaitApplied(jctx, a.Index); err != nil {
		t.Fatal(err)
	}
	if got := domainCount(t, joiner.store); got != 42 {
		t.Fatalf("the joined node has %d domains, want 42", got)
	}
	servers, err := r.node.Servers()
	if err != nil || len(servers) != 2 {
		t.Fatalf("membership %+v, %v", servers, err)
	}
	t.Logf("r2 joined and holds the 42 domains (applied %d)", joiner.node.AppliedIndex())
}

// Seed refuses a directory that already holds raft state, and a seed
// index below what the database has applied.
func TestSeedRefusesExistingStateAndAnIndexBehindTheDatabase(t *testing.T) {
	ctx := context.Background()
	copyPath, n := oldClusterCopy(t, 3)
	r := restoredMember(t, "r1", copyPath)
	dir := filepath.Join(r.dir, "raft")
	if err := Seed(ctx, dir, "r1", "", r.store, n-1, 1); err == nil {
		t.Fatal("seeded below the database's applied index")
	} else {
		t.Log(err)
	}
	if err := Seed(ctx, dir, "r1", "", r.store, n, 1); err != nil {
		t.Fatal(err)
	}
	if err := Seed(ctx, dir, "r1", "", r.store, n, 1); err == nil {
		t.Fatal("seeded a directory with raft state")
	} else {
		t.Log(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
