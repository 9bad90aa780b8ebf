package smtpd

import (
	"errors"
	"io"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sigillo/appliance/connlimit"
	"sigillo/appliance/deadline"
)

// The time limits of a session (Server.Timeouts), after RFC 5321
// §4.5.3.2: the server waits at least 5 minutes for each command once the
// client is doing business; before that (before AUTH on the submission
// ports, before MAIL on the inbound port) a client that has not yet shown
// who it is gets 30 s per command, TLS handshake included. A message's
// data may pause for 5 minutes and must average 500 bytes/s (Postfix's
// smtpd_timeout and smtpd_min_data_rate).
const (
	DefaultLoginTimeout = 30 * time.Second
	DefaultDataTimeout  = 5 * time.Minute
	DefaultMinDataRate  = 500
)

// errDataTimeout ends a transfer that ran out of time: a temporary error,
// so that the sender tries again later.
var errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Error: timeout exceeded, message data too slow"}

func (s *Server) timeouts() deadline.Policy {
	return s.Timeouts.Or(deadline.Policy{Login: DefaultLoginTimeout, Session: Timeout, Data: DefaultDataTimeout, MinRate: DefaultMinDataRate})
}

// timedBackend hands go-smtp sessions that tell the connection's deadline
// where the session stands.
type timedBackend struct{ *backend }

func (b timedBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sess, err := b.backend.NewSession(c)
	if err != nil {
		return sess, err
	}
	t := tracked(c.Conn())
	if t == nil {
		return sess, nil
	}
	return &timedSession{Session: sess, track: t, mode: b.mode}, nil
}

// timedSession is a session as go-smtp sees it: it marks the connection
// established after AUTH (or on the inbound port after MAIL), and a
// message's data as a transfer.
type timedSession struct {
	smtp.Session
	track *trackedConn
	mode  Mode
}

var _ smtp.AuthSession = (*timedSession)(nil)

func (t *timedSession) established() {
	t.track.guard.Established()
	connlimit.Authenticated(t.track)
}

func (t *timedSession) AuthMechanisms() []string {
	if a, ok := t.Session.(smtp.AuthSession); ok {
		return a.AuthMechanisms()
	}
	return nil
}

func (t *timedSession) Auth(mech string) (sasl.Server, error) {
	a, ok := t.Session.(smtp.AuthSession)
	if !ok {
		return nil, smtp.ErrAuthUnsupported
	}
	srv, err := a.Auth(mech)
	if err != nil {
		return nil, err
	}
	return authWatch{Server: srv, done: t.established}, nil
}

func (t *timedSession) Mail(from string, opts *smtp.MailOptions) error {
	err := t.Session.Mail(from, opts)
	if err == nil && t.mode == Inbound {
		t.established()
	}
	return err
}

// Data receives the message as a transfer: too slow, and the client gets
// 421 and is disconnected.
func (t *timedSession) Data(r io.Reader) error {
	_, bdat := r.(*io.PipeReader)
	t.track.bdat.Store(bdat)
	t.track.guard.BeginTransfer()
	err := t.Session.Data(r)
	t.track.guard.EndTransfer()
	if timedOut, _ := t.track.guard.TimedOut(); timedOut {
		return errDataTimeout
	}
	return err
}

// authWatch notes a successful authentication.
type authWatch struct {
	sasl.Server
	done func()
}

func (a authWatch) Next(resp []byte) ([]byte, bool, error) {
	challenge, done, err := a.Server.Next(resp)
	if done && err == nil {
		a.done()
	}
	return challenge, done, err
}

// readTimeout is what a Read of the connection returns when a transfer ran
// out of time. go-smtp answers BDAT's read errors itself, and a
// *smtp.SMTPError is the only way to make its answer a 421 (not a 554,
// which would make the sender bounce the message); DATA's are answered by
// timedSession.Data. Over TLS that error sticks, and go-smtp would answer
// it a second time when it reads the next command: the connection is
// closed once the 421 is written.
func (c *trackedConn) readTimeout(err error) error {
	var de *deadline.Error
	if errors.As(err, &de) && de.Transfer && c.bdat.Load() {
		c.hangUp.Store(true)
		return errDataTimeout
	}
	return err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.hangUp.Swap(false) {
		c.lingerClose()
	}
	return n, err
}
