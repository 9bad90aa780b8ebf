package cluster

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/apptest"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// testCA is a cluster CA made for the test: it signs the nodes'
// certificates (CN = node id, for 127.0.0.1) and is the Issuer of enroll.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: pool}
}

func (ca *testCA) CertPEM() []byte { return ca.pem }

func (ca *testCA) Issue(nodeID string, pub crypto.PublicKey, now time.Time) ([]byte, error) {
	der, err := ca.sign(nodeID, pub, now)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func (ca *testCA) sign(nodeID string, pub crypto.PublicKey, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: nodeID},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{nodeID}}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// nodeCert is a key and certificate for nodeID.
func (ca *testCA) nodeCert(t *testing.T, nodeID string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.sign(nodeID, &key.PublicKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// client reaches the nodes as cert (none: a stranger, or a joining node
// that trusts the cluster CA).
func (ca *testCA) client(certs ...tls.Certificate) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool, Certificates: certs, MinVersion: tls.VersionTLS12}}}
}

// peerByCN maps a request to the node its verified client certificate
// names.
func peerByCN(r *http.Request) (string, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", false
	}
	return r.TLS.PeerCertificates[0].Subject.CommonName, true
}

// testTokens is a join token codec: "sgtest.<id>.<secret>", SHA-256 hash.
type testTokens struct{}

func (testTokens) Make() (string, string, []byte, error) {
	id, secret := make([]byte, 4), make([]byte, 16)
	rand.Read(id)
	rand.Read(secret)
	sum := sha256.Sum256(secret)
	return "sgtest." + hex.EncodeToString(id) + "." + base64.RawURLEncoding.EncodeToString(secret), hex.EncodeToString(id), sum[:], nil
}

func (testTokens) Parse(line string) (string, []byte, error) {
	parts := strings.Split(strings.TrimSpace(line), ".")
	if len(parts) != 3 || parts[0] != "sgtest" {
		return "", nil, errors.New("not a join token")
	}
	secret, err := base64.RawURLEncoding.DecodeString(parts[2])
	return parts[1], secret, err
}

func (testTokens) Matches(hash, secret []byte) bool {
	sum := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(sum[:], hash) == 1
}

// testNode is one node of the test cluster: a raftfsm node on an
// in-memory raft transport whose address is that of its RPC server, a
// real TLS server that asks for client certificates.
type testNode struct {
	id     string
	addr   string
	node   *raftfsm.Node
	trans  *raft.InmemTransport
	store  *storage.Store
	svc    *Service
	fwd    *Forwarder
	srv    *httptest.Server
	client *http.Client
	// handler is svc's, set before the server starts.
	handler http.Handler
	// abortApply makes the RPC server apply a forwarded command and then
	// drop the connection without an answer.
	abortApply atomic.Bool
}

type testCluster struct {
	ca    *testCA
	nodes []*testNode
	logs  *apptest.LogBuffer
}

var acmeKey = []byte("0123456789abcdef0123456789abcdef")

// startCluster starts n nodes: n1 bootstraps, each other one joins with
// AddSelf through the node before it (so through a follower from n3 on).
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{ca: newTestCA(t), logs: &apptest.LogBuffer{}}
	trans := make([]*raft.InmemTransport, n)
	for i := 0; i < n; i++ {
		tn := &testNode{id: fmt.Sprintf("n%d", i+1)}
		tn.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == PathApply && tn.abortApply.Load() {
				tn.handler.ServeHTTP(httptest.NewRecorder(), r)
				panic(http.ErrAbortHandler)
			}
			tn.handler.ServeHTTP(w, r)
		}))
		tn.addr = tn.srv.Listener.Addr().String()
		_, trans[i] = raft.NewInmemTransport(raft.ServerAddress(tn.addr))
		c.nodes = append(c.nodes, tn)
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	logger := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for i, tn := range c.nodes {
		dir := t.TempDir()
		store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		node, err := raftfsm.Open(ctx, raftfsm.Config{Dir: filepath.Join(dir, "raft"), NodeID: tn.id, Bootstrap: i == 0,
			Transport: trans[i], Logger: slog.New(slog.DiscardHandler)}, store)
		cancel()
		if err != nil {
			store.Close()
			t.Fatal(err)
		}
		tn.node, tn.store, tn.trans = node, store, trans[i]
		cert := c.ca.nodeCert(t, tn.id)
		tn.client = c.ca.client(cert)
		tn.fwd = &Forwarder{Node: node, Client: tn.client, Logger: logger.With("node", tn.id)}
		tn.svc = &Service{Node: node, Store: store, Proposer: tn.fwd, Client: tn.client, PeerNode: peerByCN,
			CA: c.ca, JoinTokens: testTokens{}, NodeID: tn.id, Advertise: tn.addr, Version: "test-1",
			Secrets: func() (map[string][]byte, error) { return map[string][]byte{"acme-storage.key": acmeKey}, nil },
			Logger:  logger.With("node", tn.id)}
		tn.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs: c.ca.pool, MinVersion: tls.VersionTLS12}
		tn.handler = tn.svc.Handler()
		tn.srv.StartTLS()
		t.Cleanup(func() {
			tn.srv.Close()
			node.Close()
			store.Close()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, tn := range c.nodes[1:] {
		if err := AddSelf(ctx, tn.client, []string{c.nodes[i].addr}, tn.id, tn.addr); err != nil {
			t.Fatalf("%s joins through %s: %v", tn.id, c.nodes[i].id, err)
		}
	}
	return c
}
