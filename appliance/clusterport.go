package appliance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/cluster"
	"sigillo/appliance/clusternet"
	"sigillo/appliance/config"
	"sigillo/appliance/datalock"
	"sigillo/appliance/manage"
	"sigillo/appliance/nodeid"
	"sigillo/appliance/tlsmgr/certstore"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// Keys of the cluster CA in the replicated store: every node has it, so
// that whichever leads can certify a joining node.
const (
	keyClusterCACert = "cluster/ca/cert.pem"
	keyClusterCAKey  = "cluster/ca/key.pem"
)

// acmeKeyFile is the ACME storage key in the data directory: every node
// must have the same one, and a joining node gets it in the join.
const acmeKeyFile = "acme-storage.key"

// clusterPort is a clustered node's side of the cluster: its identity
// (certificate from the cluster CA), the one port of mutual TLS that
// carries raft and the cluster RPC, and how it came to be.
type clusterPort struct {
	cfg       config.Cluster
	dataDir   string
	nodeID    string
	id        *clusternet.Identity
	mux       *clusternet.Mux
	transport raft.Transport
	// bootstrap: this node starts the cluster (no join list).
	bootstrap bool
	// newCA is the cluster CA this start made, to store once leading.
	newCA *clusternet.CA
	// enrolled: this start got the node its certificate through a join
	// token, so it must be added and catch up before serving.
	enrolled bool
	log      *slog.Logger
	// served is closed when the RPC server has stopped (after close).
	served chan struct{}
}

// close stops the port (after raft: its transport runs on it) and waits
// for the RPC server.
func (p *clusterPort) close() {
	p.mux.Close()
	if p.served != nil {
		<-p.served
	}
}

// openClusterPort gets the node its identity (made at bootstrap, or by
// enrolling with the join token through a member) and opens the cluster
// port. It waits, retrying, until a member answers the enrolment or ctx
// ends.
func openClusterPort(ctx context.Context, cfg config.Config, nodeID, raftDir string, store *storage.Store, log *slog.Logger) (*clusterPort, error) {
	c := cfg.Cluster
	p := &clusterPort{cfg: c, dataDir: cfg.DataDir, nodeID: nodeID, bootstrap: len(c.Join) == 0, log: log.With("component", "cluster")}
	dir := filepath.Join(cfg.DataDir, "cluster")
	id, err := clusternet.LoadIdentity(dir)
	switch {
	case err == nil:
		if id.NodeID != nodeID {
			return nil, fmt.Errorf("cluster: the certificate in %s is node %s's, not %s's", dir, id.NodeID, nodeID)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("cluster: %w", err)
	case p.bootstrap:
		if id, err = p.certifySelf(ctx, dir, store, nodeid.HasRaftState(raftDir)); err != nil {
			return nil, err
		}
	default:
		if id, err = p.enroll(ctx, dir); err != nil {
			return nil, err
		}
		p.enrolled = true
	}
	p.id = id
	if p.mux, err = clusternet.Listen(c.RaftAddr, id, p.log); err != nil {
		return nil, fmt.Errorf("cluster: listen on raft_addr %s: %w", c.RaftAddr, err)
	}
	p.transport = raft.NewNetworkTransport(p.mux.StreamLayer(c.AdvertiseAddr()), 3, 10*time.Second, warnWriter{p.log})
	return p, nil
}

// certifySelf makes the first node's certificate, from the cluster CA in
// the store (a one-node cluster given a raft_addr) or a new one.
func (p *clusterPort) certifySelf(ctx context.Context, dir string, store *storage.Store, hasState bool) (*clusternet.Identity, error) {
	var ca *clusternet.CA
	if hasState {
		certPEM, err1 := store.KV(ctx, keyClusterCACert)
		keyPEM, err2 := store.KV(ctx, keyClusterCAKey)
		if err1 == nil && err2 == nil {
			var err error
			if ca, err = clusternet.ParseCA(certPEM, keyPEM); err != nil {
				return nil, fmt.Errorf("cluster: the cluster CA in the store: %w", err)
			}
		}
	}
	if ca == nil {
		var err error
		if ca, err = clusternet.NewCA("Sigillo cluster "+p.nodeID, time.Now()); err != nil {
			return nil, fmt.Errorf("cluster: make the cluster CA: %w", err)
		}
		p.newCA = ca
	}
	keyPEM, pub, err := clusternet.NewNodeKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.Issue(p.nodeID, pub, time.Now())
	if err != nil {
		return nil, fmt.Errorf("cluster: certify this node: %w", err)
	}
	if err := clusternet.SaveIdentity(dir, certPEM, keyPEM, ca.CertPEM); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	p.log.Info("this node starts a new cluster: cluster CA and node certificate made", "node", p.nodeID)
	return clusternet.LoadIdentity(dir)
}

// enroll asks a member for this node's certificate with the join token,
// and keeps the secrets every node needs.
func (p *clusterPort) enroll(ctx context.Context, dir string) (*clusternet.Identity, error) {
	if p.cfg.TokenFile == "" {
		return nil, errors.New("cluster: this node has not joined yet: set [cluster] token_file to a file holding `sigillo cluster token` of a member")
	}
	raw, err := os.ReadFile(p.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: token_file: %w", err)
	}
	tok, err := clusternet.ParseToken(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("cluster: token_file %s: %w", p.cfg.TokenFile, err)
	}
	keyPEM, pub, err := clusternet.NewNodeKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	p.log.Info("joining the cluster", "node", p.nodeID, "through", p.cfg.Join)
	resp, err := cluster.Enroll(ctx, clusternet.JoinClient(tok.CAPin), p.cfg.Join, cluster.EnrollRequest{
		NodeID: p.nodeID, Advertise: p.cfg.AdvertiseAddr(), Token: tok.String(), PublicKey: der})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for name, value := range resp.Secrets {
		if name != acmeKeyFile {
			p.log.Warn("the cluster sent a secret this version does not know; ignored", "name", name)
			continue
		}
		if err := writeSecret(filepath.Join(p.dataDir, name), value); err != nil {
			return nil, fmt.Errorf("cluster: keep %s: %w", name, err)
		}
	}
	if err := clusternet.SaveIdentity(dir, []byte(resp.Cert), keyPEM, []byte(resp.CA)); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	p.log.Info("enrolled: node certificate received", "node", p.nodeID)
	return clusternet.LoadIdentity(dir)
}

// writeSecret puts value in path (0600), replacing what differs.
func writeSecret(path string, value []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, value) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, value, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// serve starts the cluster RPC on the port and settles the node's place:
// the first node stores the cluster CA and its own address; a node that
// joins asks to be added and waits until it has caught up, so that
// nothing it serves is older than the cluster's state; a node restarted
// with its data asks again in the background (harmless when nothing
// changed). It returns the write path every front end uses, and the
// function that stops what it started.
func (p *clusterPort) serve(ctx context.Context, node *raftfsm.Node, store *storage.Store, health func() raftfsm.Health) (*cluster.Forwarder, *cluster.Service, func(), error) {
	client := clusternet.NewClient(p.id)
	fwd := &cluster.Forwarder{Node: node, Client: client, Logger: p.log}
	svc := &cluster.Service{
		Node: node, Store: store, Proposer: fwd, Client: client, PeerNode: clusternet.PeerNode,
		CA: storedCA{store: store, certPEM: pemOf(p.id.CA)}, JoinTokens: tokenCodec{ca: p.id.CA},
		Secrets: func() (map[string][]byte, error) {
			key, err := certstore.LoadOrCreateKey(filepath.Join(p.dataDir, acmeKeyFile))
			if err != nil {
				return nil, err
			}
			return map[string][]byte{acmeKeyFile: key}, nil
		},
		NodeID: p.nodeID, Advertise: p.cfg.AdvertiseAddr(), Version: Version, Logger: p.log,
		Health: func() cluster.NodeStatus {
			st := nodeStatus(p.nodeID, p.cfg.AdvertiseAddr(), health())
			st.CommitP50MS, st.CommitP99MS = commitMS(node)
			return st
		},
	}
	p.served = make(chan struct{})
	go func() {
		defer close(p.served)
		if err := p.mux.ServeRPC(svc.Handler()); err != nil {
			p.log.Error("cluster RPC stopped", "err", err)
		}
	}()
	bg, stopBG := context.WithCancel(context.Background())
	done := make(chan struct{})
	stop := func() {
		stopBG()
		<-done
	}
	fail := func(err error) (*cluster.Forwarder, *cluster.Service, func(), error) {
		close(done)
		stop()
		return nil, nil, nil, err
	}
	switch {
	case p.bootstrap:
		// Open returned leading (the sole voter): store the CA, and this
		// node's address if it was a one-node cluster until now.
		if p.newCA != nil {
			keyPEM, err := p.newCA.KeyPEM()
			if err != nil {
				return fail(err)
			}
			for _, kv := range []storage.PutKV{{Key: keyClusterCAKey, Value: keyPEM}, {Key: keyClusterCACert, Value: p.newCA.CertPEM}} {
				if _, err := node.Apply(ctx, &kv); err != nil {
					return fail(fmt.Errorf("cluster: store the cluster CA: %w", err))
				}
			}
		}
		if node.IsLeader() {
			if err := node.AddVoter(ctx, p.nodeID, p.cfg.AdvertiseAddr()); err != nil {
				return fail(fmt.Errorf("cluster: this node's address: %w", err))
			}
		}
		close(done)
	case p.enrolled:
		if err := cluster.AddSelf(ctx, client, p.cfg.Join, p.nodeID, p.cfg.AdvertiseAddr()); err != nil {
			return fail(fmt.Errorf("cluster: %w", err))
		}
		if err := catchUp(ctx, fwd, p.nodeID); err != nil {
			return fail(err)
		}
		p.log.Info("joined the cluster and caught up", "node", p.nodeID, "applied", node.AppliedIndex())
		close(done)
	default:
		go func() {
			defer close(done)
			if err := cluster.AddSelf(bg, client, p.cfg.Join, p.nodeID, p.cfg.AdvertiseAddr()); err != nil && bg.Err() == nil {
				p.log.Warn("could not confirm this node's membership", "err", err)
			}
		}()
	}
	return fwd, svc, stop, nil
}

// catchUp writes through the leader and waits for the write here: every
// entry before it is then applied on this node too.
func catchUp(ctx context.Context, fwd *cluster.Forwarder, nodeID string) error {
	for {
		_, err := fwd.Apply(ctx, &storage.PutKV{Key: "cluster/joined/" + nodeID, Value: []byte(Version)})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("cluster: catching up: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// storedCA certifies joining nodes with the cluster CA of the replicated
// store (whichever node leads has it).
type storedCA struct {
	store   *storage.Store
	certPEM []byte
}

func (s storedCA) Issue(nodeID string, pub crypto.PublicKey, now time.Time) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	certPEM, err := s.store.KV(ctx, keyClusterCACert)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	keyPEM, err := s.store.KV(ctx, keyClusterCAKey)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	ca, err := clusternet.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	return ca.Issue(nodeID, pub, now)
}

func (s storedCA) CertPEM() []byte { return s.certPEM }

// tokenCodec is clusternet's join token as the cluster service uses it.
type tokenCodec struct{ ca *x509.Certificate }

func (c tokenCodec) Make() (string, string, []byte, error) {
	t, err := clusternet.NewToken(c.ca)
	if err != nil {
		return "", "", nil, err
	}
	return t.String(), t.ID, []byte(clusternet.HashSecret(t.Secret)), nil
}

func (tokenCodec) Parse(line string) (string, []byte, error) {
	t, err := clusternet.ParseToken(line)
	return t.ID, t.Secret, err
}

func (tokenCodec) Matches(hash, secret []byte) bool {
	return subtle.ConstantTimeCompare(hash, []byte(clusternet.HashSecret(secret))) == 1
}

// nodeStatus is this node's line of `cluster status`.
func nodeStatus(id, addr string, h raftfsm.Health) cluster.NodeStatus {
	return cluster.NodeStatus{ID: id, Address: addr, Role: h.Role, AppliedIndex: h.Applied, CommitIndex: h.Commit,
		LastContactMS: h.LastContact.Milliseconds(), Version: Version, Ready: h.Ready, Reason: h.Reason}
}

// commitMS is the node's commit latency (p50, p99) in milliseconds.
func commitMS(node *raftfsm.Node) (p50, p99 float64) {
	a, b := node.CommitLatency()
	return float64(a.Microseconds()) / 1000, float64(b.Microseconds()) / 1000
}

// clusterOps answers the cluster operations of manage.
type clusterOps struct{ svc *cluster.Service }

func (c clusterOps) Nodes(ctx context.Context) ([]manage.ClusterNode, error) {
	st, err := c.svc.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]manage.ClusterNode, 0, len(st))
	for _, n := range st {
		out = append(out, manage.ClusterNode{ID: n.ID, Address: n.Address, Role: n.Role, AppliedIndex: n.AppliedIndex, Lag: n.Lag,
			LastContactMS: n.LastContactMS, Version: n.Version, Ready: n.Ready, Reason: n.Reason,
			CommitP50MS: n.CommitP50MS, CommitP99MS: n.CommitP99MS})
	}
	return out, nil
}

func (c clusterOps) NewToken(ctx context.Context, ttl time.Duration) (string, error) {
	return c.svc.NewToken(ctx, ttl)
}

func (c clusterOps) Remove(ctx context.Context, id string) error { return c.svc.Remove(ctx, id) }

func (c clusterOps) Tokens(ctx context.Context) ([]manage.JoinToken, error) {
	ts, err := c.svc.Tokens(ctx)
	out := make([]manage.JoinToken, 0, len(ts))
	for _, t := range ts {
		out = append(out, manage.JoinToken{ID: t.ID, Created: t.Created, Expires: t.Expires, Expired: t.Expired})
	}
	return out, err
}

func (c clusterOps) RevokeToken(ctx context.Context, id string) error {
	return c.svc.RevokeToken(ctx, id)
}

// loneNode answers the cluster operations of a node without raft_addr.
type loneNode struct {
	id   string
	node *raftfsm.Node
}

func (l loneNode) Nodes(context.Context) ([]manage.ClusterNode, error) {
	h := l.node.Health()
	p50, p99 := commitMS(l.node)
	return []manage.ClusterNode{{ID: l.id, Address: "(none: no raft_addr)", Role: h.Role, AppliedIndex: h.Applied,
		Version: Version, Ready: h.Ready, Reason: h.Reason, CommitP50MS: p50, CommitP99MS: p99}}, nil
}

func (loneNode) NewToken(context.Context, time.Duration) (string, error) {
	return "", manage.ErrNotClustered
}
func (loneNode) Remove(context.Context, string) error { return manage.ErrNotClustered }

// RecoverCluster makes the stopped node of cfg the only member of its
// cluster, for when a majority of the nodes is lost for good (raft's
// RecoverCluster). It returns the node's ID.
func RecoverCluster(cfg config.Config) (string, error) {
	if _, err := os.Stat(cfg.DataDir); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	// The server must be stopped: its lock says so.
	lock, err := datalock.Acquire(cfg.DataDir)
	if err != nil {
		return "", err
	}
	defer lock.Release()
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if !nodeid.HasRaftState(raftDir) {
		return "", fmt.Errorf("no raft state in %s: nothing to recover", raftDir)
	}
	id, err := nodeid.Load(cfg.DataDir, raftDir, cfg.Cluster.NodeID)
	if err != nil {
		return "", err
	}
	store, err := storage.Open(DatabaseFile(cfg))
	if err != nil {
		return "", err
	}
	defer store.Close()
	addr := cfg.Cluster.AdvertiseAddr()
	if addr == "" {
		addr = id // the in-memory transport's address of a lone node
	}
	servers := []raft.Server{{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter}}
	if err := raftfsm.Recover(raftfsm.Config{Dir: raftDir, NodeID: id}, store, servers); err != nil {
		return "", err
	}
	return id, nil
}

// warnWriter logs raft transport lines at warn.
type warnWriter struct{ l *slog.Logger }

func (w warnWriter) Write(b []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}

var _ io.Writer = warnWriter{}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func (loneNode) Tokens(context.Context) ([]manage.JoinToken, error) {
	return nil, manage.ErrNotClustered
}
func (loneNode) RevokeToken(context.Context, string) error { return manage.ErrNotClustered }
