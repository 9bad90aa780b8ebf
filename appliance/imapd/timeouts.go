package imapd

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/appliance/connlimit"
	"sigillo/appliance/deadline"
)

// The time limits of a session (Server.Timeouts). Before login a client
// has 30 s for each command (the TLS handshake included); once logged in,
// the autologout timer is 30 minutes, IDLE included (RFC 9051 §5.4: at
// least 30 minutes; clients renew IDLE every 29); an APPEND's message may
// pause 5 minutes and must average 500 bytes/s. The client gets
// "* BYE Autologout" and is disconnected.
const (
	DefaultLoginTimeout = 30 * time.Second
	DefaultAutologout   = 30 * time.Minute
	DefaultDataTimeout  = 5 * time.Minute
	DefaultMinDataRate  = 500
)

func (s *Server) timeouts() deadline.Policy {
	return s.Timeouts.Or(deadline.Policy{Login: DefaultLoginTimeout, Session: DefaultAutologout, Data: DefaultDataTimeout, MinRate: DefaultMinDataRate})
}

// timedListener puts every accepted connection under a deadline.Conn, and
// under TLS on the implicit-TLS port.
type timedListener struct {
	net.Listener
	tls    *tls.Config // nil: plain (STARTTLS)
	policy deadline.Policy
}

func (l timedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		// A listener from tls.NewListener: put the deadline under the
		// (not yet started) TLS.
		c = tc.NetConn()
	}
	g := deadline.New(c, l.policy)
	if l.tls != nil {
		return tls.Server(g, l.tls), nil
	}
	return g, nil
}

// timedSession is a session as imapserver sees it: it marks the
// connection established at login, APPEND's message as a transfer, and
// says BYE to a client that ran out of time.
type timedSession struct {
	*session
	guard *deadline.Conn
}

var (
	_ imapserver.SessionIMAP4rev2   = (*timedSession)(nil)
	_ imapserver.SessionAppendLimit = (*timedSession)(nil)
)

func (t *timedSession) Login(username, password string) error {
	if err := t.session.Login(username, password); err != nil {
		return err
	}
	t.guard.Established()
	connlimit.Authenticated(t.netc)
	return nil
}

func (t *timedSession) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	t.guard.BeginTransfer()
	defer t.guard.EndTransfer()
	return t.session.Append(mailbox, r, options)
}

// Close says why the connection ends when the client ran out of time
// (imapserver calls Close before it closes the connection).
func (t *timedSession) Close() error {
	if timedOut, inTransfer := t.guard.TimedOut(); timedOut && !t.closeOnce.Load() {
		text := "Autologout; idle for too long"
		if inTransfer {
			text = fmt.Sprintf("Autologout; message data too slow (under %d bytes/s)", t.srv.timeouts().MinRate)
		}
		t.log.Debug("imap timeout", "logged_in", t.loggedIn(), "in_transfer", inTransfer)
		t.conn.Bye(text)
	}
	return t.session.Close()
}
