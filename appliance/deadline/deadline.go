// Package deadline keeps a server connection's read deadline in step with
// the state of its session, so that no client can hold a connection by
// doing nothing, or by doing very little:
//
//   - before the session is established (logged in, or for inbound SMTP a
//     transaction begun), each wait for the client is bounded by
//     Policy.Login: the TLS handshake of an implicit-TLS port, and each
//     command (with the TLS handshake that STARTTLS starts);
//   - once established, each wait is bounded by Policy.Session (the
//     autologout timer of RFC 9051 §5.4 and RFC 1939 §3, the command
//     timeout of RFC 5321 §4.5.3.2.7);
//   - while a message is being received (SMTP DATA or BDAT, IMAP APPEND),
//     the deadline moves with the bytes: every byte received pushes it
//     1/MinRate second further, never more than Policy.Data ahead, so a
//     transfer may pause for at most Data and must average MinRate bytes
//     per second (Postfix's smtpd_min_data_rate, with smtpd_timeout as the
//     pause). The bytes are counted as they arrive: under TLS, with its
//     record overhead (a few bytes per record, which only matters to a
//     client that sends a handful of bytes at a time).
//
// A Conn goes between the accepted connection and the protocol library
// (under TLS). The library still calls SetReadDeadline whenever it starts
// to wait for the client; Conn takes that as the start of a wait and sets
// the deadline its policy gives instead of the library's. A deadline in the
// past is a wake-up (a server shutting down) and is passed on as it is.
//
// When a deadline of the policy passes, the Read that was waiting returns
// an *Error (a net.Error whose Timeout is true), later Reads return io.EOF,
// and writes get at most GoodbyeTime more: enough for the protocol's
// goodbye (421, * BYE, -ERR), not for a client that stopped reading.
//
// It is not a connection limit (connlimit counts connections) and knows no
// protocol: the servers say when a session is established and when a
// transfer begins and ends.
package deadline

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// GoodbyeTime is how long writes may still take once a deadline has passed.
const GoodbyeTime = 5 * time.Second

// Policy is how long a client may keep the server waiting.
type Policy struct {
	// Login bounds each wait before the session is established.
	Login time.Duration
	// Session bounds each wait once it is established.
	Session time.Duration
	// Data is the longest pause in a transfer, and how far ahead of now
	// the bytes received can push its deadline.
	Data time.Duration
	// MinRate is the average rate, in bytes per second, below which a
	// transfer runs out of time; 0 means that a transfer's deadline does
	// not move with its bytes (it must end within Data).
	MinRate int64
}

// Or fills the zero fields of p from def.
func (p Policy) Or(def Policy) Policy {
	if p.Login <= 0 {
		p.Login = def.Login
	}
	if p.Session <= 0 {
		p.Session = def.Session
	}
	if p.Data <= 0 {
		p.Data = def.Data
	}
	if p.MinRate <= 0 {
		p.MinRate = def.MinRate
	}
	return p
}

// Error is what the Read that ran out of time returns.
type Error struct {
	// Transfer is true if it happened during a transfer.
	Transfer bool
}

func (e *Error) Error() string {
	if e.Transfer {
		return "deadline: transfer too slow"
	}
	return "deadline: client idle for too long"
}

// Timeout reports true: Error is a net.Error.
func (e *Error) Timeout() bool { return true }

// Temporary reports true, as the timeouts of package net do, so that TLS
// does not make the error stick.
func (e *Error) Temporary() bool { return true }

// Conn is a connection whose read deadlines follow a Policy.
type Conn struct {
	net.Conn
	policy Policy

	mu          sync.Mutex
	established bool
	transfer    bool
	deadline    time.Time // the read deadline of the policy now set
	woken       bool      // a deadline in the past came from outside
	expired     bool      // a deadline of the policy passed
	inTransfer  bool      // ... during a transfer
	goodbyeBy   time.Time // writes end by then once expired
}

// New wraps c and starts its first wait at once: the TLS handshake, or the
// first command after the greeting.
func New(c net.Conn, p Policy) *Conn {
	d := &Conn{Conn: c, policy: p}
	d.mu.Lock()
	d.waitLocked()
	d.mu.Unlock()
	return d
}

// waitLocked starts a wait for the client.
func (c *Conn) waitLocked() error {
	d := c.policy.Login
	if c.established {
		d = c.policy.Session
	}
	if d <= 0 {
		c.deadline = time.Time{}
	} else {
		c.deadline = time.Now().Add(d)
	}
	return c.Conn.SetReadDeadline(c.deadline)
}

// SetReadDeadline starts a wait for the client, with the policy's deadline
// rather than t; a t in the past is a wake-up and is kept as it is. During
// a transfer it changes nothing (BDAT's command lines are part of the
// transfer).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && !t.After(time.Now()) {
		c.woken = true
		return c.Conn.SetReadDeadline(t)
	}
	if c.woken || c.expired || c.transfer {
		return nil
	}
	return c.waitLocked()
}

// SetWriteDeadline sets the write deadline, but no later than GoodbyeTime
// after the read deadline passed.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if c.expired && (t.IsZero() || t.After(c.goodbyeBy)) {
		t = c.goodbyeBy
	}
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	err := c.SetReadDeadline(t)
	if werr := c.SetWriteDeadline(t); err == nil {
		err = werr
	}
	return err
}

// Read reads from the connection; see the package documentation for what
// it returns once the client ran out of time.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.expired {
		c.mu.Unlock()
		return 0, io.EOF
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > 0 && c.transfer && !c.woken && c.policy.MinRate > 0 {
		now := time.Now()
		c.deadline = c.deadline.Add(time.Duration(n) * time.Second / time.Duration(c.policy.MinRate))
		if limit := now.Add(c.policy.Data); c.deadline.After(limit) {
			c.deadline = limit
		}
		c.Conn.SetReadDeadline(c.deadline)
	}
	var ne net.Error
	if err != nil && !c.woken && !c.deadline.IsZero() && errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(c.deadline) {
		c.expired, c.inTransfer = true, c.transfer
		c.goodbyeBy = time.Now().Add(GoodbyeTime)
		c.Conn.SetWriteDeadline(c.goodbyeBy)
		return n, &Error{Transfer: c.transfer}
	}
	return n, err
}

// Established says that the session is logged in (for inbound SMTP: that
// it began a transaction): its next waits are bounded by Policy.Session.
func (c *Conn) Established() {
	c.mu.Lock()
	c.established = true
	c.mu.Unlock()
}

// BeginTransfer says that a message is being received, until EndTransfer.
func (c *Conn) BeginTransfer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.woken || c.expired || c.transfer {
		return
	}
	c.transfer = true
	c.deadline = time.Now().Add(c.policy.Data)
	c.Conn.SetReadDeadline(c.deadline)
}

// EndTransfer ends a transfer; the deadline then stays until the next wait.
func (c *Conn) EndTransfer() {
	c.mu.Lock()
	c.transfer = false
	c.mu.Unlock()
}

// TimedOut reports whether a deadline of the policy passed, and whether
// that was during a transfer.
func (c *Conn) TimedOut() (timedOut, inTransfer bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired, c.inTransfer
}

// Unwrap gives the connection under c.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Find returns the Conn under c (through TLS and any wrapper with an
// Unwrap() net.Conn method), or nil.
func Find(c net.Conn) *Conn {
	for c != nil {
		switch x := c.(type) {
		case *Conn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case interface{ Unwrap() net.Conn }:
			c = x.Unwrap()
		default:
			return nil
		}
	}
	return nil
}
