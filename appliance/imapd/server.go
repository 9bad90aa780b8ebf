// Package imapd is Sigillo's IMAP front end: it serves IMAP4rev1 and
// IMAP4rev2 (with NAMESPACE, UIDPLUS, MOVE, IDLE, SPECIAL-USE, LIST-STATUS,
// ESEARCH, SEARCHRES, BINARY, STATUS=SIZE, APPENDLIMIT) on top of the store,
// using go-imap/v2's imapserver for the protocol syntax.
//
// Reads (folder lists, message data, searches) come straight from the local
// store. Every change (APPEND, STORE, COPY, MOVE, EXPUNGE, CREATE, ...) is a
// storage.Command handed to the Proposer, and the client gets OK only once
// the command has been applied; a refusal by the command becomes a permanent
// NO with a response code, any other failure a temporary NO [UNAVAILABLE].
// While the node is not ready (Server.Ready) changes are refused with NO
// [UNAVAILABLE] before they are proposed; reads go on.
//
// Each selected session keeps its own view of its folder (the UIDs behind its
// sequence numbers and the modseq of the flags it was last told about) and
// brings it up to date from the store after every command and, while idling,
// whenever the store signals a change to the account: that is how changes by
// other sessions, other protocols (SMTP delivery) and other cluster nodes
// reach the client as EXISTS, EXPUNGE and FETCH FLAGS.
//
// (imapserver's MailboxTracker is not used: it assumes every change goes
// through this process's memory, while here the store, fed by raft, is the
// only place that knows them all.)
//
// It is not an authentication service (accounts.Authenticator checks
// passwords and applies the failure penalty), it holds no mail state of its
// own, and it does not implement CONDSTORE/QRESYNC (imapserver does not
// parse MODSEQ, HIGHESTMODSEQ or CHANGEDSINCE), \Recent (always 0), ACLs,
// the QUOTA extension, SORT/THREAD, or limits on connections per client.
//
// Time limits (Server.Timeouts, package deadline): 30 s for each command
// before login, the TLS handshake included; after login an autologout
// timer of 30 minutes, IDLE included; an APPEND's message may pause 5
// minutes and must average 500 bytes/s. A client out of time is told
// "* BYE Autologout" and disconnected.
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/appliance/accounts"
	"sigillo/appliance/deadline"
	"sigillo/appliance/inflight"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// Server serves IMAP on any number of listeners. Set the fields, then call
// Serve for each listener; Shutdown stops everything.
type Server struct {
	Store     *storage.Store
	Proposer  storage.Proposer
	Auth      *accounts.Authenticator
	TLSConfig *tls.Config // for STARTTLS on the plain port, and implicit TLS
	Logger    *slog.Logger
	// MaxMessageBytes limits APPEND (0: DefaultMaxMessageBytes).
	MaxMessageBytes int64
	// MaxMessageBytesNow, if set, is read at each APPEND instead of
	// MaxMessageBytes: the cluster's max_message_bytes
	// (appliance/settings), which changes while the server runs.
	MaxMessageBytesNow func() int64
	// Now is the clock (internal date of APPEND when none is given); nil
	// means time.Now.
	Now func() time.Time
	// Timeouts are the session's time limits; a zero field takes its
	// default (DefaultLoginTimeout, DefaultAutologout, DefaultDataTimeout,
	// DefaultMinDataRate).
	Timeouts deadline.Policy
	// Spool is where APPEND writes a message as it arrives (required).
	Spool *spool.Dir
	// Budget, if set, bounds the bytes of messages in memory at once: an
	// APPEND waits for room, and gets NO [UNAVAILABLE] when none came.
	Budget *inflight.Budget
	// SearchTimeout stops a SEARCH that runs longer, with NO [LIMIT]
	// (0: 15 s).
	SearchTimeout time.Duration
	// Ready, if set, says whether the node may take writes (package
	// readiness; nil: always). While it may not, logins and reads go on,
	// and every change (APPEND, STORE, COPY, MOVE, EXPUNGE, CREATE, ...)
	// answers NO [UNAVAILABLE] with the reason, without being proposed; a
	// FETCH of a body leaves \Seen unset rather than fail.
	Ready func() (ok bool, reason string)

	mu        sync.Mutex
	imap      *imapserver.Server
	base      context.Context // parent of every session's context
	cancel    context.CancelFunc
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	active    sync.WaitGroup // one per live session
	headers   headerCache    // header sections by content hash
	folders   folderCache    // message rows by folder and modseq
}

// DefaultMaxMessageBytes is the APPEND limit when MaxMessageBytes is 0.
const DefaultMaxMessageBytes = 50 << 20

const (
	// applyTimeout bounds one command's trip through raft.
	applyTimeout = 30 * time.Second
	// byeGrace is how long Shutdown lets sessions receive their BYE.
	byeGrace = time.Second
	// delim is the hierarchy delimiter of folder names.
	delim = '/'
)

// capabilities are those advertised (IDLE, UNSELECT, ENABLE, UTF8=ACCEPT,
// SASL-IR, LITERAL- and STARTTLS/AUTH=PLAIN/LOGINDISABLED are added by
// imapserver according to the connection state; APPENDLIMIT comes from the
// session). LITERAL+ is left out on purpose: a non-synchronising literal
// that is refused (too big) would be read as commands.
func capabilities() imap.CapSet {
	caps := imap.CapSet{}
	for _, c := range []imap.Cap{
		imap.CapIMAP4rev1, imap.CapIMAP4rev2,
		imap.CapNamespace, imap.CapUIDPlus, imap.CapESearch, imap.CapSearchRes,
		imap.CapListExtended, imap.CapListStatus, imap.CapMove, imap.CapStatusSize,
		imap.CapBinary, imap.CapChildren, imap.CapSpecialUse, imap.CapCreateSpecialUse,
	} {
		caps[c] = struct{}{}
	}
	return caps
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

func (s *Server) maxMessageBytes() int64 {
	if s.MaxMessageBytesNow != nil {
		if n := s.MaxMessageBytesNow(); n > 0 {
			return n
		}
	}
	if s.MaxMessageBytes > 0 {
		return s.MaxMessageBytes
	}
	return DefaultMaxMessageBytes
}

// init makes the protocol server on first use; s.mu must be held.
func (s *Server) initLocked() {
	if s.imap != nil {
		return
	}
	s.base, s.cancel = context.WithCancel(context.Background())
	s.listeners = map[net.Listener]struct{}{}
	s.sessions = map[*session]struct{}{}
	s.imap = imapserver.New(&imapserver.Options{
		NewSession:   s.newSession,
		Caps:         capabilities(),
		Logger:       libLogger{s.logger()},
		TLSConfig:    s.TLSConfig,
		InsecureAuth: false, // LOGIN and AUTHENTICATE need TLS
	})
}

// Serve accepts IMAP connections on ln until Shutdown, then returns nil.
// With implicitTLS, connections are TLS from the first byte (port 993): ln
// may hand out plain connections or *tls.Conn (a tls.NewListener) not yet
// started; either way the TLS is TLSConfig's, over the connection's
// deadline. Without it, clients must use STARTTLS before they may log in.
func (s *Server) Serve(ln net.Listener, implicitTLS bool) error {
	tl := timedListener{Listener: ln, policy: s.timeouts()}
	if s.Spool == nil {
		ln.Close()
		return errors.New("imapd: Server needs a Spool")
	}
	if implicitTLS {
		if s.TLSConfig == nil {
			ln.Close()
			return errors.New("imapd: implicit TLS needs a TLSConfig")
		}
		tl.tls = s.TLSConfig
	}
	ln = tl
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.initLocked()
	s.listeners[ln] = struct{}{}
	srv := s.imap
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	s.logger().Info("imap listening", "addr", ln.Addr().String(), "implicit_tls", implicitTLS)
	err := srv.Serve(ln)
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil
	}
	if err != nil {
		return fmt.Errorf("imapd: serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting connections, says BYE to logged-in clients,
// closes every connection and waits until every session has ended (or ctx
// is done, whose error it then returns).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.imap == nil {
		s.mu.Unlock()
		return nil
	}
	for ln := range s.listeners {
		ln.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	srv := s.imap
	s.mu.Unlock()

	// Tell logged-in clients why the connection ends. A client that does
	// not read gets cut off after byeGrace.
	var byes sync.WaitGroup
	for _, sess := range sessions {
		if !sess.loggedIn() {
			continue
		}
		byes.Add(1)
		go func() {
			defer byes.Done()
			sess.conn.Bye("Server shutting down")
		}()
	}
	byesDone := make(chan struct{})
	go func() { byes.Wait(); close(byesDone) }()
	grace := time.NewTimer(byeGrace)
	select {
	case <-byesDone:
	case <-grace.C:
	case <-ctx.Done():
	}
	grace.Stop()

	// Abort what sessions wait on (raft, auth penalties, IDLE), then close
	// every connection: imapserver closes those it knows, and we close
	// those it may not have registered yet.
	s.cancel()
	if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.logger().Debug("imap close", "err", err)
	}
	for _, sess := range sessions {
		sess.closeConn()
	}

	done := make(chan struct{})
	go func() {
		s.active.Wait()
		<-byesDone
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("imapd: shutdown: %w", ctx.Err())
	}
}

// newSession is imapserver's NewSession hook, called on the connection's
// goroutine before the greeting.
func (s *Server) newSession(conn *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	ctx, cancel := context.WithCancel(s.base)
	remote := conn.NetConn().RemoteAddr()
	sess := &session{
		srv:    s,
		conn:   conn,
		netc:   conn.NetConn(),
		remote: remote,
		ctx:    ctx,
		cancel: cancel,
		log:    s.logger().With("remote", remote.String()),
	}
	s.sessions[sess] = struct{}{}
	s.active.Add(1)
	if g := deadline.Find(sess.netc); g != nil {
		return &timedSession{session: sess, guard: g}, nil, nil
	}
	return sess, nil, nil
}

// sessionEnded is called once by each session's Close.
func (s *Server) sessionEnded(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.active.Done()
}

// libLogger routes imapserver's messages to slog. Dropped connections are
// routine (debug); panics the library recovered from are errors.
type libLogger struct{ log *slog.Logger }

func (l libLogger) Printf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	level := slog.LevelWarn
	switch {
	case strings.HasPrefix(msg, "panic"):
		level = slog.LevelError
	case strings.HasPrefix(msg, "failed to read command"), strings.HasPrefix(msg, "failed to write greeting"),
		strings.Contains(msg, "use of closed network connection"), strings.Contains(msg, "connection reset by peer"),
		strings.Contains(msg, "broken pipe"), strings.Contains(msg, "i/o timeout"):
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "imapserver: "+msg)
}
