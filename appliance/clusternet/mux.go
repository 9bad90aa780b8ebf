package clusternet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// ALPN protocol names on the cluster port.
const (
	RaftALPN  = "sigillo-raft/1"
	HTTP2ALPN = "h2"
	HTTP1ALPN = "http/1.1"
)

// HandshakeTimeout is how long a connection may take to finish its TLS
// handshake (and, after it, to be taken by raft or the RPC server) before
// the port drops it.
const HandshakeTimeout = 10 * time.Second

// maxHandshakes bounds the connections in their handshake at once: past
// it, a new connection is closed at once (a flood of strangers costs at
// most this many goroutines, each for at most HandshakeTimeout).
const maxHandshakes = 256

// Mux is the cluster port: it accepts TCP connections, runs their TLS
// handshake and hands each to raft (StreamLayer) or to the RPC server
// (ServeRPC) by the protocol the client chose (ALPN). Close stops it and
// every connection it handed out.
type Mux struct {
	ln       net.Listener
	id       *Identity
	log      *slog.Logger
	conf     *tls.Config
	timeout  time.Duration
	ctx      context.Context // done on Close
	cancel   context.CancelFunc
	raftConn chan net.Conn
	rpcConn  chan net.Conn
	slots    chan struct{}  // one per handshake in flight
	wg       sync.WaitGroup // the accept loop and every handshake

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{} // in handshake, with raft, or with the RPC server
	srv    *http.Server

	closeOnce sync.Once
	closeErr  error
}

// Listen opens the cluster port on addr ("host:port"; port 0 picks one)
// for the node whose identity is id, and starts accepting. log may be nil.
func Listen(addr string, id *Identity, log *slog.Logger) (*Mux, error) {
	return listen(addr, id, log, HandshakeTimeout)
}

func listen(addr string, id *Identity, log *slog.Logger, timeout time.Duration) (*Mux, error) {
	if id == nil || id.CA == nil || len(id.Cert.Certificate) == 0 {
		return nil, errors.New("cluster port: no node identity")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cluster port: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		ln:       ln,
		id:       id,
		log:      log.With("component", "clusternet"),
		conf:     serverConfig(id),
		timeout:  timeout,
		ctx:      ctx,
		cancel:   cancel,
		raftConn: make(chan net.Conn),
		rpcConn:  make(chan net.Conn),
		slots:    make(chan struct{}, maxHandshakes),
		conns:    make(map[net.Conn]struct{}),
	}
	m.wg.Add(1)
	go m.acceptLoop()
	m.log.Info("cluster port listening", "addr", ln.Addr().String(), "node", id.NodeID)
	return m, nil
}

// serverConfig: the node's certificate with the CA's after it (a joining
// node pins the CA from it), client certificates verified against the
// cluster CA when given (a joining node has none yet), TLS 1.2 at least.
func serverConfig(id *Identity) *tls.Config {
	cert := id.Cert
	if last := cert.Certificate[len(cert.Certificate)-1]; string(last) != string(id.CA.Raw) {
		cert.Certificate = append(append([][]byte(nil), cert.Certificate...), id.CA.Raw)
	}
	pool := x509.NewCertPool()
	pool.AddCert(id.CA)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
		NextProtos:   []string{RaftALPN, HTTP2ALPN, HTTP1ALPN},
		MinVersion:   tls.VersionTLS12,
	}
}

// Addr is the address the port listens on.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, for one: wait and retry.
			m.log.Warn("cluster port: accept", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-m.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		select {
		case m.slots <- struct{}{}:
		default:
			m.log.Warn("cluster port: too many connections in their handshake; closing a new one", "remote", c.RemoteAddr().String(), "max", maxHandshakes)
			c.Close()
			continue
		}
		tc := tls.Server(c, m.conf)
		if !m.track(tc) {
			tc.Close()
			<-m.slots
			return
		}
		m.wg.Add(1)
		go m.handshake(tc)
	}
}

// handshake finishes the TLS handshake of one connection and hands it over
// by its ALPN protocol.
func (m *Mux) handshake(tc *tls.Conn) {
	defer m.wg.Done()
	remote := tc.RemoteAddr().String()
	ctx, cancel := context.WithTimeout(m.ctx, m.timeout)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	<-m.slots
	if err != nil {
		m.log.Debug("cluster port: handshake failed", "remote", remote, "err", err)
		m.drop(tc)
		return
	}
	st := tc.ConnectionState()
	switch st.NegotiatedProtocol {
	case RaftALPN:
		if len(st.VerifiedChains) == 0 {
			m.log.Info("cluster port: raft connection without a cluster certificate closed", "remote", remote)
			m.drop(tc)
			return
		}
		if _, err := NodeID(st.VerifiedChains[0][0]); err != nil {
			m.log.Warn("cluster port: raft connection closed", "remote", remote, "err", err)
			m.drop(tc)
			return
		}
		rc := &raftConn{Conn: tc, m: m}
		if !m.track(rc) {
			m.drop(tc)
			return
		}
		m.untrack(tc)
		m.handOff(ctx, m.raftConn, rc, "raft")
	default: // h2, http/1.1 or none
		m.handOff(ctx, m.rpcConn, tc, "rpc")
	}
}

// handOff gives c to whoever accepts on ch (raft's stream layer, the RPC
// server), or drops it when nobody does before ctx ends.
func (m *Mux) handOff(ctx context.Context, ch chan<- net.Conn, c net.Conn, what string) {
	select {
	case ch <- c:
	case <-ctx.Done():
		if m.ctx.Err() == nil {
			m.log.Warn("cluster port: no "+what+" server took the connection", "remote", c.RemoteAddr().String())
		}
		m.drop(c)
	}
}

// track records c so that Close closes it; false when the port is closed.
func (m *Mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

func (m *Mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.conns, c)
	m.mu.Unlock()
}

func (m *Mux) drop(c net.Conn) {
	m.untrack(c)
	c.Close()
}

// Close stops the port: no more connections are accepted, the RPC server
// stops (ServeRPC returns), raft's stream layers stop accepting, and every
// connection the port accepted or dialed is closed. It waits for the port's
// goroutines to end.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		srv := m.srv
		conns := make([]net.Conn, 0, len(m.conns))
		for c := range m.conns {
			conns = append(conns, c)
		}
		m.mu.Unlock()

		m.cancel()
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			m.closeErr = fmt.Errorf("close cluster port: %w", err)
		}
		if srv != nil {
			srv.Close()
		}
		for _, c := range conns {
			c.Close()
		}
		m.wg.Wait()
		m.log.Info("cluster port closed", "addr", m.ln.Addr().String())
	})
	return m.closeErr
}

// raftConn is a connection raft holds: tracked until raft closes it.
type raftConn struct {
	net.Conn
	m    *Mux
	once sync.Once
}

func (c *raftConn) Close() error {
	c.once.Do(func() { c.m.untrack(c) })
	return c.Conn.Close()
}
