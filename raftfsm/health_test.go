package raftfsm

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

// The readiness rule, case by case; the clusters in cluster_test.go show
// it at work.
func TestTheReadinessRule(t *testing.T) {
	hs := &healthState{notReadyAfter: 3 * time.Second, maxLag: 1000}
	hs.everLeader.Store(true)
	following := Health{HasLeader: true, LeaderID: "n1", LastContact: 100 * time.Millisecond, Applied: 4000, Commit: 4000}
	for _, tc := range []struct {
		name   string
		state  raft.RaftState
		h      func(h Health) Health
		fsm    func(f *fsm)
		never  bool
		reason string
	}{
		{name: "a follower in touch", state: raft.Follower},
		{name: "the leader", state: raft.Leader, h: func(h Health) Health { h.LastContact = time.Hour; return h }},
		{name: "an election under way", state: raft.Candidate, h: func(h Health) Health {
			h.HasLeader, h.LeaderID, h.NoLeaderFor = false, "", 2*time.Second
			return h
		}},
		{name: "no leader for long", state: raft.Candidate, reason: "no leader for 6s", h: func(h Health) Health {
			h.HasLeader, h.LeaderID, h.NoLeaderFor = false, "", 6*time.Second
			return h
		}},
		{name: "no leader since start", state: raft.Follower, never: true, reason: "no leader yet (for 500ms since start)", h: func(h Health) Health {
			h.HasLeader, h.LeaderID, h.NoLeaderFor = false, "", 500*time.Millisecond
			return h
		}},
		{name: "a silent leader", state: raft.Follower, reason: "leader n1 not heard from for 4s", h: func(h Health) Health {
			h.LastContact = 4 * time.Second
			return h
		}},
		{name: "behind", state: raft.Follower, reason: "catching up: applied 120 of 4000", h: func(h Health) Health {
			h.Applied = 120
			return h
		}},
		{name: "a little behind", state: raft.Follower, h: func(h Health) Health { h.Applied = 3100; return h }},
		{name: "a snapshot coming in", state: raft.Follower, reason: "catching up: installing a snapshot from the leader",
			fsm: func(f *fsm) { f.restoring.Store(true) }},
		{name: "halted", state: raft.Leader, reason: `halted: command "x" at log index 9 (format 1) is not known to this version of Sigillo: upgrade this node`,
			fsm: func(f *fsm) { f.unknown.Store(&storage.UnknownCommandError{Index: 9, Op: "x", Version: 1}) }},
	} {
		h := following
		if tc.h != nil {
			h = tc.h(h)
		}
		f := &fsm{}
		if tc.fsm != nil {
			tc.fsm(f)
		}
		hs.everLeader.Store(!tc.never)
		ready, reason := hs.judge(&h, tc.state, f)
		if ready != (tc.reason == "") || reason != tc.reason {
			t.Errorf("%s: ready %v, %q; want %q", tc.name, ready, reason, tc.reason)
		}
	}
}

// Health is asked per transaction: what it costs.
func BenchmarkHealth(b *testing.B) {
	n, store := openNode(b, b.TempDir(), Config{})
	defer store.Close()
	defer n.Close()
	b.ReportAllocs()
	for b.Loop() {
		if !n.Health().Ready {
			b.Fatal("not ready")
		}
	}
}
