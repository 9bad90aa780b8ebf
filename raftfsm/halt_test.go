package raftfsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigillo/storage"
)

// fromTheFuture is a log entry a newer Sigillo could write: an op this
// binary does not know, in today's format.
func fromTheFuture() []byte {
	op, body := "from-the-future", `{"name":"future.test"}`
	b := []byte{0xff}
	b = binary.AppendUvarint(b, storage.CommandVersion)
	b = binary.AppendUvarint(b, uint64(len(op)))
	b = append(b, op...)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

func domainNames(t *testing.T, s *storage.Store) string {
	t.Helper()
	ds, err := s.Domains(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ds {
		names = append(names, d.Name)
	}
	return strings.Join(names, ",")
}

// A newer leader's command reaches a node that does not know it (an
// upgrade that went leader first, or a follower left behind). The node
// neither skips it nor applies it: it stops applying there, says so in
// Health, and refuses commands as unavailable, across restarts with the
// same binary. Restarted with a binary that knows the command, it applies
// it and everything after it, and serves again.
func TestACommandFromANewerVersionHaltsTheNodeUntilItIsUpgraded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n, store := openNode(t, dir, Config{})
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "before.test"}); err != nil {
		t.Fatal(err)
	}
	// The raw append stands for a leader of a newer version.
	n.raft.Apply(fromTheFuture(), 0)
	var h Health
	took := eventually(t, 5*time.Second, "halted", func() bool {
		h = n.Health()
		return strings.HasPrefix(h.Reason, "halted: ")
	})
	t.Logf("halted after %v: %+v", took.Round(time.Millisecond), h)
	if h.Ready || !strings.Contains(h.Reason, `"from-the-future"`) || !strings.Contains(h.Reason, "upgrade this node") {
		t.Fatalf("health %+v", h)
	}
	start := time.Now()
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "after.test"}); !errors.Is(err, ErrUnavailable) || time.Since(start) > time.Second {
		t.Fatalf("apply on a halted node: %v after %v", err, time.Since(start))
	} else {
		t.Logf("apply on a halted node: %v", err)
	}
	futureIndex := h.LastLogIndex
	if applied, _ := store.AppliedIndex(ctx); applied >= futureIndex || domainNames(t, store) != "before.test" {
		t.Fatalf("the store went on: applied %d (the new command is at %d), domains %s", applied, futureIndex, domainNames(t, store))
	}
	n.Close()
	store.Close()

	// The same binary again: Open replays up to the command and stops
	// there, running but not ready.
	n, store = openNode(t, dir, Config{})
	if h := n.Health(); h.Ready || !strings.HasPrefix(h.Reason, "halted: ") {
		t.Fatalf("restarted with the same binary: %+v", h)
	}
	if domainNames(t, store) != "before.test" {
		t.Fatalf("domains %s", domainNames(t, store))
	}
	n.Close()
	store.Close()

	// The upgraded binary knows the command (here: it adds a domain).
	known, err := storage.Encode(&storage.AddDomain{Name: "future.test"})
	if err != nil {
		t.Fatal(err)
	}
	upgraded := func(b []byte) []byte {
		if bytes.Equal(b, fromTheFuture()) {
			return known
		}
		return b
	}
	n, store = openNode(t, dir, Config{translate: upgraded})
	defer store.Close()
	defer n.Close()
	if h := n.Health(); !h.Ready {
		t.Fatalf("upgraded: %+v", h)
	}
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "after.test"}); err != nil {
		t.Fatal(err)
	}
	if got := domainNames(t, store); got != "after.test,before.test,future.test" {
		t.Fatalf("domains %s", got)
	}
}

// An upgrade that went wrong way round: the leader writes a command that
// one follower's (older) binary does not know. That follower halts and is
// not ready; the other two go on committing without it, well past what
// its raft can queue; once it runs the newer binary it applies from where
// it stopped, catches up and is ready again.
func TestAFollowerThatMeetsANewerCommandWaitsForItsUpgradeWhileTheClusterGoesOn(t *testing.T) {
	ctx := context.Background()
	newer, err := storage.Encode(&storage.AddDomain{Name: "new.test"})
	if err != nil {
		t.Fatal(err)
	}
	// n3 runs the old binary: to it, the new leader's command is unknown.
	old := func(b []byte) []byte {
		if bytes.Equal(b, newer) {
			return fromTheFuture()
		}
		return b
	}
	c := newClusterWith(t, Config{NotReadyAfter: time.Second}, map[string]Config{"n3": {translate: old}})
	eventually(t, 10*time.Second, "all three ready", func() bool { return c.allReady(c.members...) })
	leader, n3 := c.members[0], c.members[2]
	if _, err := leader.node.Apply(ctx, &storage.AddDomain{Name: "new.test"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n3 halted", func() bool { return strings.HasPrefix(n3.node.Health().Reason, "halted: ") })
	for i := range 300 {
		if _, err := leader.node.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatalf("the cluster stopped with one halted follower at %d: %v", i, err)
		}
	}
	// (Under a loaded machine a heartbeat can come later than
	// NotReadyAfter, 1 s here: wait a little.)
	eventually(t, 5*time.Second, "the up-to-date nodes ready", func() bool { return c.allReady(c.members[:2]...) })
	c.logHealth("n3 halted, 300 commands later")
	if got := domainNames(t, n3.store); got != "" {
		t.Fatalf("the halted follower applied %s", got)
	}

	// n3 is upgraded: restarted with a binary that knows the command.
	n3.close()
	cfg := n3.config(Config{NotReadyAfter: time.Second})
	c.connectAll()
	n3.open(t, cfg)
	took := eventually(t, 10*time.Second, "the upgraded follower ready and caught up", func() bool {
		h := n3.node.Health()
		return h.Ready && h.Applied >= leader.node.Health().Applied
	})
	t.Logf("upgraded n3 caught up in %v", took.Round(time.Millisecond))
	c.logHealth("n3 upgraded")
	if got, want := domainNames(t, n3.store), domainNames(t, leader.store); got != want {
		t.Fatalf("n3 holds %d bytes of names, the leader %d", len(got), len(want))
	}
}

// A leader that cannot apply a committed command (an older binary leading
// newer followers) would hold up every write: it hands leadership over to
// a follower that knows the command, and stays halted itself.
func TestAHaltedLeaderHandsLeadershipOver(t *testing.T) {
	ctx := context.Background()
	newer, err := storage.Encode(&storage.AddDomain{Name: "new.test"})
	if err != nil {
		t.Fatal(err)
	}
	old := func(b []byte) []byte {
		if bytes.Equal(b, newer) {
			return fromTheFuture()
		}
		return b
	}
	c := newClusterWith(t, Config{NotReadyAfter: time.Second}, map[string]Config{"n1": {translate: old}})
	eventually(t, 10*time.Second, "all three ready", func() bool { return c.allReady(c.members...) })
	n1 := c.members[0]
	if !n1.node.IsLeader() {
		t.Fatal("n1, which bootstrapped the cluster, does not lead it")
	}
	_, err = n1.node.Apply(ctx, &storage.AddDomain{Name: "new.test"})
	t.Logf("the old leader's answer: %v", err)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the halted leader answered %v", err)
	}
	var next *member
	took := eventually(t, 10*time.Second, "another leader", func() bool {
		next = c.leader(c.members[1:]...)
		return next != nil
	})
	t.Logf("%s leads %v after the halt", next.id, took.Round(time.Millisecond))
	if _, err := next.node.Apply(ctx, &storage.AddDomain{Name: "next.test"}); err != nil {
		t.Fatal(err)
	}
	if got := domainNames(t, next.store); got != "new.test,next.test" {
		t.Fatalf("the new leader holds %s", got)
	}
	if h := n1.node.Health(); h.Ready || !strings.HasPrefix(h.Reason, "halted: ") {
		t.Fatalf("the old leader: %+v", h)
	}
	c.logHealth("handed over")
}
