package raftfsm

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Health is what a node knows of its own fitness to serve: whether it is
// in touch with a leader and has applied what was committed. A front end
// asks it before each transaction (SMTP, IMAP and POP3 writes) and
// /readyz reports it, so that a node cut off from its cluster excludes
// itself from service and comes back by itself when it is in touch again.
type Health struct {
	// Role is "leader", "follower", "candidate" or "shutdown".
	Role string
	// LeaderID and LeaderAddr name the leader this node knows of.
	LeaderID   string
	LeaderAddr string
	HasLeader  bool
	// LastContact is the time since the leader was last heard (0 on the
	// leader, and on a node that never heard one).
	LastContact time.Duration
	// NoLeaderFor is how long the node has been without a leader (0 when
	// it has one).
	NoLeaderFor time.Duration
	// Applied is the last log index the store has applied; Commit the
	// index this node knows to be committed (on a follower: what its
	// leader said, as far as its own log reaches); LastLogIndex the last
	// entry in its log.
	Applied, Commit, LastLogIndex uint64
	// Ready says the node may take new work; Reason says why not, in one
	// sentence ("no leader for 6s", "catching up: applied 120 of 4000").
	Ready  bool
	Reason string
}

// Health says whether this node is fit to serve, and why not. It is cheap
// (a few atomic loads and locks, no raft round trip): callers ask it per
// transaction. The rule:
//
//   - a halted store (a command this binary does not know, see
//     storage.CommandVersion) is not ready, whatever the rest;
//   - a node installing a snapshot from its leader is not ready;
//   - the leader is ready (raft makes a leader cut off from a quorum step
//     down within its lease, 250 ms here);
//   - a node without a leader for more than Config.NotReadyAfter, or that
//     has had none since it started, is not ready; a shorter gap (an
//     election) keeps it ready;
//   - a follower that has not heard from its leader for more than
//     NotReadyAfter is not ready;
//   - a node whose store is more than Config.MaxLag entries behind the
//     commit index it knows is not ready ("catching up").
//
// A follower knows the leader's commit index only as far as its own log
// reaches, so a follower whose log is far behind is seen through the
// snapshot it is sent, not through this lag.
func (n *Node) Health() Health {
	state := n.raft.State()
	h := Health{Role: strings.ToLower(state.String())}
	select {
	case <-n.stopped:
		state = raft.Shutdown
	default:
	}
	if state == raft.Shutdown {
		return Health{Role: "shutdown", Reason: "the node is stopped"}
	}
	now := time.Now()
	addr, id := n.raft.LeaderWithID()
	h.LeaderID, h.LeaderAddr, h.HasLeader = string(id), string(addr), id != ""
	h.Applied = n.fsm.meter.index.Load()
	h.Commit = n.raft.CommitIndex()
	h.LastLogIndex = n.raft.LastIndex()
	if state != raft.Leader {
		if last := n.raft.LastContact(); !last.IsZero() {
			h.LastContact = now.Sub(last)
		}
	}
	hs := n.health
	if h.HasLeader {
		hs.everLeader.Store(true)
	} else if since := hs.noLeaderSince.Load(); since != 0 {
		h.NoLeaderFor = now.Sub(time.Unix(0, since))
	}
	h.Ready, h.Reason = hs.judge(&h, state, n.fsm)
	return h
}

// handOver asks raft to hand leadership to a follower, if this node
// leads: it is halted (a command it does not know), and a leader that
// cannot apply would hold up every write of the cluster, while a follower
// of a newer version can go on. Raft picks the most up-to-date follower;
// it does not wait here.
func (n *Node) handOver() {
	if n.raft.State() != raft.Leader {
		return
	}
	n.logger.Warn("halted while leading: handing leadership over to a follower")
	n.raft.LeadershipTransfer()
}

// healthState is what Health keeps between calls: since when there has
// been no leader, kept by a goroutine that watches raft's leader changes
// (owned by the Node, stopped by Close).
type healthState struct {
	notReadyAfter time.Duration
	maxLag        uint64

	// noLeaderSince is when the node lost its leader (unix ns), 0 while it
	// has one.
	noLeaderSince atomic.Int64
	everLeader    atomic.Bool

	r        *raft.Raft
	observer *raft.Observer
	quit     chan struct{}
	done     chan struct{}
}

func startHealth(r *raft.Raft, cfg Config, openedAt time.Time) *healthState {
	hs := &healthState{notReadyAfter: cfg.NotReadyAfter, maxLag: cfg.MaxLag, r: r,
		quit: make(chan struct{}), done: make(chan struct{})}
	hs.noLeaderSince.Store(openedAt.UnixNano())
	ch := make(chan raft.Observation, 64)
	hs.observer = raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(hs.observer)
	// A change before the registration was not observed: look once now.
	hs.leaderChanged(time.Now())
	go func() {
		defer close(hs.done)
		for {
			select {
			case <-hs.quit:
				return
			case <-ch:
				// Observations may be dropped when the channel is full:
				// each one is a cue to look at raft's leader, not a value.
				hs.leaderChanged(time.Now())
			}
		}
	}()
	return hs
}

func (hs *healthState) leaderChanged(now time.Time) {
	if _, id := hs.r.LeaderWithID(); id != "" {
		hs.noLeaderSince.Store(0)
		hs.everLeader.Store(true)
		return
	}
	hs.noLeaderSince.CompareAndSwap(0, now.UnixNano())
}

// stop ends the watching goroutine.
func (hs *healthState) stop() {
	hs.r.DeregisterObserver(hs.observer)
	close(hs.quit)
	<-hs.done
}

// judge applies Health's rule to h.
func (hs *healthState) judge(h *Health, state raft.RaftState, f *fsm) (bool, string) {
	if err := f.haltedErr(); err != nil {
		return false, "halted: " + err.Error()
	}
	if f.restoring.Load() {
		return false, "catching up: installing a snapshot from the leader"
	}
	if state != raft.Leader {
		switch {
		case !h.HasLeader && !hs.everLeader.Load():
			return false, fmt.Sprintf("no leader yet (for %v since start)", round(h.NoLeaderFor))
		case !h.HasLeader && h.NoLeaderFor > hs.notReadyAfter:
			return false, fmt.Sprintf("no leader for %v", round(h.NoLeaderFor))
		case h.HasLeader && h.LastContact > hs.notReadyAfter:
			return false, fmt.Sprintf("leader %s not heard from for %v", h.LeaderID, round(h.LastContact))
		}
	}
	if h.Commit > h.Applied && h.Commit-h.Applied > hs.maxLag {
		return false, fmt.Sprintf("catching up: applied %d of %d", h.Applied, h.Commit)
	}
	return true, ""
}

func round(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}
