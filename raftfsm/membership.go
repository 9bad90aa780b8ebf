package raftfsm

// Membership: who is in the cluster, who leads it, adding and removing
// servers (on the leader), and how far this node's FSM has applied the
// log, so that a node that forwarded a write can wait until it holds it.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// ErrNoSuchServer means a server ID is not in the cluster's configuration.
var ErrNoSuchServer = errors.New("no such server in the cluster configuration")

// Server is one member of the cluster's raft configuration.
type Server struct {
	ID      string
	Address string
	// Voter is false for a non-voting member (one catching up).
	Voter bool
}

// Servers is the latest raft configuration (possibly not yet committed),
// as this node knows it.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	conf := f.Configuration().Servers
	out := make([]Server, 0, len(conf))
	for _, s := range conf {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// Leader is the cluster's leader as this node knows it: its server ID and
// raft address, both "" when no leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// AddVoter makes the server id at addr a voting member. Only the leader can
// (ErrNotLeader otherwise). It is idempotent: a voter already there with
// the same address is left alone (nil, no configuration change); one with
// another address gets addr. An address that belongs to another server is
// an error: remove that one first. It returns once the change is committed,
// which needs a quorum of the new configuration, so the new server must be
// running and reachable at addr.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return fmt.Errorf("add voter: node id and address are needed (got %q, %q)", id, addr)
	}
	if !n.IsLeader() {
		return fmt.Errorf("add voter %s: %w", id, ErrNotLeader)
	}
	servers, err := n.Servers()
	if err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	for _, s := range servers {
		if s.ID == id && s.Address == addr && s.Voter {
			return nil
		}
		if s.ID != id && s.Address == addr {
			return fmt.Errorf("add voter %s: address %s is server %s's; remove it first", id, addr, s.ID)
		}
	}
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.timeoutFor(ctx))
	if err := n.await(ctx, f); err != nil {
		return fmt.Errorf("add voter %s at %s: %w", id, addr, err)
	}
	n.logger.Info("server added as voter", "node", id, "address", addr, "index", f.Index())
	return nil
}

// RemoveServer takes the server id out of the cluster. Only the leader can
// (ErrNotLeader otherwise); an id not in the configuration is
// ErrNoSuchServer. The leader may remove itself: once the change is
// committed it steps down and the others elect a leader among themselves.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return fmt.Errorf("remove server %s: %w", id, ErrNotLeader)
	}
	servers, err := n.Servers()
	if err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	found := false
	for _, s := range servers {
		found = found || s.ID == id
	}
	if !found {
		return fmt.Errorf("remove server %q: %w", id, ErrNoSuchServer)
	}
	f := n.raft.RemoveServer(raft.ServerID(id), 0, n.timeoutFor(ctx))
	if err := n.await(ctx, f); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	n.logger.Info("server removed", "node", id, "index", f.Index())
	return nil
}

// await waits for a raft future, the node's stop or ctx. A future refused
// for want of leadership is ErrNotLeader; any other failure (leadership
// lost while it was in flight, a timeout) wraps ErrUnavailable: the change
// may or may not have been made.
func (n *Node) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	// The goroutine ends when the future does; raft resolves every future
	// at shutdown.
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-n.stopped:
		return fmt.Errorf("%w: node stopped", ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

// AppliedIndex is the index of the last command this node's FSM has
// applied to the store (or found there at start).
func (n *Node) AppliedIndex() uint64 { return n.fsm.meter.watch.index.Load() }

// WaitApplied returns once this node's FSM has applied the log up to index,
// so that a read of the store sees every command up to it. It returns ctx's
// error when ctx ends first, and ErrUnavailable when the node stops.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	w := &n.fsm.meter.watch
	for {
		// The channel is taken before the index is read: an advance
		// after the read closes it.
		ch := w.changed()
		if w.index.Load() >= index {
			// A stopping FSM counts entries it gave up on; n.stopped is
			// closed before it gives up.
			select {
			case <-n.stopped:
				return fmt.Errorf("wait for index %d: %w: node stopped", index, ErrUnavailable)
			default:
				return nil
			}
		}
		select {
		case <-ch:
		case <-n.stopped:
			return fmt.Errorf("wait for index %d: %w: node stopped", index, ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, w.index.Load(), ctx.Err())
		}
	}
}

// appliedWatch is the FSM's applied index, which only grows, and a channel
// closed whenever it does. Its zero value is ready.
type appliedWatch struct {
	index atomic.Uint64
	mu    sync.Mutex
	ch    chan struct{} // nil until someone waits
}

// advance records that the store holds the log up to i.
func (w *appliedWatch) advance(i uint64) {
	for {
		cur := w.index.Load()
		if i <= cur {
			return
		}
		if w.index.CompareAndSwap(cur, i) {
			break
		}
	}
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}

// changed is closed at the next advance.
func (w *appliedWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}
