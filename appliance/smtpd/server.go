// Package smtpd is Sigillo's SMTP server, on github.com/emersion/go-smtp,
// in three modes:
//
//   - Inbound (port 25, mail from other servers): STARTTLS is offered, AUTH
//     is neither offered nor accepted (a client that wants to authenticate
//     uses the submission ports). Recipients must be mailboxes of a hosted
//     domain: an unknown user is refused with 550 5.1.1 and any other
//     domain with 554 5.7.1 (no open relay). The null sender <> is
//     accepted, for bounces; a sender in a hosted domain, in MAIL FROM or
//     in From:, is refused with 550 5.7.1 (its users authenticate on the
//     submission ports), unless the client is in RelayNetworks. Mail for
//     "postmaster" and postmaster@<hosted domain> goes to Postmaster.
//   - Submission (port 587): STARTTLS, then AUTH PLAIN or LOGIN, which is
//     only offered and accepted once the connection is protected (go-smtp
//     answers an AUTH before STARTTLS with 523 5.7.10).
//   - Submissions (port 465): implicit TLS, then AUTH PLAIN or LOGIN.
//
// On the submission ports a client must authenticate before MAIL (530
// 5.7.0), the envelope sender and every address of From: and Sender: must
// be the authenticated mailbox's address, compared case-insensitively (553
// 5.7.1, after the data for the header; a PEC user's From: is judged by the
// access point), a message without Message-ID: or Date: gets them, and
// recipients in other domains go on the outbound queue. Passwords are
// checked by accounts.Authenticator, which applies the shared auth-failure
// penalty.
//
// Limits: MaxMessageBytes (552 5.3.4, also refused at MAIL when SIZE= says
// so), 100 recipients (452 4.5.3), MaxRejectedRecipients refused
// recipients per connection (then 421 4.7.0 and the connection is closed),
// a local recipient's quota (552 5.2.2 at RCPT when the mailbox is full or
// SIZE= says the message will not fit in its quota and a 10 % grace; at the
// end of data, 552 if no recipient can take it, and otherwise no bounce on
// port 25, see quotaTargets), 64 KiB lines (500, then the connection is
// closed), and time limits (Server.Timeouts, package deadline): 30 s for
// each command before AUTH on the submission ports and before MAIL on the
// inbound port (the TLS handshake included), 5 minutes after; a message's
// data may pause 5 minutes and must average 500 bytes/s. A client out of
// time gets 421 4.4.2 and is disconnected. A misbehaving client only ever
// affects its own connection.
//
// While the node is not ready (Server.Ready: no raft leader, say), new
// transactions are refused: a new connection is greeted with 421 4.3.0
// and closed, a MAIL FROM gets 421 4.3.0 and the session ends; a
// transaction already past MAIL goes on.
//
// A message is written to a spool file (package spool) as it arrives, and
// read into memory once, at the end of data, into its raft log entry, while
// the in-flight budget (Server.Budget, package inflight) holds its size: a
// message that finds the budget full waits its turn, and gets 452 4.3.1 if
// none comes within the budget's wait. The virus scanner reads the spool
// file; the PEC gestore gets the message in memory, for 6 times its size
// of the budget.
//
// A message is stored with one storage.Deliver command: a copy per local
// recipient (quota decided just before) and the outbound queue item for the remote
// ones, in one transaction. The client gets 250 only after that command is
// applied through raft; if it cannot be applied the client gets 451 4.3.0
// and nothing is stored. A client that sends the same message again (the
// same Message-ID and bytes, as after a 250 lost in a leader's failover)
// within a day gets 250 and no second copy or queue item
// (storage.Deliver.Dedupe); a message without Message-ID is never taken
// for another. A Received: header (and, on local delivery,
// Return-Path:) is prepended the way Postfix writes them (without reverse
// DNS; the protocol is always ESMTP[S][A], as go-smtp does not tell HELO
// from EHLO); the message itself is stored byte for byte, malformed or not
// (but for the fields added on submission).
//
// With a PEC gestore (Server.PEC), a message submitted by a user of a PEC
// domain goes to its access point, and recipients in PEC domains of ours
// (an unknown or full mailbox included: the delivery point answers for it
// with a signed avviso di mancata consegna) to its reception point; the
// gestore's outcome (receipts, bustas, log events) is applied as one
// command before the client gets its answer.
//
// It is not a delivery agent for remote mail (package queue is), not a
// spam or virus filter (no SPF, DKIM or DMARC either), and it does not
// implement SMTPUTF8, BINARYMIME, the DSN extension, aliases, or
// VRFY/EXPN. CHUNKING (BDAT) works, through go-smtp.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"sigillo/appliance/accounts"
	"sigillo/appliance/deadline"
	"sigillo/appliance/inflight"
	"sigillo/appliance/pec"
	"sigillo/appliance/readiness"
	"sigillo/appliance/scan"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// Scanner is the virus scanner as the SMTP server uses it (*scan.Scanner).
type Scanner interface {
	Scan(ctx context.Context, msg io.Reader, size int64) (scan.Verdict, error)
}

// Gestore is the PEC gestore as the SMTP server uses it (*pec.Gestore).
type Gestore interface {
	IsPECAddress(ctx context.Context, addr string) (bool, error)
	Submit(ctx context.Context, tx pec.Transaction) (*pec.Outcome, error)
	Receive(ctx context.Context, tx pec.Transaction) (*pec.Outcome, error)
}

// Mode is what a listener is for.
type Mode int

// The three SMTP services.
const (
	Inbound     Mode = iota // port 25: mail from other servers, for hosted domains
	Submission              // port 587: STARTTLS, then AUTH, then send
	Submissions             // port 465: implicit TLS, then AUTH, then send
)

func (m Mode) String() string {
	switch m {
	case Inbound:
		return "smtp"
	case Submission:
		return "submission"
	case Submissions:
		return "submissions"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Limits and defaults.
const (
	DefaultMaxMessageBytes = 30 << 20
	MaxRecipients          = 100
	MaxLineLength          = 64 << 10
	// Timeout bounds each wait for a command once the client authenticated
	// (or, inbound, began a transaction), and each write (RFC 5321
	// §4.5.3.2.7 asks for at least 5 minutes).
	Timeout = 5 * time.Minute
	// applyTimeout bounds how long a client waits for raft at end of data.
	applyTimeout = 2 * time.Minute
	// lookupTimeout bounds the store reads of one command.
	lookupTimeout = 30 * time.Second
)

// Server is the SMTP server. Set its fields, then call Serve once per
// listener; the same Server may serve several listeners and modes.
type Server struct {
	Hostname        string // greeting and Received: headers
	Store           *storage.Store
	Proposer        storage.Proposer
	Auth            *accounts.Authenticator
	TLSConfig       *tls.Config
	MaxMessageBytes int64 // default 30 MiB → 552 5.3.4 when exceeded
	// MaxMessageBytesNow, if set, is the limit for a connection accepted
	// now (the cluster-wide setting, changeable at run time); 0 or unset
	// means MaxMessageBytes.
	MaxMessageBytesNow func() int64
	Logger             *slog.Logger // default slog.Default()
	Now                func() time.Time
	// StorageCheck, if set, is asked at MAIL FROM whether there is room
	// for a message; an error answers 452 4.3.1 (Postfix's queue_minfree).
	StorageCheck func() error // default time.Now
	// Enqueued, if set, is called after a message was put on the
	// outbound queue. The appliance leaves it unset: the queue runner
	// learns of new items from the store (storage.Store.WatchQueue).
	Enqueued func()
	// Timeouts are the session's time limits; a zero field takes its
	// default (DefaultLoginTimeout, Timeout, DefaultDataTimeout,
	// DefaultMinDataRate).
	Timeouts deadline.Policy
	// Spool is where messages are written as they arrive (required).
	Spool *spool.Dir
	// Budget, if set, bounds the bytes of messages in memory at once:
	// at the end of data a message waits for room, and gets 452 4.3.1
	// when none came within the budget's wait.
	Budget *inflight.Budget
	// PEC, if set, is the PEC gestore: submissions of its users go to its
	// access point, mail for its domains to its reception point.
	PEC Gestore
	// Scanner, if set, scans every message at the end of DATA: infected
	// ordinary mail gets 554; a scanner that gives no verdict, 451 (when
	// scanning is required). PEC traffic is judged by the gestore.
	Scanner Scanner
	// RelayNetworks are the client networks that may, on port 25 and
	// without authentication, use the hosted domains' addresses in MAIL
	// FROM and From: (an application server); they are not a relay.
	RelayNetworks []netip.Prefix
	// MaxRejectedRecipients is how many recipients a connection may have
	// refused before 421 and the end of the connection (default 20).
	MaxRejectedRecipients int
	// Postmaster is the mailbox that gets mail for "postmaster" and for
	// postmaster@<hosted domain> without a mailbox of its own.
	Postmaster string
	// Ready, if set, says whether the node may take new transactions
	// (package readiness; nil: always). While it may not, a new connection
	// is greeted with 421 4.3.0 and closed, and a MAIL FROM gets 421 4.3.0
	// and the session ends; a transaction past MAIL goes on.
	Ready func() (ok bool, reason string)

	mu        sync.Mutex
	closing   bool
	ctx       context.Context // cancelled when a shutdown gives up waiting
	cancel    context.CancelFunc
	inners    []*smtp.Server
	listeners []net.Listener
	conns     map[*trackedConn]struct{}
}

func (s *Server) init() {
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.conns = map[*trackedConn]struct{}{}
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) hostname() string {
	if s.Hostname != "" {
		return s.Hostname
	}
	return "localhost"
}

func (s *Server) maxBytes() int64 {
	if s.MaxMessageBytes > 0 {
		return s.MaxMessageBytes
	}
	return DefaultMaxMessageBytes
}

// Serve answers SMTP on ln in the given mode until Shutdown, then returns
// nil. For Submissions, ln may be a plain listener (Serve does the TLS
// handshake with TLSConfig) or one from tls.NewListener.
func (s *Server) Serve(ln net.Listener, mode Mode) error {
	if s.Store == nil || s.Proposer == nil || s.Spool == nil {
		ln.Close()
		return errors.New("smtpd: Server needs Store, Proposer and Spool")
	}
	if (mode == Submission || mode == Submissions) && s.TLSConfig == nil {
		ln.Close()
		return fmt.Errorf("smtpd: %s needs a TLSConfig", mode)
	}
	if mode != Inbound && mode != Submission && mode != Submissions {
		ln.Close()
		return fmt.Errorf("smtpd: unknown mode %d", int(mode))
	}
	newInner := func(limit int64) *smtp.Server {
		inner := smtp.NewServer(timedBackend{&backend{srv: s, mode: mode}})
		inner.Domain = s.hostname()
		inner.MaxMessageBytes = limit
		inner.MaxRecipients = MaxRecipients
		// go-smtp applies one line limit to commands and to DATA. RFC 5321
		// says 1000 octets, but real mail (generated HTML, long headers)
		// exceeds it, and Postfix accepts such lines: allow 64 KiB, which
		// still bounds the memory one line can take.
		inner.MaxLineLength = MaxLineLength
		// go-smtp sets a read deadline each time it waits for the client;
		// the connection's deadline.Conn replaces it with the policy's.
		inner.ReadTimeout = s.timeouts().Session
		inner.WriteTimeout = s.timeouts().Session
		inner.AllowInsecureAuth = false
		inner.TLSConfig = s.TLSConfig
		inner.ErrorLog = errorLog{s.logger().With("mode", mode.String())}
		return inner
	}

	tl := &trackingListener{Listener: ln, srv: s, mode: mode}
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()

	err := (&byLimit{srv: s, mode: mode, make: newInner, addr: ln.Addr()}).serve(tl)
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return nil
	}
	if err != nil {
		return fmt.Errorf("smtpd: serve %s: %w", mode, err)
	}
	return nil
}

// Shutdown stops accepting connections, ends idle sessions (they get 421)
// and waits for the sessions in the middle of a transaction to finish. If
// ctx ends first, it closes every connection, waits for the sessions to
// return and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	s.closing = true
	inners := append([]*smtp.Server(nil), s.inners...)
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	// go-smtp's Shutdown closes its listeners and waits for every
	// connection handler to return.
	var wg sync.WaitGroup
	for _, in := range inners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.Shutdown(context.Background())
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		s.wakeIdle()
		select {
		case <-done:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			break wait
		}
	}
	s.mu.Lock()
	s.cancel()
	n := len(s.conns)
	for c := range s.conns {
		c.Conn.Close()
	}
	s.mu.Unlock()
	s.logger().Warn("shutdown deadline reached; closed busy sessions", "sessions", n)
	<-done
	return fmt.Errorf("smtpd: shutdown: %w", ctx.Err())
}

// wakeIdle makes the blocked read of every idle session time out now:
// go-smtp answers 421 and ends the session.
func (s *Server) wakeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if !c.busy.Load() {
			c.Conn.SetReadDeadline(time.Now())
		}
	}
}

// trackedConn is an accepted TCP connection the Server knows about, so that
// Shutdown can end it. busy is set while a mail transaction is open. Its
// Conn is the deadline.Conn that keeps the session's time limits.
type trackedConn struct {
	net.Conn
	srv    *Server
	guard  *deadline.Conn
	busy   atomic.Bool
	bdat   atomic.Bool // the transfer under way is BDAT's
	hangUp atomic.Bool // close after the next write (readTimeout, policy.go's hangUp)
	once   sync.Once
	// rejected counts the recipients refused on the connection (policy.go).
	rejected atomic.Int32
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		err = c.readTimeout(err)
	}
	return n, err
}

// Unwrap gives the connection under c.
func (c *trackedConn) Unwrap() net.Conn { return c.Conn }

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
	})
	return c.Conn.Close()
}

// trackingListener registers every accepted connection and, on the
// implicit TLS port, wraps it in TLS.
type trackingListener struct {
	net.Listener
	srv  *Server
	mode Mode
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	raw, wasTLS := c, false
	if tc, ok := c.(*tls.Conn); ok {
		// A listener from tls.NewListener: track the TCP connection
		// under it and redo the (not yet started) TLS on top.
		raw, wasTLS = tc.NetConn(), true
	}
	guard := deadline.New(raw, l.srv.timeouts())
	t := &trackedConn{Conn: guard, srv: l.srv, guard: guard}
	l.srv.mu.Lock()
	l.srv.conns[t] = struct{}{}
	l.srv.mu.Unlock()
	var out net.Conn = t
	if (wasTLS || l.mode == Submissions) && l.srv.TLSConfig != nil {
		out = tls.Server(t, l.srv.TLSConfig)
	}
	if ok, reason := readiness.Check(l.srv.Ready); !ok {
		l.srv.logger().Info("connection refused: node not ready", "mode", l.mode.String(),
			"remote", raw.RemoteAddr().String(), "reason", reason)
		return &refusingConn{Conn: out, track: t, reply: notReadyReply(l.srv.hostname(), reason)}, nil
	}
	return out, nil
}

// tracked finds the trackedConn under a go-smtp connection.
func tracked(c net.Conn) *trackedConn {
	if r, ok := c.(*refusingConn); ok {
		c = r.Conn
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// errorLog sends go-smtp's internal error log to slog.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.l.Debug(fmt.Sprintf(format, v...)) }
func (e errorLog) Println(v ...any)               { e.l.Debug(fmt.Sprint(v...)) }
