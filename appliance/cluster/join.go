package cluster

// Joining: a new node enrolls with a join token (it gets its node
// certificate and the secrets every node needs), starts listening, and
// then asks to be added as a voter. Removing a node is the operator's.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"sigillo/raftfsm"
	"sigillo/storage"
)

// ErrTokenRejected means the cluster refused a join token: unknown,
// expired, revoked or wrong. Trying again with it is pointless.
var ErrTokenRejected = errors.New("join token rejected")

// ErrForbidden means the cluster refused a request for who asked (not a
// node, or a node asking for another).
var ErrForbidden = errors.New("refused by the cluster")

// EnrollRequest is what a joining node sends with its join token.
type EnrollRequest struct {
	NodeID    string `json:"node_id"`
	Advertise string `json:"advertise"`
	Token     string `json:"token"`
	// PublicKey is the node's key (PKIX, DER) to be certified.
	PublicKey []byte `json:"public_key"`
}

// EnrollResponse is what an enrolled node gets: its certificate and the
// cluster CA's (PEM), and the secrets every node needs, by name.
type EnrollResponse struct {
	Cert    string            `json:"cert"`
	CA      string            `json:"ca"`
	Secrets map[string][]byte `json:"secrets"`
}

// addRequest asks for a node to become a voter; removeRequest for one to
// leave.
type addRequest struct {
	NodeID    string `json:"node_id"`
	Advertise string `json:"advertise"`
}

type removeRequest struct {
	NodeID string `json:"node_id"`
}

// TokenPrefix is where join tokens live in the replicated store, one key
// per token id, holding a tokenRecord.
const TokenPrefix = "cluster/token/"

type tokenRecord struct {
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// TokenInfo describes a join token without its secret.
type TokenInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Expired bool      `json:"expired"`
}

// validNodeID accepts 1 to 64 letters, digits, '.', '-' and '_'.
func validNodeID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("node id %q: 1 to 64 characters", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("node id %q: only letters, digits, '.', '-' and '_'", id)
		}
	}
	return nil
}

func validAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	return nil
}

func (s *Service) handleEnroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	body, ok := readJSON(w, r, &req)
	if !ok {
		return
	}
	if err := errors.Join(validNodeID(req.NodeID), validAddress(req.Advertise)); err != nil {
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: err.Error()})
		return
	}
	if !s.leaderOrAnswer(w, r, body) {
		return
	}
	tokenID, err := s.checkToken(r.Context(), req.Token)
	if err != nil {
		// Why, for the operator; not the token itself.
		s.logger().Warn("enroll refused", "node", req.NodeID, "advertise", req.Advertise, "remote", r.RemoteAddr, "why", err)
		writeError(w, http.StatusForbidden, &rpcError{Code: codeForbidden, Message: "invalid, expired or revoked join token"})
		return
	}
	pub, err := x509.ParsePKIXPublicKey(req.PublicKey)
	if err != nil {
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: "public key: " + err.Error()})
		return
	}
	cert, err := s.CA.Issue(req.NodeID, pub, s.now())
	if err != nil {
		s.logger().Error("issuing a node certificate failed", "node", req.NodeID, "err", err)
		writeError(w, http.StatusInternalServerError, &rpcError{Code: codeUnavailable, Message: "cannot issue the certificate"})
		return
	}
	resp := EnrollResponse{Cert: string(cert), CA: string(s.CA.CertPEM()), Secrets: map[string][]byte{}}
	if s.Secrets != nil {
		if resp.Secrets, err = s.Secrets(); err != nil {
			s.logger().Error("reading the secrets for a joining node failed", "node", req.NodeID, "err", err)
			writeError(w, http.StatusInternalServerError, &rpcError{Code: codeUnavailable, Message: "cannot read the secrets"})
			return
		}
	}
	s.logger().Info("node enrolled", "node", req.NodeID, "advertise", req.Advertise, "token", tokenID, "secrets", len(resp.Secrets))
	writeJSON(w, http.StatusOK, resp)
}

// checkToken returns the id of a valid token line, or why it is not.
func (s *Service) checkToken(ctx context.Context, line string) (string, error) {
	id, secret, err := s.JoinTokens.Parse(line)
	if err != nil {
		return "", fmt.Errorf("unreadable token: %w", err)
	}
	if validNodeID(id) != nil {
		return "", fmt.Errorf("token id %q is not valid", id)
	}
	rec, err := s.token(ctx, id)
	if err != nil {
		return id, err
	}
	if !s.now().Before(rec.Expires) {
		return id, fmt.Errorf("token %s expired at %s", id, rec.Expires.Format(time.RFC3339))
	}
	if !s.JoinTokens.Matches(rec.Hash, secret) {
		return id, fmt.Errorf("token %s: wrong secret", id)
	}
	return id, nil
}

func (s *Service) token(ctx context.Context, id string) (tokenRecord, error) {
	var rec tokenRecord
	data, err := s.Store.KV(ctx, TokenPrefix+id)
	if storage.IsCode(err, storage.ErrNotFound) {
		return rec, fmt.Errorf("no token %s (never made, or revoked)", id)
	}
	if err != nil {
		return rec, fmt.Errorf("token %s: %w", id, err)
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("token %s: %w", id, err)
	}
	return rec, nil
}

func (s *Service) handleAdd(w http.ResponseWriter, r *http.Request) {
	var req addRequest
	body, ok := readJSON(w, r, &req)
	if !ok {
		return
	}
	if err := errors.Join(validNodeID(req.NodeID), validAddress(req.Advertise)); err != nil {
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: err.Error()})
		return
	}
	// A node adds only itself. A request a follower passed on names the
	// node that asked it; the follower is a node, and so trusted.
	asker := peerOf(r)
	if p := r.Header.Get(hdrPeer); p != "" && r.Header.Get(hdrForwarded) != "" {
		asker = p
	}
	if asker != req.NodeID {
		writeError(w, http.StatusForbidden, &rpcError{Code: codeForbidden,
			Message: fmt.Sprintf("node %s cannot add node %s", asker, req.NodeID)})
		return
	}
	if !s.leaderOrAnswer(w, r, body) {
		return
	}
	if err := s.Node.AddVoter(r.Context(), req.NodeID, req.Advertise); err != nil {
		s.logger().Warn("adding a voter failed", "node", req.NodeID, "advertise", req.Advertise, "err", err)
		code, e := statusFor(err, s.Node)
		writeError(w, code, e)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Service) handleRemove(w http.ResponseWriter, r *http.Request) {
	var req removeRequest
	body, ok := readJSON(w, r, &req)
	if !ok {
		return
	}
	if !s.leaderOrAnswer(w, r, body) {
		return
	}
	s.logger().Info("removing a node", "node", req.NodeID, "asked_by", peerOf(r))
	if err := s.Node.RemoveServer(r.Context(), req.NodeID); err != nil {
		code, e := statusFor(err, s.Node)
		if errors.Is(err, raftfsm.ErrNoSuchServer) {
			code, e = http.StatusNotFound, &rpcError{Code: codeNotFound, Message: err.Error()}
		}
		writeError(w, code, e)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

const codeNotFound = "not_found"

// Remove takes nodeID out of the cluster, on the leader (through it when
// this node does not lead). An unknown node is raftfsm.ErrNoSuchServer.
func (s *Service) Remove(ctx context.Context, nodeID string) error {
	if s.Node.IsLeader() {
		err := s.Node.RemoveServer(ctx, nodeID)
		if !errors.Is(err, raftfsm.ErrNotLeader) {
			return err
		}
	}
	_, addr := s.Node.Leader()
	if addr == "" {
		return fmt.Errorf("remove %s: %w: no leader known", nodeID, raftfsm.ErrUnavailable)
	}
	if err := call(ctx, s.Client, http.MethodPost, addr, PathRemove, removeRequest{NodeID: nodeID}, nil); err != nil {
		return fmt.Errorf("remove %s through the leader at %s: %w", nodeID, addr, remoteErr(err))
	}
	return nil
}

// remoteErr maps another node's answer to this package's and raftfsm's
// errors.
func remoteErr(err error) error {
	var se *statusErr
	if !errors.As(err, &se) {
		return fmt.Errorf("%w: %w", raftfsm.ErrUnavailable, err)
	}
	switch se.err.Code {
	case codeNotFound:
		return fmt.Errorf("%w: %s", raftfsm.ErrNoSuchServer, se.err.Message)
	case codeForbidden:
		return fmt.Errorf("%w: %s", ErrForbidden, se.err.Message)
	case codeInvalid:
		return fmt.Errorf("invalid request: %s", se.err.Message)
	}
	return fmt.Errorf("%w: %w", raftfsm.ErrUnavailable, se)
}

// NewToken makes a join token valid for ttl (0: TokenTTL, default 24 h),
// stores its hash (through Proposer, so on any node) and returns the line
// to give the joining node. The secret is stored nowhere.
func (s *Service) NewToken(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = s.TokenTTL
	}
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	line, id, hash, err := s.JoinTokens.Make()
	if err != nil {
		return "", fmt.Errorf("make a join token: %w", err)
	}
	now := s.now()
	rec, err := json.Marshal(tokenRecord{Hash: hash, Created: now.UTC(), Expires: now.Add(ttl).UTC()})
	if err != nil {
		return "", err
	}
	if _, err := s.Proposer.Apply(ctx, &storage.PutKV{Key: TokenPrefix + id, Value: rec}); err != nil {
		return "", fmt.Errorf("store join token %s: %w", id, err)
	}
	s.logger().Info("join token made", "token", id, "expires", now.Add(ttl).UTC().Format(time.RFC3339))
	return line, nil
}

// RevokeToken deletes the join token id. An id this node does not know is
// an error: revoke on the node the token was made on, or give the others
// a moment (what this node reads may lag the leader by an instant).
func (s *Service) RevokeToken(ctx context.Context, id string) error {
	if validNodeID(id) != nil {
		return fmt.Errorf("revoke join token %q: not a token id", id)
	}
	if _, err := s.Store.KV(ctx, TokenPrefix+id); err != nil {
		return fmt.Errorf("revoke join token %s: %w", id, err)
	}
	if _, err := s.Proposer.Apply(ctx, &storage.DeleteKV{Key: TokenPrefix + id}); err != nil {
		return fmt.Errorf("revoke join token %s: %w", id, err)
	}
	s.logger().Info("join token revoked", "token", id)
	return nil
}

// Tokens lists the join tokens, expired ones included, without secrets.
func (s *Service) Tokens(ctx context.Context) ([]TokenInfo, error) {
	keys, err := s.Store.KVKeys(ctx, TokenPrefix)
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	now := s.now()
	out := make([]TokenInfo, 0, len(keys))
	for _, k := range keys {
		id := k[len(TokenPrefix):]
		rec, err := s.token(ctx, id)
		if err != nil {
			continue // revoked meanwhile
		}
		out = append(out, TokenInfo{ID: id, Created: rec.Created, Expires: rec.Expires, Expired: !now.Before(rec.Expires)})
	}
	return out, nil
}

// attemptTimeout bounds one try of a joining node's call to one member.
const attemptTimeout = 30 * time.Second

// Enroll asks the members, one after the other, to enroll this node with
// its join token, waiting longer after each round, until one answers or
// ctx ends. A rejected token (ErrTokenRejected) or request ends it at once.
// client reaches the members before this node has a certificate (it
// checks the cluster's by the pin in the token).
func Enroll(ctx context.Context, client Doer, members []string, req EnrollRequest) (EnrollResponse, error) {
	var resp EnrollResponse
	err := tryMembers(ctx, members, func(ctx context.Context, addr string) error {
		return call(ctx, client, http.MethodPost, addr, PathEnroll, req, &resp)
	})
	if errors.Is(err, ErrForbidden) {
		err = fmt.Errorf("%w: %w", ErrTokenRejected, err)
	}
	if err != nil {
		return EnrollResponse{}, fmt.Errorf("enroll %s: %w", req.NodeID, err)
	}
	return resp, nil
}

// AddSelf asks the members, one after the other, to make this node a
// voter at advertise, until one answers or ctx ends; client presents the
// node's certificate. Being added twice is harmless. The node must already
// answer raft at advertise: the change commits only once it does.
func AddSelf(ctx context.Context, client Doer, members []string, nodeID, advertise string) error {
	err := tryMembers(ctx, members, func(ctx context.Context, addr string) error {
		return call(ctx, client, http.MethodPost, addr, PathAdd, addRequest{NodeID: nodeID, Advertise: advertise}, nil)
	})
	if err != nil {
		return fmt.Errorf("add %s at %s: %w", nodeID, advertise, err)
	}
	return nil
}

// tryMembers calls try on each member in turn until one succeeds, with a
// pause after each round (250 ms doubling to 5 s). A refusal (403, 400)
// ends it; ctx's end too, with the last failure.
func tryMembers(ctx context.Context, members []string, try func(ctx context.Context, addr string) error) error {
	if len(members) == 0 {
		return errors.New("no member to ask")
	}
	pause := 250 * time.Millisecond
	var last error
	for {
		for _, m := range members {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout)
			err := try(actx, m)
			cancel()
			if err == nil {
				return nil
			}
			var se *statusErr
			if errors.As(err, &se) && (se.status == http.StatusForbidden || se.status == http.StatusBadRequest) {
				return fmt.Errorf("%s: %w", m, remoteErr(err))
			}
			last = fmt.Errorf("%s: %w", m, err)
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}
