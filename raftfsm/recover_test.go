package raftfsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// Two of three nodes are destroyed: the survivor has no quorum, cannot
// commit and is not ready. Recover gives it a membership of itself alone;
// Open then elects it, it keeps every command, and takes new ones.
func TestRecoverMakesTheLastSurvivorALeaderWithItsData(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, Config{NotReadyAfter: time.Second})
	eventually(t, 10*time.Second, "all three ready", func() bool { return c.allReady(c.members...) })
	survivor := c.members[0]
	for i := range 20 {
		if _, err := survivor.node.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the followers applied", func() bool {
		want := survivor.node.Health().Applied
		return c.members[1].node.Health().Applied >= want && c.members[2].node.Health().Applied >= want
	})
	if err := survivor.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 25; i++ {
		if _, err := survivor.node.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.members[1].close()
	c.members[2].close()
	eventually(t, 10*time.Second, "the survivor without quorum is not ready", func() bool {
		return !survivor.node.Health().Ready
	})
	c.logHealth("two nodes gone")
	if _, err := survivor.node.Apply(ctx, &storage.AddDomain{Name: "refused.test"}); err == nil {
		t.Fatal("a node without quorum committed")
	}
	survivor.node.Close()
	survivor.node = nil

	cfg := survivor.config(Config{})
	start := time.Now()
	if err := Recover(cfg, survivor.store, []raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "n1"}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered in %v", time.Since(start).Round(time.Millisecond))
	if err := Recover(cfg, survivor.store, []raft.Server{{Suffrage: raft.Voter, ID: "n2", Address: "n2"}}); err == nil {
		t.Fatal("a membership without this node was accepted")
	}
	start = time.Now()
	survivor.open(t, cfg)
	t.Logf("Open returned in %v, leader: %v", time.Since(start).Round(time.Millisecond), survivor.node.IsLeader())
	if !survivor.node.IsLeader() || !survivor.node.Health().Ready {
		t.Fatalf("after recovery: %+v", survivor.node.Health())
	}
	if _, err := survivor.node.Apply(ctx, &storage.AddDomain{Name: "after.test"}); err != nil {
		t.Fatal(err)
	}
	ds, err := survivor.store.Domains(ctx)
	if err != nil || len(ds) != 26 {
		t.Fatalf("after recovery %d domains (%v), want 25 + 1", len(ds), err)
	}
	conf := survivor.node.raft.GetConfiguration()
	if err := conf.Error(); err != nil || len(conf.Configuration().Servers) != 1 {
		t.Fatalf("membership %+v, %v", conf.Configuration(), err)
	}
	c.logHealth("recovered")
}
