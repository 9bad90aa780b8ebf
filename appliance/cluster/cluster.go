// Package cluster is the RPC service the nodes of a Sigillo cluster offer
// one another, and the write path of a node that does not lead: joining
// (enroll with a join token, then add), forwarding commands to the leader
// (Forwarder, a storage.Proposer), removing a node, and each node's
// status. Every call lands on the leader: a follower passes it on.
//
// It is not the transport: the mutual-TLS port, the certificates and the
// token format are the caller's (appliance/clusternet), reached through
// the small interfaces below. Nor is it raft: the node (raftfsm.Node) is
// one of those interfaces too.
package cluster

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"sigillo/raftfsm"
	"sigillo/storage"
)

// Raft is the raft node as the service uses it (raftfsm.Node is one).
type Raft interface {
	storage.Proposer
	IsLeader() bool
	Leader() (id, addr string)
	AddVoter(ctx context.Context, id, addr string) error
	RemoveServer(ctx context.Context, id string) error
	Servers() ([]raftfsm.Server, error)
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, index uint64) error
}

// KV reads the replicated store's keys (storage.Store is one).
type KV interface {
	KV(ctx context.Context, key string) ([]byte, error)
	KVKeys(ctx context.Context, prefix string) ([]string, error)
}

// Doer sends a request to another node's RPC, over mutual TLS as a node
// (an http.Client built for the cluster is one). The service addresses a
// node as https://ADDRESS, its raft address: raft and the RPC share the
// port.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// Issuer is the cluster CA: it signs a joining node's certificate.
type Issuer interface {
	// Issue returns, in PEM, a certificate for nodeID's public key.
	Issue(nodeID string, pub crypto.PublicKey, now time.Time) ([]byte, error)
	// CertPEM is the CA's certificate in PEM.
	CertPEM() []byte
}

// TokenCodec makes and reads join tokens. The token's secret is never
// stored: only the hash Make returns.
type TokenCodec interface {
	// Make returns a new token line (what `sigillo cluster token`
	// prints), its id and the hash of its secret.
	Make() (line, id string, hash []byte, err error)
	// Parse reads a token line into its id and secret.
	Parse(line string) (id string, secret []byte, err error)
	// Matches reports, in constant time, whether secret has that hash.
	Matches(hash, secret []byte) bool
}

// NodeStatus is one node's state as `sigillo cluster status --json` shows
// it. Lag is filled by Service.Status: the leader's applied index minus
// this node's.
type NodeStatus struct {
	ID            string `json:"id"`
	Address       string `json:"address"`
	Role          string `json:"role"` // leader, follower, candidate, unreachable…
	AppliedIndex  uint64 `json:"applied_index"`
	Ready         bool   `json:"ready"`
	Lag           uint64 `json:"lag"`
	CommitIndex   uint64 `json:"commit_index"`
	LastContactMS int64  `json:"last_contact_ms"`
	Version       string `json:"version"`
	Reason        string `json:"reason,omitempty"`
	// CommitP50MS and CommitP99MS are how long this node's latest
	// commands took to commit (raftfsm.Node.CommitLatency), in ms: on the
	// leader, every write of the cluster.
	CommitP50MS float64 `json:"commit_p50_ms,omitempty"`
	CommitP99MS float64 `json:"commit_p99_ms,omitempty"`
}

// Report is the whole of `sigillo cluster status --json`.
type Report struct {
	Nodes []NodeStatus `json:"nodes"`
}

// The roles a node reports beside raft's own states.
const (
	RoleLeader      = "leader"
	RoleFollower    = "follower"
	RoleUnreachable = "unreachable"
)

// Service answers the cluster RPC of one node. Node, Store, Proposer,
// Client, PeerNode, CA, JoinTokens, NodeID and Advertise are needed; the rest
// have defaults.
type Service struct {
	Node Raft
	// Health is this node's own status (role, indexes, readiness and
	// why); nil derives a plain one from Node.
	Health func() NodeStatus
	// Store reads the join tokens; Proposer writes them (a Forwarder, so
	// that it works on any node).
	Store    KV
	Proposer storage.Proposer
	// Client reaches the other nodes as this node.
	Client Doer
	// PeerNode says which node a request comes from (from its client
	// certificate); false for a client without a node certificate.
	PeerNode   func(r *http.Request) (nodeID string, ok bool)
	CA         Issuer
	JoinTokens TokenCodec
	// Secrets are the files every node needs to serve (the ACME storage
	// key…), by name, handed to a node that enrolls.
	Secrets   func() (map[string][]byte, error)
	NodeID    string
	Advertise string
	Version   string
	Logger    *slog.Logger
	Now       func() time.Time
	// MaxApplyBytes bounds a forwarded command (default 256 MiB).
	MaxApplyBytes int64
	// TokenTTL is how long a join token is valid by default (24 h).
	TokenTTL time.Duration
}

func (s *Service) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// The RPC paths.
const (
	PathEnroll = "/cluster/v1/enroll"
	PathAdd    = "/cluster/v1/add"
	PathApply  = "/cluster/v1/apply"
	PathStatus = "/cluster/v1/status"
	PathRemove = "/cluster/v1/remove"
)

// Headers between nodes. A request passed on by a follower carries
// hdrForwarded (it is not passed on again) and, for add, the node that
// asked (hdrPeer), which the leader trusts because the follower is a node.
const (
	hdrForwarded = "X-Sigillo-Forwarded"
	hdrPeer      = "X-Sigillo-Peer"
)

// Error codes in an RPC's error answer.
const (
	codeNotLeader   = "not_leader"
	codeUnavailable = "unavailable"
	codeForbidden   = "forbidden"
	codeInvalid     = "invalid"
)

// rpcError is the body of an RPC's error answer.
type rpcError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Leader and LeaderAddr, with code not_leader: where to go.
	Leader     string `json:"leader,omitempty"`
	LeaderAddr string `json:"leader_addr,omitempty"`
}

func (e *rpcError) Error() string { return e.Code + ": " + e.Message }

// Handler routes the RPC. Every call but enroll needs a peer with a node
// certificate.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathEnroll, s.handleEnroll)
	mux.Handle("POST "+PathAdd, s.requireNode(s.handleAdd))
	mux.Handle("POST "+PathApply, s.requireNode(s.handleApply))
	mux.Handle("GET "+PathStatus, s.requireNode(s.handleStatus))
	mux.Handle("POST "+PathRemove, s.requireNode(s.handleRemove))
	return mux
}

type peerKey struct{}

// requireNode refuses a request that does not come from a node.
func (s *Service) requireNode(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := "", false
		if s.PeerNode != nil {
			id, ok = s.PeerNode(r)
		}
		if !ok || id == "" {
			writeError(w, http.StatusForbidden, &rpcError{Code: codeForbidden, Message: "a node certificate is needed"})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, id)))
	})
}

func peerOf(r *http.Request) string {
	id, _ := r.Context().Value(peerKey{}).(string)
	return id
}

func (s *Service) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.self())
}

// self is this node's own status.
func (s *Service) self() NodeStatus {
	var st NodeStatus
	if s.Health != nil {
		st = s.Health()
	} else {
		st = plainStatus(s.Node)
	}
	if st.ID == "" {
		st.ID = s.NodeID
	}
	if st.Address == "" {
		st.Address = s.Advertise
	}
	if st.Version == "" {
		st.Version = s.Version
	}
	return st
}

// leaderOrAnswer returns true when this node leads; otherwise it passes a
// request on to the leader (body as read) and returns false. A request
// already passed on once, or with no leader known, is answered with
// not_leader or unavailable instead.
func (s *Service) leaderOrAnswer(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if s.Node.IsLeader() {
		return true
	}
	id, addr := s.Node.Leader()
	switch {
	case addr == "" || id == s.NodeID:
		writeError(w, http.StatusServiceUnavailable, &rpcError{Code: codeUnavailable, Message: "no leader known"})
		return false
	case r.Header.Get(hdrForwarded) != "":
		writeError(w, http.StatusMisdirectedRequest, notLeader(id, addr))
		return false
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "https://"+addr+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusInternalServerError, &rpcError{Code: codeInvalid, Message: err.Error()})
		return false
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	req.Header.Set(hdrForwarded, s.NodeID)
	if p := peerOf(r); p != "" {
		req.Header.Set(hdrPeer, p)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		s.logger().Warn("passing a request on to the leader failed", "path", r.URL.Path, "leader", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, &rpcError{Code: codeUnavailable,
			Message: fmt.Sprintf("leader %s at %s unreachable: %v", id, addr, err)})
		return false
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, io.LimitReader(resp.Body, maxAnswer)); err != nil {
		s.logger().Debug("copying the leader's answer", "path", r.URL.Path, "err", err)
	}
	return false
}

// maxAnswer bounds the JSON answers read from another node; maxRequest
// the JSON requests (all but apply).
const (
	maxAnswer  = 1 << 20
	maxRequest = 64 << 10
)

func notLeader(id, addr string) *rpcError {
	return &rpcError{Code: codeNotLeader, Message: "this node does not lead the cluster", Leader: id, LeaderAddr: addr}
}

// statusFor answers an error from the raft node.
func statusFor(err error, n Raft) (int, *rpcError) {
	switch {
	case errors.Is(err, raftfsm.ErrNotLeader):
		id, addr := n.Leader()
		return http.StatusMisdirectedRequest, notLeader(id, addr)
	case errors.Is(err, raftfsm.ErrUnavailable):
		return http.StatusServiceUnavailable, &rpcError{Code: codeUnavailable, Message: err.Error()}
	default:
		return http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: err.Error()}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, e *rpcError) { writeJSON(w, code, e) }

// readJSON reads a small JSON request body into v.
func readJSON(w http.ResponseWriter, r *http.Request, v any) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err == nil {
		err = json.Unmarshal(body, v)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: "bad request: " + err.Error()})
		return nil, false
	}
	return body, true
}

// call posts body (JSON) to path on the node at addr and decodes a 200
// answer into out. Another answer is an *rpcError (with the HTTP status
// in statusErr); a failure to reach the node is returned as is.
func call(ctx context.Context, c Doer, method, addr, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("read the answer of %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &rpcError{}
		if json.Unmarshal(data, e) != nil || e.Code == "" {
			e = &rpcError{Code: http.StatusText(resp.StatusCode), Message: string(truncate(data, 200))}
		}
		return &statusErr{status: resp.StatusCode, err: e}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("answer of %s: %w", addr, err)
	}
	return nil
}

// statusErr is an error answer of another node.
type statusErr struct {
	status int
	err    *rpcError
}

func (e *statusErr) Error() string { return fmt.Sprintf("%d %s", e.status, e.err.Error()) }

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
