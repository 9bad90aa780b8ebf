package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// member is one node of an in-process cluster: a real Node and store,
// talking to the others over raft's in-memory transport.
type member struct {
	id    string
	dir   string
	trans *raft.InmemTransport
	node  *Node
	store *storage.Store
}

func (m *member) addr() raft.ServerAddress { return raft.ServerAddress(m.id) }

// config is the member's Config with a fresh transport.
func (m *member) config(cfg Config) Config {
	_, m.trans = raft.NewInmemTransport(m.addr())
	cfg.Dir = filepath.Join(m.dir, "raft")
	cfg.NodeID = m.id
	cfg.Transport = m.trans
	// Elections and partitions fill the output with raft's complaints.
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func (m *member) open(t *testing.T, cfg Config) {
	t.Helper()
	if m.store == nil {
		s, err := storage.Open(filepath.Join(m.dir, "sigillo.db"))
		if err != nil {
			t.Fatal(err)
		}
		m.store = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg, m.store)
	if err != nil {
		t.Fatalf("open %s: %v", m.id, err)
	}
	m.node = n
}

func (m *member) close() {
	if m.node != nil {
		m.node.Close()
		m.node = nil
	}
	if m.store != nil {
		m.store.Close()
		m.store = nil
	}
}

type cluster struct {
	t       *testing.T
	members []*member
}

// newCluster starts three nodes: n1 bootstraps and adds n2 and n3 as
// voters, as a join would.
func newCluster(t *testing.T, cfg Config) *cluster {
	t.Helper()
	return newClusterWith(t, cfg, nil)
}

// newClusterWith is newCluster with the test hooks of some members.
func newClusterWith(t *testing.T, cfg Config, hooks map[string]Config) *cluster {
	t.Helper()
	return newClusterOf(t, 3, cfg, hooks)
}

// newClusterOf starts n nodes: n1 bootstraps and adds the others as
// voters through Node.AddVoter, as a join does.
func newClusterOf(t *testing.T, n int, cfg Config, hooks map[string]Config) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for i := 1; i <= n; i++ {
		c.members = append(c.members, &member{id: fmt.Sprintf("n%d", i), dir: t.TempDir()})
	}
	cfgs := make([]Config, n)
	for i, m := range c.members {
		cfgs[i] = m.config(cfg)
		cfgs[i].translate = hooks[m.id].translate
	}
	c.connectAll()
	t.Cleanup(func() {
		for _, m := range c.members {
			m.close()
		}
	})
	for i := 1; i < n; i++ {
		c.members[i].open(t, cfgs[i])
	}
	cfgs[0].Bootstrap = true
	c.members[0].open(t, cfgs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range c.members[1:] {
		if err := c.members[0].node.AddVoter(ctx, m.id, string(m.addr())); err != nil {
			t.Fatalf("add %s: %v", m.id, err)
		}
	}
	return c
}

func (c *cluster) connectAll() {
	for _, a := range c.members {
		for _, b := range c.members {
			if a != b {
				a.trans.Connect(b.addr(), b.trans)
			}
		}
	}
}

// partition cuts m off from the others, both ways.
func (c *cluster) partition(m *member) {
	m.trans.DisconnectAll()
	for _, o := range c.members {
		if o != m {
			o.trans.Disconnect(m.addr())
		}
	}
}

// eventually polls cond until it holds or d has passed, and says how long
// it took.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func (c *cluster) leader(among ...*member) *member {
	for _, m := range among {
		if m.node != nil && m.node.IsLeader() {
			return m
		}
	}
	return nil
}

func (c *cluster) allReady(among ...*member) bool {
	for _, m := range among {
		if h := m.node.Health(); !h.Ready {
			return false
		}
	}
	return true
}

func (c *cluster) logHealth(when string) {
	for _, m := range c.members {
		if m.node == nil {
			continue
		}
		h := m.node.Health()
		c.t.Logf("%s: %s %-9s leader=%-2s ready=%-5v applied=%d commit=%d contact=%v no_leader=%v %s", when, m.id, h.Role,
			h.LeaderID, h.Ready, h.Applied, h.Commit, h.LastContact.Round(time.Millisecond), h.NoLeaderFor.Round(time.Millisecond), h.Reason)
	}
}

// A leader cut off from the other two: within a few seconds it says it is
// not ready and why, while the other two elect a leader among themselves
// and stay ready; when the network heals it follows the new leader and is
// ready again, by itself.
func TestALeaderCutOffExcludesItselfAndComesBackByItself(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, Config{NotReadyAfter: time.Second})
	took := eventually(t, 10*time.Second, "all three ready", func() bool { return c.allReady(c.members...) })
	c.logHealth(fmt.Sprintf("formed, all ready after %v", took.Round(time.Millisecond)))
	old := c.leader(c.members...)
	if old == nil {
		t.Fatal("no leader")
	}
	for i := range 5 {
		if _, err := old.node.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var others []*member
	for _, m := range c.members {
		if m != old {
			others = append(others, m)
		}
	}

	c.partition(old)
	cut := time.Now()
	var reason string
	took = eventually(t, 10*time.Second, "the cut-off leader not ready", func() bool {
		h := old.node.Health()
		reason = h.Reason
		return !h.Ready && !h.HasLeader && strings.HasPrefix(h.Reason, "no leader for ")
	})
	t.Logf("the cut-off leader is not ready after %v: %q", took.Round(time.Millisecond), reason)
	if took < 900*time.Millisecond {
		t.Fatalf("not ready after %v, before NotReadyAfter (1 s)", took)
	}
	var next *member
	eventually(t, 10*time.Second, "the other two elect a leader and are ready", func() bool {
		next = c.leader(others...)
		return next != nil && c.allReady(others...)
	})
	t.Logf("%s elected and both ready %v after the cut", next.id, time.Since(cut).Round(time.Millisecond))
	c.logHealth("cut off")
	if _, err := next.node.Apply(ctx, &storage.AddDomain{Name: "during.test"}); err != nil {
		t.Fatalf("the majority does not commit: %v", err)
	}
	if _, err := old.node.Apply(ctx, &storage.AddDomain{Name: "lost.test"}); !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the cut-off node took a write: %v", err)
	}

	c.connectAll()
	healed := time.Now()
	eventually(t, 10*time.Second, "the old leader ready again, following the new one", func() bool {
		h := old.node.Health()
		return h.Ready && h.Role == "follower" && h.LeaderID == next.id && h.Applied >= next.node.Health().Applied
	})
	t.Logf("ready again %v after the network healed", time.Since(healed).Round(time.Millisecond))
	c.logHealth("healed")
	ds, err := old.store.Domains(ctx)
	if err != nil || len(ds) != 6 {
		t.Fatalf("the old leader's store: %d domains, %v", len(ds), err)
	}
}
