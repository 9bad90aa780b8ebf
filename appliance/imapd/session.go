package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/appliance/accounts"
	"sigillo/appliance/readiness"
	"sigillo/storage"
)

// session is one IMAP connection. imapserver calls its methods one at a time
// from the connection's goroutine, except Idle, which runs on a goroutine of
// its own while the connection waits for DONE, and may still be finishing
// when Close is called.
type session struct {
	srv    *Server
	conn   *imapserver.Conn
	netc   net.Conn // the accepted connection, for Shutdown to close
	remote net.Addr
	ctx    context.Context // cancelled by Close and Shutdown
	cancel context.CancelFunc
	log    *slog.Logger
	authed atomic.Bool // logged in; read by Shutdown without taking mu

	mu      sync.Mutex
	closed  bool
	account *storage.Mailbox // nil until logged in
	sel     *view            // nil unless a folder is selected
	idle    sync.WaitGroup   // a running Idle

	idling    atomic.Bool // an Idle goroutine is running
	closeOnce atomic.Bool
}

var (
	_ imapserver.SessionIMAP4rev2   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)
)

func (s *session) loggedIn() bool { return s.authed.Load() }

// closeConn cuts the connection at once: it closes the socket under any TLS
// (a TLS close would first try to send an alert, which can block on a
// client that does not read).
func (s *session) closeConn() {
	c := s.netc
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if c != nil {
		c.Close()
	}
}

// Close implements imapserver.Session. It is called once, when the
// connection ends.
func (s *session) Close() error {
	if !s.closeOnce.CompareAndSwap(false, true) {
		return nil
	}
	s.cancel()
	// imapserver calls Close without waiting for an Idle that was
	// interrupted by a broken connection: cut the connection so that its
	// goroutine cannot stay blocked writing (it may hold mu), and wait for
	// it before releasing the view.
	if s.idling.Load() {
		s.closeConn()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.idle.Wait()

	s.mu.Lock()
	if s.sel != nil {
		s.sel.release()
		s.sel = nil
	}
	s.mu.Unlock()
	s.srv.sessionEnded(s)
	return nil
}

// Login implements imapserver.Session; AUTHENTICATE PLAIN comes here too.
// imapserver has already refused it if the connection is not TLS.
func (s *session) Login(username, password string) error {
	if s.srv.Auth == nil {
		return unavailable("Authentication is not configured")
	}
	mb, err := s.srv.Auth.Login(s.ctx, username, password, s.remote)
	if errors.Is(err, accounts.ErrAuthFailed) {
		s.log.Info("imap login failed", "user", username)
		return imapserver.ErrAuthFailed
	}
	if err != nil {
		s.log.Warn("imap login", "user", username, "err", err)
		return unavailable("Authentication is temporarily unavailable, try again later")
	}
	s.mu.Lock()
	s.account = &mb
	s.log = s.log.With("user", mb.Address)
	s.mu.Unlock()
	s.authed.Store(true)
	s.log.Info("imap login")
	return nil
}

// Namespace implements imapserver.SessionNamespace: one personal namespace.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}, nil
}

// AppendLimit implements imapserver.SessionAppendLimit.
func (s *session) AppendLimit() uint32 {
	n := s.srv.maxMessageBytes()
	if n > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

// mailboxID is the logged-in account; imapserver only calls the methods
// that use it in the authenticated state.
func (s *session) mailboxID() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.account == nil {
		return 0
	}
	return s.account.ID
}

// apply proposes cmd and waits for it to be applied. Errors are ready for the
// client: a refusal is a permanent NO with its response code, anything else
// NO [UNAVAILABLE]; while the node is not ready, NO [UNAVAILABLE] at once.
func (s *session) apply(cmd storage.Command) (any, error) {
	if err := s.writable(cmd.Op()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, applyTimeout)
	defer cancel()
	v, err := s.srv.Proposer.Apply(ctx, cmd)
	if err != nil {
		return nil, s.fail(cmd.Op(), err)
	}
	return v.Value, nil
}

// applyAs is apply for a command whose value the caller reads: the value
// comes as T, the command's result type.
func applyAs[T any](s *session, cmd storage.Command) (T, error) {
	if err := s.writable(cmd.Op()); err != nil {
		var zero T
		return zero, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, applyTimeout)
	defer cancel()
	v, err := storage.ApplyAs[T](ctx, s.srv.Proposer, cmd)
	if err != nil {
		return v, s.fail(cmd.Op(), err)
	}
	return v, nil
}

// writable is the one gate of every change a session proposes: while the
// node is not ready (Server.Ready) it answers NO [UNAVAILABLE] with the
// reason, and nothing is proposed.
func (s *session) writable(op string) error {
	if ok, reason := readiness.Check(s.srv.Ready); !ok {
		s.log.Info("imap change refused: node not ready", "op", op, "reason", reason)
		return unavailable(reason)
	}
	return nil
}

// fail turns an error from the store or the proposer into the client's
// answer, logging those that are not the client's doing.
func (s *session) fail(what string, err error) error {
	var imapErr *imap.Error
	if errors.As(err, &imapErr) {
		return err
	}
	var refusal *storage.Error
	if errors.As(err, &refusal) {
		code := imap.ResponseCodeCannot
		switch refusal.Code {
		case storage.ErrNotFound:
			code = imap.ResponseCodeNonExistent
		case storage.ErrExists:
			code = imap.ResponseCodeAlreadyExists
		case storage.ErrOverQuota:
			code = imap.ResponseCodeOverQuota
		case storage.ErrNotEmpty:
			code = imap.ResponseCodeHasChildren
		}
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: refusal.Msg}
	}
	s.log.Warn("imap command failed", "op", what, "err", err)
	return unavailable("Temporary failure, try again later")
}

// code is the response code of an IMAP error, or "".
func code(err error) imap.ResponseCode {
	var e *imap.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func unavailable(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: text}
}

func no(code imap.ResponseCode, format string, args ...any) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: code, Text: fmt.Sprintf(format, args...)}
}

func bad(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
}
