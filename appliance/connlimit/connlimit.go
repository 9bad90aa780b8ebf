// Package connlimit bounds how many connections a listener holds at once,
// in all and per client host, like Postfix's
// smtpd_client_connection_count_limit and Dovecot's per-IP limits. A
// connection over a limit is answered with the protocol's "too many
// connections" line and closed; the server behind never sees it. It is not
// a rate limiter for authentication: that is authlimit.
package connlimit

import (
	"net"
	"sync"
	"time"

	"sigillo/appliance/authlimit"
)

// Listener wraps a net.Listener with the limits.
type Listener struct {
	net.Listener
	// Total and PerHost are the limits (0: none).
	Total, PerHost int
	// Refusal is written to a refused connection, e.g.
	// "421 4.7.0 Too many connections\r\n".
	Refusal string

	mu      sync.Mutex
	total   int
	perHost map[string]int
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := authlimit.Host(c.RemoteAddr())
		if l.admit(host) {
			return &conn{Conn: c, release: func() { l.release(host) }}, nil
		}
		go refuse(c, l.Refusal)
	}
}

func (l *Listener) admit(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perHost == nil {
		l.perHost = map[string]int{}
	}
	if (l.Total > 0 && l.total >= l.Total) || (l.PerHost > 0 && l.perHost[host] >= l.PerHost) {
		return false
	}
	l.total++
	l.perHost[host]++
	return true
}

func (l *Listener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perHost[host]--; l.perHost[host] <= 0 {
		delete(l.perHost, host)
	}
}

// Open reports the connections held now, in all and for host.
func (l *Listener) Open(host string) (total, perHost int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.perHost[host]
}

// refuse answers and closes within a few seconds, so a refused client
// cannot hold a goroutine.
func refuse(c net.Conn, line string) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line != "" {
		c.Write([]byte(line))
	}
	c.Close()
}

// conn releases its slot once, when closed.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// Unwrap gives the underlying connection.
func (c *conn) Unwrap() net.Conn { return c.Conn }
