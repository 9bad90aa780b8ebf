package clusternet_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"sigillo/appliance/clusternet"
)

func raftAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }

// counter is the test's FSM: the sum of the numbers applied.
type counter struct {
	mu  sync.Mutex
	sum uint64
}

func (c *counter) Apply(l *raft.Log) any {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sum += binary.BigEndian.Uint64(l.Data)
	return c.sum
}

func (c *counter) value() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sum
}

func (c *counter) Snapshot() (raft.FSMSnapshot, error) { return counterSnap(c.value()), nil }

func (c *counter) Restore(r io.ReadCloser) error {
	defer r.Close()
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	c.mu.Lock()
	c.sum = binary.BigEndian.Uint64(b[:])
	c.mu.Unlock()
	return nil
}

type counterSnap uint64

func (s counterSnap) Persist(sink raft.SnapshotSink) error {
	if err := binary.Write(sink, binary.BigEndian, uint64(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (counterSnap) Release() {}

// TestThreeNodesFormARaftCluster: three raft nodes whose only transport is
// the cluster port of each (mutual TLS) elect a leader and replicate what
// it applies to both followers.
func TestThreeNodesFormARaftCluster(t *testing.T) {
	ca := mustCA(t, "c")
	type member struct {
		mux  *clusternet.Mux
		raft *raft.Raft
		fsm  *counter
	}
	members := make([]*member, 3)
	var servers []raft.Server
	for i := range members {
		id := identity(t, ca, fmt.Sprintf("n%d", i+1))
		m := mustMux(t, id)
		members[i] = &member{mux: m, fsm: &counter{}}
		servers = append(servers, raft.Server{ID: raft.ServerID(id.NodeID), Address: raft.ServerAddress(m.Addr().String())})
	}
	for i, mb := range members {
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.HeartbeatTimeout = 150 * time.Millisecond
		conf.ElectionTimeout = 150 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.New(&hclog.LoggerOptions{Name: string(conf.LocalID), Level: hclog.Warn, Output: tWriter{t}})
		trans := raft.NewNetworkTransport(mb.mux.StreamLayer(""), 3, 2*time.Second, io.Discard)
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(conf, mb.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		mb.raft = r
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Error(err)
			}
		})
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	var leader *member
	for leader == nil {
		if time.Since(start) > 3*time.Second {
			t.Fatal("no leader after 3 s")
		}
		for _, mb := range members {
			if mb.raft.State() == raft.Leader {
				leader = mb
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("leader %s elected in %v", leader.raft.String(), time.Since(start).Round(time.Millisecond))

	for _, n := range []uint64{1, 2, 39} {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], n)
		if err := leader.raft.Apply(b[:], 2*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for i, mb := range members {
		for mb.fsm.value() != 42 {
			if time.Now().After(deadline) {
				t.Fatalf("node n%d counts %d, want 42", i+1, mb.fsm.value())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, mb := range members {
		if mb != leader && mb.raft.State() != raft.Follower {
			t.Fatalf("%s is %v, want follower", mb.raft.String(), mb.raft.State())
		}
	}
}
