package pop3d

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"sigillo/appliance/authlimit"
)

// DefaultIdleTimeout is the inactivity timer of RFC 1939, section 3, once
// logged in.
const DefaultIdleTimeout = 10 * time.Minute

// DefaultLoginTimeout bounds, before login, the TLS handshake (on pop3s
// and after STLS) and the wait for each command.
const DefaultLoginTimeout = 30 * time.Second

// Server is a POP3 server. Set its fields, then call Serve for each
// listener; the fields must not change after the first Serve.
type Server struct {
	// Backend authenticates users and opens their maildrops. Required.
	Backend Backend
	// TLSConfig is used for STLS on plain listeners. If nil, STLS is not
	// offered, and no one can log in over a plain listener.
	TLSConfig *tls.Config
	// Limiter slows down repeated authentication failures. If nil, the
	// server uses its own authlimit.Default(), not shared with other
	// protocols.
	Limiter *authlimit.Limiter
	// Hostname is named in the greeting.
	Hostname string
	// Logger receives connection and error logs; nil means slog.Default().
	// Passwords and SASL responses are never logged.
	Logger *slog.Logger
	// IdleTimeout closes a logged-in connection on which the client has
	// sent nothing for that long; zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// LoginTimeout is the same before login, and bounds the TLS
	// handshake; zero means DefaultLoginTimeout.
	LoginTimeout time.Duration
	// Ready, if set, says whether the node may take writes (package
	// readiness; nil: always). While it may not, DELE and a QUIT with
	// messages to delete answer -ERR [SYS/TEMP] with the reason and
	// nothing is deleted; logins, LIST, RETR and the rest go on.
	Ready func() (ok bool, reason string)

	initOnce sync.Once
	limiter  *authlimit.Limiter
	logger   *slog.Logger
	baseCtx  context.Context    // cancelled when Shutdown gives up waiting
	cancel   context.CancelFunc // cancels baseCtx

	mu        sync.Mutex
	closing   bool
	listeners map[*net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup // one per session goroutine
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.limiter = s.Limiter
		if s.limiter == nil {
			s.limiter = authlimit.Default()
		}
		s.logger = s.Logger
		if s.logger == nil {
			s.logger = slog.Default()
		}
		s.logger = s.logger.With("proto", "pop3")
		s.baseCtx, s.cancel = context.WithCancel(context.Background())
		s.listeners = map[*net.Listener]struct{}{}
		s.sessions = map[*session]struct{}{}
	})
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) loginTimeout() time.Duration {
	if s.LoginTimeout > 0 {
		return s.LoginTimeout
	}
	return DefaultLoginTimeout
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown is called, and then returns nil. With implicitTLS the
// listener must yield *tls.Conn (wrap it with tls.NewListener): the
// connection is then treated as protected and authentication is allowed at
// once; a connection of another type is refused. Without it, clients must
// use STLS before authenticating. Serve closes ln when it returns.
func (s *Server) Serve(ln net.Listener, implicitTLS bool) error {
	s.init()
	if s.Backend == nil {
		ln.Close()
		return errors.New("pop3d: Serve: Server.Backend is nil")
	}
	if !implicitTLS && s.TLSConfig == nil {
		s.logger.Warn("plain POP3 listener without TLS configuration: STLS is unavailable, so no one can log in here",
			"addr", ln.Addr().String())
	}
	if !s.trackListener(&ln, true) {
		ln.Close()
		return nil
	}
	defer s.trackListener(&ln, false)
	defer ln.Close()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger.Warn("accept failed; retrying", "addr", ln.Addr().String(), "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("pop3d: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		sess := newSession(s, conn, implicitTLS)
		if !s.trackSession(sess) {
			conn.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrackSession(sess)
			sess.serve()
		}()
	}
}

// Shutdown stops the server: it closes the listeners, closes connections
// waiting for a command, lets sessions busy with a command finish it (a
// QUIT in progress completes its deletions), and waits for all sessions to
// end. If ctx ends first, it closes the remaining connections, cancels
// their backend calls, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		(*ln).Close()
	}
	for sess := range s.sessions {
		if sess.idle {
			// Wake the read; the session says goodbye and ends.
			sess.rawConn.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	n := len(s.sessions)
	for sess := range s.sessions {
		sess.rawConn.Close()
	}
	s.mu.Unlock()
	s.logger.Warn("shutdown deadline reached; closed busy sessions", "sessions", n)
	return fmt.Errorf("pop3d: shutdown: %w", ctx.Err())
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// trackListener adds or removes a listener; adding fails once Shutdown has
// begun.
func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, ln)
		return true
	}
	if s.closing {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

// trackSession registers a session and counts it in wg; it fails once
// Shutdown has begun.
func (s *Server) trackSession(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrackSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
}

// setIdle marks a session as waiting for the client (idle) or busy. It
// reports false if the session should end instead of waiting because
// Shutdown has begun.
func (s *Server) setIdle(sess *session, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess.idle = idle
	return !(idle && s.closing)
}
