package raftfsm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// openAs opens the node in dir with the bootstrap decision given, and
// says how long Open took.
func openAs(t *testing.T, dir string, bootstrap bool) (*Node, *storage.Store, time.Duration) {
	t.Helper()
	store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	n, err := Open(ctx, Config{Dir: filepath.Join(dir, "raft"), NodeID: "node1", Bootstrap: bootstrap,
		// The failed votes for the absent node2 would fill the output.
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, store)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	return n, store, time.Since(start)
}

// staysFollower checks for a while that n does not lead and that a
// command is refused with ErrNotLeader, not taken for "unavailable".
func staysFollower(t *testing.T, n *Node, d time.Duration) {
	t.Helper()
	// Elections come every 50 to 100 ms here: d sees many of them.
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if n.IsLeader() {
			t.Fatalf("the node elected itself (%s)", n.Stats()["state"])
		}
	}
	_, err := n.Apply(context.Background(), &storage.AddDomain{Name: "refused.test"})
	if !errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("apply on a node that does not lead: %v, want ErrNotLeader only", err)
	}
	t.Logf("after %v: state %s, term %s, apply: %v", d, n.Stats()["state"], n.Stats()["term"], err)
}

// A node that has data and whose raft configuration names a second server
// (added while the second server was down) restarts: with or without the
// bootstrap decision it does not elect itself, since it alone is no
// quorum. Open returns once raft runs, the database is kept, and commands
// are refused with ErrNotLeader until a leader is there.
func TestANodeWithStateAndAbsentPeersWaitsForALeader(t *testing.T) {
	dir := t.TempDir()
	n, store, took := openAs(t, dir, true)
	t.Logf("bootstrapped and elected itself in %v", took)
	a, err := n.Apply(context.Background(), &storage.AddDomain{Name: "kept.test"})
	if err != nil || a.Index == 0 {
		t.Fatalf("apply as leader: %+v, %v", a, err)
	}
	b, err := n.Apply(context.Background(), &storage.AddDomain{Name: "kept2.test"})
	if err != nil || b.Index <= a.Index {
		t.Fatalf("second apply: index %d after %d, %v", b.Index, a.Index, err)
	}
	// node2 joins the configuration but never answers: the change cannot
	// commit and the leader, out of touch with a quorum, steps down.
	add := n.raft.AddVoter("node2", "node2:7000", 0, time.Second)
	done := make(chan error, 1)
	go func() { done <- add.Error() }()
	select {
	case err := <-done:
		t.Logf("adding node2: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("adding node2 neither committed nor failed")
	}
	n.Close()
	store.Close()

	for _, bootstrap := range []bool{false, true} {
		n, store, took = openAs(t, dir, bootstrap)
		t.Logf("bootstrap=%v: Open returned in %v without a leader", bootstrap, took)
		if ds, err := store.Domains(context.Background()); err != nil || len(ds) != 2 {
			t.Fatalf("the database lost what was committed: %+v, %v", ds, err)
		}
		conf := n.raft.GetConfiguration()
		if err := conf.Error(); err != nil || len(conf.Configuration().Servers) != 2 {
			t.Fatalf("configuration: %+v, %v", conf.Configuration(), err)
		}
		staysFollower(t, n, 1500*time.Millisecond)
		n.Close()
		store.Close()
	}
}

// A node with no raft state and no bootstrap (a node that is to join a
// cluster) starts without leading and without electing itself.
func TestANewNodeWithoutBootstrapDoesNotLead(t *testing.T) {
	n, store, took := openAs(t, t.TempDir(), false)
	defer store.Close()
	defer n.Close()
	t.Logf("Open returned in %v", took)
	staysFollower(t, n, time.Second)
	if st := n.raft.State(); st != raft.Follower {
		t.Fatalf("state %s, want a follower waiting to be added", st)
	}
}
