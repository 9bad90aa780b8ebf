package manage

import (
	"context"
	"errors"
	"strings"
	"time"

	"sigillo/storage"
)

// ClusterNode is one node as `sigillo cluster status` shows it.
type ClusterNode struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Role is "leader", "follower", "candidate", or "unreachable" when
	// the node did not answer.
	Role          string `json:"role"`
	AppliedIndex  uint64 `json:"applied_index"`
	Lag           uint64 `json:"lag"`
	LastContactMS int64  `json:"last_contact_ms"`
	Version       string `json:"version,omitempty"`
	Ready         bool   `json:"ready"`
	// Reason says why the node is not ready.
	Reason string `json:"reason,omitempty"`
	// CommitP50MS and CommitP99MS are how long the node's latest commands
	// took to commit, in ms (on the leader: every write of the cluster).
	CommitP50MS float64 `json:"commit_p50_ms,omitempty"`
	CommitP99MS float64 `json:"commit_p99_ms,omitempty"`
}

// ClusterStatus is every node of the cluster's configuration.
type ClusterStatus struct {
	Nodes []ClusterNode `json:"nodes"`
}

// JoinToken describes a join token without its secret.
type JoinToken struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Expired bool      `json:"expired"`
}

// Cluster is what the cluster operations need of the running node.
type Cluster interface {
	Nodes(ctx context.Context) ([]ClusterNode, error)
	NewToken(ctx context.Context, ttl time.Duration) (string, error)
	Tokens(ctx context.Context) ([]JoinToken, error)
	RevokeToken(ctx context.Context, id string) error
	Remove(ctx context.Context, nodeID string) error
}

// ErrNotClustered is a Cluster's answer when the node cannot take members
// (no raft_addr).
var ErrNotClustered = errors.New("this node is a one-node cluster no other node can reach: set [cluster] raft_addr (and advertise) and restart it")

// ClusterStatus reports every node; for the operator.
func (m *Manager) ClusterStatus(ctx context.Context, a Actor) (ClusterStatus, error) {
	if err := operatorOnly(a, "the cluster's status"); err != nil {
		return ClusterStatus{}, err
	}
	if m.Cluster == nil {
		return ClusterStatus{}, refuse(Unavailable, "no cluster information on this node")
	}
	nodes, err := m.Cluster.Nodes(ctx)
	if err != nil {
		return ClusterStatus{}, wrap(err, Unavailable)
	}
	return ClusterStatus{Nodes: nodes}, nil
}

// ClusterToken makes a join token valid for ttl (default 24 h, at most 30
// days); for the operator.
func (m *Manager) ClusterToken(ctx context.Context, a Actor, ttl time.Duration) (string, error) {
	if err := operatorOnly(a, "a join token"); err != nil {
		return "", err
	}
	if ttl == 0 {
		ttl = 24 * time.Hour
	}
	if ttl < time.Minute || ttl > 30*24*time.Hour {
		return "", refuse(Invalid, "the token's lifetime must be from 1m to 720h")
	}
	if m.Cluster == nil {
		return "", refuse(Unavailable, "no cluster on this node")
	}
	tok, err := m.Cluster.NewToken(ctx, ttl)
	if errors.Is(err, ErrNotClustered) {
		return "", refuse(Conflict, "%s", ErrNotClustered.Error())
	}
	if err != nil {
		return "", wrap(err, Unavailable)
	}
	return tok, nil
}

// RemoveNode takes a node out of the cluster's configuration; for the
// operator.
func (m *Manager) RemoveNode(ctx context.Context, a Actor, nodeID string) error {
	if err := operatorOnly(a, "removing a node"); err != nil {
		return err
	}
	if nodeID == "" {
		return refuse(Invalid, "which node? (sigillo cluster status lists them)")
	}
	if m.Cluster == nil {
		return refuse(Unavailable, "no cluster on this node")
	}
	if err := m.Cluster.Remove(ctx, nodeID); err != nil {
		if errors.Is(err, ErrNotClustered) {
			return refuse(Conflict, "%s", ErrNotClustered.Error())
		}
		return wrap(err, Unavailable)
	}
	return nil
}

// ClusterTokens lists the join tokens (no secrets); for the operator.
func (m *Manager) ClusterTokens(ctx context.Context, a Actor) ([]JoinToken, error) {
	if err := operatorOnly(a, "the join tokens"); err != nil {
		return nil, err
	}
	if m.Cluster == nil {
		return nil, refuse(Unavailable, "no cluster on this node")
	}
	ts, err := m.Cluster.Tokens(ctx)
	if errors.Is(err, ErrNotClustered) {
		return nil, refuse(Conflict, "%s", ErrNotClustered.Error())
	}
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	return ts, nil
}

// RevokeToken deletes a join token: no node can join with it any more;
// for the operator.
func (m *Manager) RevokeToken(ctx context.Context, a Actor, id string) error {
	if err := operatorOnly(a, "revoking a join token"); err != nil {
		return err
	}
	if id == "" {
		return refuse(Invalid, "which token? (sigillo cluster token --list)")
	}
	if m.Cluster == nil {
		return refuse(Unavailable, "no cluster on this node")
	}
	err := m.Cluster.RevokeToken(ctx, id)
	switch {
	case errors.Is(err, ErrNotClustered):
		return refuse(Conflict, "%s", ErrNotClustered.Error())
	case err != nil && strings.Contains(err.Error(), "not a token id"):
		return refuse(Invalid, "%s", err.Error())
	case err != nil && storage.IsCode(err, storage.ErrNotFound):
		return refuse(NotFound, "no join token %s", id)
	case err != nil:
		return wrap(err, Unavailable)
	}
	return nil
}
