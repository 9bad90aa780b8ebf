package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// voter is one node of an in-process cluster.
type voter struct {
	id    string
	node  *Node
	store *storage.Store
	trans *raft.InmemTransport
}

// openVoters starts n nodes connected by in-memory transports: the first
// bootstraps, the others are added through AddVoter.
func openVoters(t *testing.T, n int) []*voter {
	t.Helper()
	return openVotersWith(t, n, Config{})
}

// openVotersWith is openVoters with cfg for every node.
func openVotersWith(t *testing.T, n int, cfg Config) []*voter {
	t.Helper()
	trans := make([]*raft.InmemTransport, n)
	for i := range trans {
		_, trans[i] = raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("addr-%d", i+1)))
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	ms := make([]*voter, n)
	for i := range ms {
		dir := t.TempDir()
		store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("n%d", i+1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c := cfg
		c.Dir, c.NodeID, c.Bootstrap, c.Transport = filepath.Join(dir, "raft"), id, i == 0, trans[i]
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		node, err := Open(ctx, c, store)
		cancel()
		if err != nil {
			store.Close()
			t.Fatal(err)
		}
		ms[i] = &voter{id: id, node: node, store: store, trans: trans[i]}
		t.Cleanup(func() {
			node.Close()
			store.Close()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, m := range ms[1:] {
		if err := ms[0].node.AddVoter(ctx, m.id, string(trans[i+1].LocalAddr())); err != nil {
			t.Fatalf("add %s: %v", m.id, err)
		}
	}
	return ms
}

// Three nodes form a cluster through AddVoter; a follower refuses changes
// of membership, adding a voter twice changes nothing, a follower waits
// for the index the leader applied and then reads the command, and a
// removed follower leaves the configuration.
func TestAClusterFormsThroughAddVoterAndFollowersCatchUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms := openVoters(t, 3)
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
	if id, addr := follower.Leader(); id != "n1" || addr != "addr-1" {
		t.Fatalf("the follower sees leader %q at %q", id, addr)
	}

	before := leader.raft.GetConfiguration().Index()
	if err := leader.AddVoter(ctx, "n2", "addr-2"); err != nil {
		t.Fatalf("adding n2 again: %v", err)
	}
	if after := leader.raft.GetConfiguration().Index(); after != before {
		t.Fatalf("adding n2 again changed the configuration (index %d → %d)", before, after)
	}
	// n2 moves (to an address nobody answers, then back).
	for _, addr := range []string{"addr-2b", "addr-2"} {
		if err := leader.AddVoter(ctx, "n2", addr); err != nil {
			t.Fatalf("moving n2 to %s: %v", addr, err)
		}
		servers, _ := leader.Servers()
		if s := servers[1]; s.ID != "n2" || s.Address != addr || !s.Voter || len(servers) != 3 {
			t.Fatalf("after moving n2 to %s: %+v", addr, servers)
		}
	}
	if err := leader.AddVoter(ctx, "n9", "addr-2"); err == nil {
		t.Fatal("n9 was added at n2's address")
	}
	if err := follower.AddVoter(ctx, "n4", "addr-4"); !errors.Is(err, ErrNotLeader) {
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
	ms := openVoters(t, 1)
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
	ms := openVotersWith(t, 3, Config{TrailingLogs: 2, TrailingBytes: 1})
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
