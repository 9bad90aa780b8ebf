package clusternet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// StreamLayer is raft's side of the port, for raft.NewNetworkTransport.
// advertise is the address the other nodes dial to reach this one (the
// port's own address when empty): raft tells it to its peers as this
// node's address. Accept yields only connections whose peer presented a
// certificate of the cluster CA; Dial connects with the node's certificate
// and checks the peer's against the cluster CA. Closing the stream layer
// (raft does, when its transport closes) stops its Accept, not the port.
func (m *Mux) StreamLayer(advertise string) raft.StreamLayer {
	if advertise == "" {
		advertise = m.Addr().String()
	}
	return &streamLayer{m: m, addr: advertAddr(advertise), closed: make(chan struct{})}
}

type streamLayer struct {
	m      *Mux
	addr   advertAddr
	once   sync.Once
	closed chan struct{}
}

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftConn:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	case <-s.m.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (s *streamLayer) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func (s *streamLayer) Addr() net.Addr { return s.addr }

// Dial opens a raft connection to the node at address: mutual TLS, TLS 1.3,
// ALPN sigillo-raft/1, the peer's certificate checked against the cluster
// CA. timeout covers the TCP connection and the handshake.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.m.ctx, timeout)
	defer cancel()
	conf := clientConfig(s.m.id)
	conf.NextProtos = []string{RaftALPN}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", address, err)
	}
	tc := c.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != RaftALPN {
		tc.Close()
		return nil, fmt.Errorf("raft dial %s: the peer does not speak %s (ALPN %q)", address, RaftALPN, p)
	}
	rc := &raftConn{Conn: tc, m: s.m}
	if !s.m.track(rc) {
		tc.Close()
		return nil, fmt.Errorf("raft dial %s: %w", address, net.ErrClosed)
	}
	return rc, nil
}

// advertAddr is an address as configured: a host name stays a name.
type advertAddr string

func (a advertAddr) Network() string { return "tcp" }
func (a advertAddr) String() string  { return string(a) }
