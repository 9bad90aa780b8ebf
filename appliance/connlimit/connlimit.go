// Package connlimit bounds how many connections a listener holds at once,
// in all and per client host, like Postfix's
// smtpd_client_connection_count_limit and Dovecot's per-IP limits. A
// connection over a limit is answered with the protocol's "too many
// connections" line and closed; the server behind never sees it.
//
// A lower limit applies, per host, to the connections that have not logged
// in yet (the server calls Authenticated when one does). Over it, a new
// connection is not refused: it takes the place of one of them, which is
// closed — first one on which the client never sent a byte, and among
// those the one quiet (nothing read nor written) for the longest. So idle
// sockets opened from an address, before TLS or login, cannot shut out a
// user behind the same address (a NAT) who connects and logs in, and the
// user's sessions, once logged in, count only against PerHost.
//
// It is not a rate limiter for authentication (that is authlimit), nor a
// timeout (that is deadline).
package connlimit

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"sigillo/appliance/authlimit"
)

// Listener wraps a net.Listener with the limits.
type Listener struct {
	net.Listener
	// Total and PerHost are the limits (0: none).
	Total, PerHost int
	// Unauthenticated is the limit per host of connections not logged in
	// (0: none).
	Unauthenticated int
	// Refusal is written to a refused connection, e.g.
	// "421 4.7.0 Too many connections\r\n".
	Refusal string
	// Logger, if set, hears of the connections closed to make room.
	Logger *slog.Logger

	mu      sync.Mutex
	total   int
	perHost map[string]int
	waiting map[string]map[*conn]struct{} // not logged in, by host
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := authlimit.Host(c.RemoteAddr())
		lc := &conn{Conn: c, l: l, host: host}
		lc.active.Store(time.Now().UnixNano())
		ok, victim := l.admit(lc)
		if !ok {
			go refuse(c, l.Refusal)
			continue
		}
		if victim != nil {
			if l.Logger != nil {
				l.Logger.Info("too many connections not logged in from one address: closed the quietest", "host", host,
					"limit", l.Unauthenticated, "quiet", time.Since(time.Unix(0, victim.active.Load())).Round(time.Millisecond),
					"sent_nothing", !victim.received.Load())
			}
			victim.Close()
		}
		return lc, nil
	}
}

// admit counts c in, or refuses it. If c is over the Unauthenticated limit
// it returns the connection to close in its place (already taken out of
// the hosts' unauthenticated count).
func (l *Listener) admit(c *conn) (ok bool, victim *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perHost == nil {
		l.perHost = map[string]int{}
		l.waiting = map[string]map[*conn]struct{}{}
	}
	if (l.Total > 0 && l.total >= l.Total) || (l.PerHost > 0 && l.perHost[c.host] >= l.PerHost) {
		return false, nil
	}
	l.total++
	l.perHost[c.host]++
	if l.Unauthenticated <= 0 {
		return true, nil
	}
	w := l.waiting[c.host]
	if w == nil {
		w = map[*conn]struct{}{}
		l.waiting[c.host] = w
	}
	if len(w) >= l.Unauthenticated {
		victim = quietest(w)
		delete(w, victim)
		victim.waiting = false
	}
	w[c] = struct{}{}
	c.waiting = true
	return true, victim
}

// quietest picks, among the connections not logged in, one on which the
// client never sent anything if there is one, and the one quiet for the
// longest among those.
func quietest(w map[*conn]struct{}) *conn {
	var best *conn
	var bestSent bool
	var bestActive int64
	for c := range w {
		sent, active := c.received.Load(), c.active.Load()
		if best == nil || (!sent && bestSent) || (sent == bestSent && active < bestActive) {
			best, bestSent, bestActive = c, sent, active
		}
	}
	return best
}

func (l *Listener) release(c *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perHost[c.host]--; l.perHost[c.host] <= 0 {
		delete(l.perHost, c.host)
	}
	l.forgetLocked(c)
}

// forgetLocked takes c out of its host's unauthenticated count.
func (l *Listener) forgetLocked(c *conn) {
	if !c.waiting {
		return
	}
	c.waiting = false
	if w := l.waiting[c.host]; w != nil {
		delete(w, c)
		if len(w) == 0 {
			delete(l.waiting, c.host)
		}
	}
}

// Open reports the connections held now, in all and for host.
func (l *Listener) Open(host string) (total, perHost int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.perHost[host]
}

// Waiting reports how many connections from host have not logged in.
func (l *Listener) Waiting(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiting[host])
}

// Authenticated says that the session on c (a connection from a Listener,
// or one over it: TLS, or any wrapper with an Unwrap() net.Conn method)
// has logged in: it no longer counts against the Unauthenticated limit.
func Authenticated(c net.Conn) {
	for c != nil {
		switch x := c.(type) {
		case *conn:
			x.l.mu.Lock()
			x.l.forgetLocked(x)
			x.l.mu.Unlock()
			return
		case *tls.Conn:
			c = x.NetConn()
		case interface{ Unwrap() net.Conn }:
			c = x.Unwrap()
		default:
			return
		}
	}
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

// conn releases its slot once, when closed, and notes when it was last
// used.
type conn struct {
	net.Conn
	l        *Listener
	host     string
	once     sync.Once
	received atomic.Bool  // the client sent something
	active   atomic.Int64 // last read or write, in Unix nanoseconds
	waiting  bool         // counted as not logged in; guarded by l.mu
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.received.Store(true)
		c.active.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.active.Store(time.Now().UnixNano())
	}
	return n, err
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// Unwrap gives the underlying connection.
func (c *conn) Unwrap() net.Conn { return c.Conn }
