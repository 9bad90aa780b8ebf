package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"sigillo/storage"
)

// Three nodes form a cluster through AddVoter; a follower refuses changes
// of membership, adding a voter twice changes nothing, a follower waits
// for the index the leader applied and then reads the command, and a
// removed follower leaves the configuration.
func TestAClusterFormsThroughAddVoterAndFollowersCatchUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms := newClusterOf(t, 3, Config{}, nil).members
	leader, follower := ms[0].node, ms[1].node

	servers, err := leader.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("servers: %+v, %v", servers, err)
	}
	for _, s := range servers {
		if !s.Voter {
			t.Fatalf("%s is not a voter: %+v", s.ID, servers)
		}
	}
	if id, addr := follower.Leader(); id != "n1" || addr != "n1" {
		t.Fatalf("the follower sees leader %q at %q", id, addr)
	}

	before := leader.raft.GetConfiguration().Index()
	if err := leader.AddVoter(ctx, "n2", "n2"); err != nil {
		t.Fatalf("adding n2 again: %v", err)
	}
	if after := leader.raft.GetConfiguration().Index(); after != before {
		t.Fatalf("adding n2 again changed the configuration (index %d → %d)", before, after)
	}
	// n2 moves (to an address nobody answers, then back).
	for _, addr := range []string{"n2b", "n2"} {
		if err := leader.AddVoter(ctx, "n2", addr); err != nil {
			t.Fatalf("moving n2 to %s: %v", addr, err)
		}
		servers, _ := leader.Servers()
		if s := servers[1]; s.ID != "n2" || s.Address != addr || !s.Voter || len(servers) != 3 {
			t.Fatalf("after moving n2 to %s: %+v", addr, servers)
		}
	}
	if err := leader.AddVoter(ctx, "n9", "n2"); err == nil {
		t.Fatal("n9 was added at n2's address")
	}
	if err := follower.AddVoter(ctx, "n4", "n4"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddVoter on a follower: %v, want ErrNotLeader", err)
	}
	if err := follower.RemoveServer(ctx, "n3"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("RemoveServer on a follower: %v, want ErrNotLeader", err)
	}
	if err := leader.RemoveServer(ctx, "n7"); !errors.Is(err, ErrNoSuchServer) {
		t.Fatalf("removing an unknown server: %v, want ErrNoSuchServer", err)
	}

	a, err := leader.Apply(ctx, &storage.AddDomain{Name: "seen.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitApplied(ctx, a.Index); err != nil {
		t.Fatal(err)
	}
	if got := follower.AppliedIndex(); got < a.Index {
		t.Fatalf("applied %d after waiting for %d", got, a.Index)
	}
	if ds, err := ms[1].store.Domains(ctx); err != nil || len(ds) != 1 || ds[0].Name != "seen.test" {
		t.Fatalf("the follower applied index %d but has domains %+v (%v)", a.Index, ds, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := follower.WaitApplied(short, a.Index+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for an index never written: %v", err)
	}

	if err := leader.RemoveServer(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	if servers, _ := leader.Servers(); len(servers) != 2 {
		t.Fatalf("after removing n3: %+v", servers)
	}
}

// A node that stops ends the waits on it with ErrUnavailable.
func TestWaitAppliedEndsWhenTheNodeStops(t *testing.T) {
	ms := newClusterOf(t, 1, Config{}, nil).members
	n := ms[0].node
	done := make(chan error, 1)
	go func() { done <- n.WaitApplied(context.Background(), n.AppliedIndex()+100) }()
	time.Sleep(50 * time.Millisecond)
	n.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("wait on a stopped node: %v, want ErrUnavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end when the node stopped")
	}
}

// The applied index of a restarted node is the store's, before any new
// command.
func TestAppliedIndexStartsAtTheStores(t *testing.T) {
	dir := t.TempDir()
	n, store := openNode(t, dir, Config{})
	a, err := n.Apply(context.Background(), &storage.AddDomain{Name: "x.test"})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	store.Close()
	n, store = openNode(t, dir, Config{})
	defer store.Close()
	defer n.Close()
	if got := n.AppliedIndex(); got < a.Index {
		t.Fatalf("applied index %d after a restart, want at least %d", got, a.Index)
	}
	if err := n.WaitApplied(context.Background(), a.Index); err != nil {
		t.Fatal(err)
	}
}

// A follower that was cut off while the leader truncated its log gets a
// snapshot: its applied index becomes the snapshot's, and a wait for the
// last command returns though no command comes after it.
func TestAFollowerCatchesUpFromASnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms := newClusterOf(t, 3, Config{TrailingLogs: 2, TrailingBytes: 1}, nil).members
	n1, n3 := ms[0], ms[2]
	n1.trans.Disconnect(n3.trans.LocalAddr())
	var last uint64
	for i := range 20 {
		a, err := n1.node.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)})
		if err != nil {
			t.Fatal(err)
		}
		last = a.Index
	}
	if err := n1.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first, _ := n1.node.logStore.FirstIndex(); first == 1 {
		t.Fatal("the log was not truncated")
	}
	if got := n3.node.AppliedIndex(); got >= last {
		t.Fatalf("n3 applied %d while cut off", got)
	}
	n1.trans.Connect(n3.trans.LocalAddr(), n3.trans)
	if err := n3.node.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	if ds, _ := n3.store.Domains(ctx); len(ds) != 20 {
		t.Fatalf("n3 has %d domains after the snapshot, want 20", len(ds))
	}
	t.Logf("n3 applied index %d from the snapshot (last command %d)", n3.node.AppliedIndex(), last)
}
