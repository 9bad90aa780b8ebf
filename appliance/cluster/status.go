package cluster

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statusTimeout bounds the wait for one node's status.
const statusTimeout = 2 * time.Second

// Status is the state of every server in the cluster's configuration:
// this node's own, and the others' as they report it, asked concurrently
// (2 s each). A node that does not answer is "unreachable", not ready,
// with the reason. Lag is the leader's applied index minus the node's.
func (s *Service) Status(ctx context.Context) ([]NodeStatus, error) {
	servers, err := s.Node.Servers()
	if err != nil {
		return nil, fmt.Errorf("cluster status: %w", err)
	}
	out := make([]NodeStatus, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		if srv.ID == s.NodeID {
			out[i] = s.self()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = s.peerStatus(ctx, srv.ID, srv.Address)
		}()
	}
	wg.Wait()

	leaderID, _ := s.Node.Leader()
	var top uint64
	found := false
	for _, st := range out {
		if st.Role == RoleLeader && (leaderID == "" || st.ID == leaderID) {
			top, found = st.AppliedIndex, true
		}
	}
	for i := range out {
		if found && out[i].Role != RoleUnreachable && top > out[i].AppliedIndex {
			out[i].Lag = top - out[i].AppliedIndex
		}
	}
	return out, nil
}

// peerStatus asks the node at addr for its status.
func (s *Service) peerStatus(ctx context.Context, id, addr string) NodeStatus {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	var st NodeStatus
	if err := call(ctx, s.Client, http.MethodGet, addr, PathStatus, nil, &st); err != nil {
		return NodeStatus{ID: id, Address: addr, Role: RoleUnreachable, Reason: err.Error()}
	}
	if st.ID != id {
		return NodeStatus{ID: id, Address: addr, Role: RoleUnreachable,
			Reason: fmt.Sprintf("the node at %s says it is %q", addr, st.ID)}
	}
	st.Address = addr
	return st
}

// statser is a node that says what raft thinks (raftfsm.Node is one).
type statser interface {
	Stats() map[string]string
}

// plainStatus is this node's status from the raft node alone, when no
// Health is given.
func plainStatus(n Raft) NodeStatus {
	st := NodeStatus{Role: RoleFollower, AppliedIndex: n.AppliedIndex(), Ready: true, LastContactMS: -1}
	if n.IsLeader() {
		st.Role, st.LastContactMS = RoleLeader, 0
	} else if id, _ := n.Leader(); id == "" {
		st.Ready, st.Reason = false, "no leader"
	}
	if sn, ok := n.(statser); ok {
		stats := sn.Stats()
		if state := strings.ToLower(stats["state"]); state != "" && state != RoleLeader && state != RoleFollower {
			st.Role, st.Ready, st.Reason = state, false, "raft state "+state
		}
		st.CommitIndex, _ = strconv.ParseUint(stats["commit_index"], 10, 64)
		if st.Role != RoleLeader {
			switch c := stats["last_contact"]; c {
			case "0":
				st.LastContactMS = 0
			default:
				if d, err := time.ParseDuration(c); err == nil {
					st.LastContactMS = d.Milliseconds()
				}
			}
		}
	}
	return st
}
