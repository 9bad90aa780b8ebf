package clusternet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServeRPC serves h to the port's HTTP connections (HTTP/2 or HTTP/1.1)
// until Close; then it returns nil. Handlers see the verified peer node
// with PeerNode; wrap every handler but the join in RequireNode.
func (m *Mux) ServeRPC(h http.Handler) error {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         &protos,
		ReadHeaderTimeout: HandshakeTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return m.ctx },
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				m.untrack(c)
			}
		},
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return fmt.Errorf("cluster RPC: %w", net.ErrClosed)
	case m.srv != nil:
		m.mu.Unlock()
		return errors.New("cluster RPC: already served")
	}
	m.srv = srv
	m.mu.Unlock()

	ln := &rpcListener{m: m, closed: make(chan struct{})}
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("cluster RPC: %w", err)
}

// rpcListener hands the RPC server the connections the port accepted for it.
type rpcListener struct {
	m      *Mux
	once   sync.Once
	closed chan struct{}
}

func (l *rpcListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.rpcConn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-l.m.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (l *rpcListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *rpcListener) Addr() net.Addr { return l.m.Addr() }

// PeerNode returns the node whose certificate, verified against the
// cluster CA, the client presented on r's connection; ok is false for a
// client without one (a joining node).
func PeerNode(r *http.Request) (nodeID string, ok bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", false
	}
	id, err := NodeID(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return "", false
	}
	return id, true
}

// RequireNode lets through only requests from a cluster node (PeerNode);
// others get 403 with a JSON error.
func RequireNode(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := PeerNode(r); !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"code":    "forbidden",
				"message": "only cluster nodes may call this: present a certificate of the cluster CA",
			}})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NewClient is an HTTP client for the RPC service of the other nodes: it
// presents id's certificate and accepts a server whose certificate the
// cluster CA signed (whatever the name it was dialled by), over TLS 1.3
// and HTTP/2 when the server offers it. It has no overall timeout: give
// each request a context.
func NewClient(id *Identity) *http.Client {
	return &http.Client{Transport: transport(clientConfig(id))}
}

// JoinClient is the HTTP client of a node that joins: it has no
// certificate yet, and accepts the server only if the chain it sends holds
// a CA certificate whose Pin is pin (the join token's) and the server's own
// certificate verifies against that CA.
func JoinClient(pin [32]byte) *http.Client {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified by VerifyConnection against the pinned CA instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster join: the server sent no certificate")
			}
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && Pin(c) == pin {
					return verifyPeer(cs.PeerCertificates, c, x509.ExtKeyUsageServerAuth)
				}
			}
			return errors.New("cluster join: the server's chain holds no CA with the join token's pin: not this cluster, or an interceptor")
		},
	}
	return &http.Client{Transport: transport(conf)}
}

func transport(conf *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:               nil, // node to node, never through an HTTP proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     conf,
		TLSHandshakeTimeout: HandshakeTimeout,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
}

// clientConfig presents id's certificate and checks the server's against
// the cluster CA, not against a host name: nodes are dialled by address.
func clientConfig(id *Identity) *tls.Config {
	ca := id.CA
	return &tls.Config{
		Certificates: []tls.Certificate{id.Cert},
		MinVersion:   tls.VersionTLS13,
		// Verified by VerifyConnection against the cluster CA instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs.PeerCertificates, ca, x509.ExtKeyUsageServerAuth)
		},
	}
}

// verifyPeer checks that the leaf of chain verifies against ca for usage
// and names a node.
func verifyPeer(chain []*x509.Certificate, ca *x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("cluster peer sent no certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("cluster peer certificate %q: %w", leaf.Subject.CommonName, err)
	}
	if _, err := NodeID(leaf); err != nil {
		return fmt.Errorf("cluster peer: %w", err)
	}
	return nil
}
