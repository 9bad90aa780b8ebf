package pop3d

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"sigillo/appliance/authlimit"
	"sigillo/appliance/connlimit"
	"sigillo/appliance/readiness"
)

const (
	// maxBadCommands is how many failed commands in a row end the session.
	maxBadCommands = 10
	// maxAuthFailures is how many failed logins end the session.
	maxAuthFailures = 5
	// goodbyeTimeout bounds the last write before closing on our side.
	goodbyeTimeout = 5 * time.Second
)

var (
	// errQuit ends a session normally.
	errQuit = errors.New("session ended")
	// errShutdown ends a session because the server is shutting down.
	errShutdown = errors.New("server shutting down")
)

type state int

const (
	stateAuthorization state = iota
	stateTransaction
	stateUpdate
)

// session is one client connection.
type session struct {
	srv    *Server
	ctx    context.Context
	cancel context.CancelFunc
	// rawConn is the accepted connection. Shutdown touches it from
	// another goroutine (SetReadDeadline, Close), which net.Conn allows.
	rawConn net.Conn
	// conn is what the session reads and writes: rawConn, or a TLS
	// connection over it after STLS.
	conn net.Conn
	dw   *deadlineWriter
	br   *bufio.Reader
	bw   *bufio.Writer
	host string
	log  *slog.Logger

	implicitTLS bool
	tls         bool
	idle        bool // waiting for the client; guarded by srv.mu

	state        state
	user         string // from USER, waiting for PASS
	authFailures int
	badInRow     int
	md           Maildrop
	msgs         []msgEntry
}

type msgEntry struct {
	uid     string
	uidl    string
	size    int64
	deleted bool
	read    bool // retrieved whole with RETR
}

// deadlineWriter pushes the write deadline forward before each write, so a
// client that stops reading a long RETR is dropped after the timeout.
type deadlineWriter struct {
	conn    net.Conn
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, err
	}
	return w.conn.Write(p)
}

func newSession(srv *Server, conn net.Conn, implicitTLS bool) *session {
	srv.init()
	ctx, cancel := context.WithCancel(srv.baseCtx)
	s := &session{
		srv:         srv,
		ctx:         ctx,
		cancel:      cancel,
		rawConn:     conn,
		host:        authlimit.Host(conn.RemoteAddr()),
		implicitTLS: implicitTLS,
	}
	s.log = srv.logger.With("remote", addrString(conn.RemoteAddr()))
	s.setConn(conn)
	return s
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.dw = &deadlineWriter{conn: c, timeout: s.srv.idleTimeout()}
	s.br = bufio.NewReaderSize(c, 4096)
	s.bw = bufio.NewWriterSize(s.dw, 16<<10)
}

// serve runs the session until QUIT, an I/O error, a timeout or shutdown,
// then releases everything it holds. A panic (from a backend, say) ends
// the session, not the server.
func (s *session) serve() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in POP3 session", "panic", r, "stack", string(debug.Stack()))
		}
		s.close()
	}()
	s.log.Debug("connection opened", "implicit_tls", s.implicitTLS)
	if s.implicitTLS {
		tc, ok := s.conn.(*tls.Conn)
		if !ok {
			s.log.Error("implicit TLS listener yielded a non-TLS connection; refusing it (wrap the listener with tls.NewListener)")
			return
		}
		if err := s.handshake(tc); err != nil {
			s.log.Debug("TLS handshake failed", "err", err)
			return
		}
		s.tls = true
	}
	s.run()
}

// handshake runs the TLS handshake. Like waiting for a command, it waits
// for the client, so the session counts as idle and Shutdown may end it.
func (s *session) handshake(tc *tls.Conn) error {
	if !s.srv.setIdle(s, true) {
		return errShutdown
	}
	defer s.srv.setIdle(s, false)
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.loginTimeout())
	defer cancel()
	return tc.HandshakeContext(ctx)
}

// close releases the maildrop and the connection.
func (s *session) close() {
	if s.md != nil {
		if err := s.md.Close(); err != nil {
			s.log.Warn("closing maildrop", "err", err)
		}
		s.md = nil
	}
	s.rawConn.Close()
	s.cancel()
	s.log.Debug("connection closed")
}

// run greets the client and executes its commands.
func (s *session) run() {
	host := s.srv.Hostname
	if host == "" {
		host = "localhost"
	}
	if err := s.reply("+OK %s Sigillo POP3 server ready", host); err != nil {
		return
	}
	err := s.loop()
	switch {
	case errors.Is(err, errQuit):
	case errors.Is(err, errShutdown):
		s.goodbye("-ERR [SYS/TEMP] Server shutting down")
	case isTimeout(err):
		if s.srv.shuttingDown() {
			s.goodbye("-ERR [SYS/TEMP] Server shutting down")
		} else {
			s.goodbye("-ERR Disconnected for inactivity")
		}
	default:
		s.log.Debug("connection ended", "err", err)
	}
	if err := s.bw.Flush(); err != nil {
		s.log.Debug("final flush", "err", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// goodbye writes a last line, with a short deadline, before we close.
func (s *session) goodbye(line string) {
	s.dw.timeout = goodbyeTimeout
	s.bw.WriteString(line + "\r\n")
	s.bw.Flush()
}

func (s *session) loop() error {
	for {
		line, err := s.readLine(maxLine)
		switch {
		case errors.Is(err, errLineTooLong):
			if err := s.fail("line too long"); err != nil {
				return err
			}
			continue
		case errors.Is(err, errLineAbuse):
			s.log.Info("closing: client sent an endless line")
			s.goodbye("-ERR line too long, closing connection")
			return errQuit
		case err != nil:
			return err
		}
		cmd, err := parseCommand(line)
		switch {
		case errors.Is(err, errEmptyLine):
			err = s.fail("empty command")
		case errors.Is(err, errBadChar):
			err = s.fail("invalid character in command")
		case err != nil:
			err = s.fail("unknown command")
		default:
			s.log.Debug("command", "cmd", cmd.name)
			err = s.dispatch(cmd)
		}
		if err != nil {
			return err
		}
	}
}

// readLine waits for one line from the client. The session counts as idle
// meanwhile, so Shutdown may interrupt it.
func (s *session) readLine(max int) ([]byte, error) {
	// Send pending responses unless the client has pipelined another
	// complete command; RFC 2449 PIPELINING lets us batch them.
	pending, _ := s.br.Peek(s.br.Buffered())
	if bytes.IndexByte(pending, '\n') < 0 {
		if err := s.bw.Flush(); err != nil {
			return nil, err
		}
	}
	// The deadline is set before the session is marked idle: Shutdown
	// sets an immediate deadline on idle sessions, which must win. The
	// whole line must come within it; before login, a shorter one.
	timeout := s.srv.idleTimeout()
	if s.state == stateAuthorization {
		timeout = s.srv.loginTimeout()
	}
	if err := s.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if !s.srv.setIdle(s, true) {
		return nil, errShutdown
	}
	defer s.srv.setIdle(s, false)
	return readLine(s.br, max)
}

// reply writes one response line.
func (s *session) reply(format string, args ...any) error {
	fmt.Fprintf(s.bw, format, args...)
	_, err := s.bw.WriteString("\r\n")
	return err
}

// ok writes a positive response and resets the bad-command counter.
func (s *session) ok(format string, args ...any) error {
	s.badInRow = 0
	if format == "" {
		return s.reply("+OK")
	}
	return s.reply("+OK "+format, args...)
}

// fail answers a command the client got wrong. After maxBadCommands in a
// row it closes the connection instead.
func (s *session) fail(format string, args ...any) error {
	s.badInRow++
	if s.badInRow >= maxBadCommands {
		s.log.Info("closing: too many bad commands")
		s.reply("-ERR too many bad commands, closing connection")
		return errQuit
	}
	return s.reply("-ERR "+format, args...)
}

// tempFail answers a command that failed on our side.
func (s *session) tempFail(format string, args ...any) error {
	return s.reply("-ERR [SYS/TEMP] "+format, args...)
}

func (s *session) dispatch(cmd command) error {
	switch cmd.name {
	case "CAPA":
		return s.cmdCAPA(cmd)
	case "QUIT":
		return s.cmdQUIT(cmd)
	}
	if s.state == stateAuthorization {
		switch cmd.name {
		case "USER":
			return s.cmdUSER(cmd)
		case "PASS":
			return s.cmdPASS(cmd)
		case "AUTH":
			return s.cmdAUTH(cmd)
		case "STLS":
			return s.cmdSTLS(cmd)
		case "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP":
			return s.fail("not logged in")
		}
		return s.fail("unknown command")
	}
	switch cmd.name {
	case "STAT":
		return s.cmdSTAT(cmd)
	case "LIST":
		return s.cmdLIST(cmd)
	case "UIDL":
		return s.cmdUIDL(cmd)
	case "RETR":
		return s.cmdRETR(cmd)
	case "TOP":
		return s.cmdTOP(cmd)
	case "DELE":
		return s.cmdDELE(cmd)
	case "RSET":
		return s.cmdRSET(cmd)
	case "NOOP":
		if len(cmd.args) != 0 {
			return s.fail("syntax error: NOOP takes no arguments")
		}
		return s.ok("")
	case "USER", "PASS", "AUTH", "STLS", "APOP":
		return s.fail("already logged in")
	}
	return s.fail("unknown command")
}

func (s *session) cmdCAPA(cmd command) error {
	if len(cmd.args) != 0 {
		return s.fail("syntax error: CAPA takes no arguments")
	}
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER", "LOGIN-DELAY 0"}
	if !s.tls && s.srv.TLSConfig != nil {
		caps = append(caps, "STLS")
	}
	if s.tls {
		caps = append(caps, "USER", "SASL PLAIN")
	}
	caps = append(caps, "IMPLEMENTATION Sigillo")
	if err := s.ok("Capability list follows"); err != nil {
		return err
	}
	for _, c := range caps {
		s.bw.WriteString(c + "\r\n")
	}
	_, err := s.bw.WriteString(".\r\n")
	return err
}

func (s *session) cmdQUIT(cmd command) error {
	if len(cmd.args) != 0 {
		return s.fail("syntax error: QUIT takes no arguments")
	}
	if s.state == stateAuthorization {
		s.ok("Sigillo POP3 server signing off")
		return errQuit
	}
	s.state = stateUpdate
	ready, reason := readiness.Check(s.srv.Ready)
	var uids, read []string
	left := 0
	for _, m := range s.msgs {
		if m.deleted {
			uids = append(uids, m.uid)
		} else {
			left++
			if m.read {
				read = append(read, m.uid)
			}
		}
	}
	if !ready && len(uids) > 0 {
		s.log.Info("QUIT: nothing deleted, node not ready", "count", len(uids), "reason", reason)
		s.tempFail("%s", reason)
		return errQuit
	}
	// Messages downloaded and kept are read, in IMAP too (as Dovecot
	// does); not by a node that may not write (they stay unread).
	if ms, ok := s.md.(SeenMarker); ok && len(read) > 0 && ready {
		if err := ms.MarkSeen(s.ctx, read); err != nil {
			s.log.Warn("marking retrieved messages seen", "count", len(read), "err", err)
		}
	}
	if len(uids) > 0 {
		if err := s.md.Delete(s.ctx, uids); err != nil {
			s.log.Error("deleting messages at QUIT", "count", len(uids), "err", err)
			s.tempFail("some deleted messages not removed")
			return errQuit
		}
		s.log.Info("deleted messages", "count", len(uids))
	}
	s.ok("Sigillo POP3 server signing off (%d messages left)", left)
	return errQuit
}

const plaintextRefused = "[AUTH] Plaintext authentication disallowed on non-TLS connections; use STLS first"

func (s *session) cmdUSER(cmd command) error {
	if !s.tls {
		return s.fail(plaintextRefused)
	}
	if len(cmd.args) != 1 {
		return s.fail("syntax error: USER name")
	}
	s.user = cmd.args[0]
	return s.ok("send PASS")
}

func (s *session) cmdPASS(cmd command) error {
	if !s.tls {
		return s.fail(plaintextRefused)
	}
	if s.user == "" {
		return s.fail("USER first")
	}
	user := s.user
	s.user = ""
	// The whole rest of the line is the password: it may contain spaces.
	return s.login(user, cmd.rest, "USER")
}

func (s *session) cmdAUTH(cmd command) error {
	if !s.tls {
		return s.fail(plaintextRefused)
	}
	if len(cmd.args) == 0 {
		// Not in RFC 5034, but clients still use it to list mechanisms.
		if err := s.ok("Supported SASL mechanisms follow"); err != nil {
			return err
		}
		_, err := s.bw.WriteString("PLAIN\r\n.\r\n")
		return err
	}
	if len(cmd.args) > 2 {
		return s.fail("syntax error: AUTH mechanism [initial-response]")
	}
	if !strings.EqualFold(cmd.args[0], "PLAIN") {
		return s.fail("unsupported authentication mechanism")
	}
	s.user = ""
	var resp string
	if len(cmd.args) == 2 {
		resp = cmd.args[1]
	} else {
		if err := s.reply("+ "); err != nil {
			return err
		}
		line, err := s.readLine(maxSASLLine)
		if errors.Is(err, errLineTooLong) {
			return s.fail("SASL response too long")
		}
		if err != nil {
			return err
		}
		resp = string(line)
	}
	if resp == "*" {
		return s.fail("authentication cancelled")
	}
	var data []byte
	if resp != "=" {
		var err error
		if data, err = base64.StdEncoding.DecodeString(resp); err != nil {
			return s.fail("invalid base64 in SASL response")
		}
	}
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return s.fail("[AUTH] malformed PLAIN response")
	}
	authz, authc, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if strings.ContainsFunc(authc, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s.fail("[AUTH] malformed PLAIN response")
	}
	if authz != "" && authz != authc {
		return s.fail("[AUTH] authorization identity not supported")
	}
	return s.login(authc, pass, "PLAIN")
}

// login checks credentials and, on success, enters the TRANSACTION state.
// The password is never logged.
func (s *session) login(user, pass, mech string) error {
	// A host under penalty gets its attempts spaced, across connections.
	if err := s.srv.limiter.Admit(s.ctx, s.host); err != nil {
		return s.tempFail("server shutting down")
	}
	md, err := s.srv.Backend.Login(s.ctx, user, pass)
	if err == nil && md == nil {
		err = errors.New("backend returned no maildrop")
	}
	switch {
	case errors.Is(err, ErrAuthFailed):
		s.authFailures++
		delay := s.srv.limiter.Failed(s.ctx, s.host, s.srv.limiter.Fingerprint(user, pass))
		s.log.Warn("authentication failed", "user", user, "mech", mech,
			"session_failures", s.authFailures, "delay", delay)
		if s.authFailures >= maxAuthFailures {
			s.reply("-ERR [AUTH] Authentication failed; too many failures, closing connection")
			return errQuit
		}
		return s.reply("-ERR [AUTH] Authentication failed")
	case err != nil:
		s.log.Error("login: backend failure", "user", user, "mech", mech, "err", err)
		return s.tempFail("temporary authentication failure, try again later")
	}
	s.srv.limiter.Succeeded(s.host)
	msgs, err := md.Messages(s.ctx)
	if err != nil {
		if cerr := md.Close(); cerr != nil {
			s.log.Warn("closing maildrop", "user", user, "err", cerr)
		}
		s.log.Error("listing maildrop", "user", user, "err", err)
		return s.tempFail("cannot open maildrop, try again later")
	}
	s.md = md
	s.msgs = make([]msgEntry, len(msgs))
	var total int64
	for i, m := range msgs {
		s.msgs[i] = msgEntry{uid: m.UID, uidl: uidlString(m.UID), size: max(m.Size, 0)}
		total += s.msgs[i].size
	}
	s.state = stateTransaction
	// Logged in: no longer counted among the connections from its
	// address that have not (connlimit).
	connlimit.Authenticated(s.rawConn)
	s.log = s.log.With("user", user)
	s.log.Info("logged in", "mech", mech, "messages", len(msgs))
	return s.ok("logged in, %d messages (%d octets)", len(msgs), total)
}

func (s *session) cmdSTLS(cmd command) error {
	if len(cmd.args) != 0 {
		return s.fail("syntax error: STLS takes no arguments")
	}
	if s.tls {
		return s.fail("command not permitted when TLS active")
	}
	if s.srv.TLSConfig == nil {
		return s.fail("STLS not available")
	}
	if s.br.Buffered() > 0 {
		// Anything the client sent after STLS and before the handshake
		// is cleartext that an attacker may have injected (the
		// CVE-2011-0411 class of bugs); it must not be run after TLS.
		s.log.Warn("closing: data pipelined after STLS")
		s.reply("-ERR data after STLS refused, closing connection")
		return errQuit
	}
	if err := s.ok("Begin TLS negotiation"); err != nil {
		return err
	}
	if err := s.bw.Flush(); err != nil {
		return err
	}
	tc := tls.Server(s.conn, s.srv.TLSConfig)
	if err := s.handshake(tc); err != nil {
		s.log.Debug("STLS handshake failed", "err", err)
		return fmt.Errorf("STLS handshake: %w", err)
	}
	s.setConn(tc)
	s.tls = true
	s.user = ""
	return nil
}

// msgArg resolves a message-number argument to a live message.
func (s *session) msgArg(arg string) (int, *msgEntry, string) {
	n, ok := parseMsgNum(arg)
	if !ok {
		return 0, nil, "invalid message number"
	}
	if n > len(s.msgs) {
		return 0, nil, "no such message"
	}
	m := &s.msgs[n-1]
	if m.deleted {
		return 0, nil, fmt.Sprintf("message %d already deleted", n)
	}
	return n, m, ""
}

func (s *session) totals() (int, int64) {
	n, size := 0, int64(0)
	for _, m := range s.msgs {
		if !m.deleted {
			n++
			size += m.size
		}
	}
	return n, size
}

func (s *session) cmdSTAT(cmd command) error {
	if len(cmd.args) != 0 {
		return s.fail("syntax error: STAT takes no arguments")
	}
	n, size := s.totals()
	return s.ok("%d %d", n, size)
}

func (s *session) cmdLIST(cmd command) error {
	return s.listing(cmd, "LIST", func(n int, m *msgEntry) string {
		return fmt.Sprintf("%d %d", n, m.size)
	})
}

func (s *session) cmdUIDL(cmd command) error {
	return s.listing(cmd, "UIDL", func(n int, m *msgEntry) string {
		return fmt.Sprintf("%d %s", n, m.uidl)
	})
}

// listing implements LIST and UIDL, which differ only in what they say
// about each message.
func (s *session) listing(cmd command, name string, line func(int, *msgEntry) string) error {
	switch len(cmd.args) {
	case 0:
		n, size := s.totals()
		if err := s.ok("%d messages (%d octets)", n, size); err != nil {
			return err
		}
		for i := range s.msgs {
			if !s.msgs[i].deleted {
				s.bw.WriteString(line(i+1, &s.msgs[i]) + "\r\n")
			}
		}
		_, err := s.bw.WriteString(".\r\n")
		return err
	case 1:
		n, m, msg := s.msgArg(cmd.args[0])
		if m == nil {
			return s.fail("%s", msg)
		}
		return s.ok("%s", line(n, m))
	}
	return s.fail("syntax error: %s [msg]", name)
}

func (s *session) cmdRETR(cmd command) error {
	if len(cmd.args) != 1 {
		return s.fail("syntax error: RETR msg")
	}
	n, m, msg := s.msgArg(cmd.args[0])
	if m == nil {
		return s.fail("%s", msg)
	}
	if err := s.sendMessage(n, m, -1, fmt.Sprintf("%d octets", m.size)); err != nil {
		return err
	}
	m.read = true
	return nil
}

func (s *session) cmdTOP(cmd command) error {
	if len(cmd.args) != 2 {
		return s.fail("syntax error: TOP msg lines")
	}
	n, m, msg := s.msgArg(cmd.args[0])
	if m == nil {
		return s.fail("%s", msg)
	}
	lines, ok := parseLineCount(cmd.args[1])
	if !ok {
		return s.fail("invalid line count")
	}
	return s.sendMessage(n, m, lines, "top of message follows")
}

// sendMessage answers RETR (bodyLines < 0) or TOP. If reading the message
// fails after the +OK went out, the connection is closed without the
// terminating dot, so the client cannot take a truncated message for a
// whole one.
func (s *session) sendMessage(n int, m *msgEntry, bodyLines int, okText string) error {
	rc, err := s.md.Open(s.ctx, m.uid)
	if errors.Is(err, ErrNoSuchMessage) {
		return s.fail("message %d was removed by another session", n)
	}
	if err != nil {
		s.log.Error("opening message", "msg", n, "uid", m.uid, "err", err)
		return s.tempFail("cannot read message %d, try again later", n)
	}
	defer rc.Close()
	if err := s.ok("%s", okText); err != nil {
		return err
	}
	if err := writeMessage(s.bw, rc, bodyLines); err != nil {
		if errors.Is(err, errReadMessage) {
			s.log.Error("reading message; closing connection", "msg", n, "uid", m.uid, "err", err)
		}
		return fmt.Errorf("sending message %d: %w", n, err)
	}
	_, err = s.bw.WriteString(".\r\n")
	return err
}

func (s *session) cmdDELE(cmd command) error {
	if len(cmd.args) != 1 {
		return s.fail("syntax error: DELE msg")
	}
	n, m, msg := s.msgArg(cmd.args[0])
	if m == nil {
		return s.fail("%s", msg)
	}
	if ok, reason := readiness.Check(s.srv.Ready); !ok {
		s.log.Info("DELE refused: node not ready", "msg", n, "reason", reason)
		return s.tempFail("%s", reason)
	}
	m.deleted = true
	return s.ok("message %d deleted", n)
}

func (s *session) cmdRSET(cmd command) error {
	if len(cmd.args) != 0 {
		return s.fail("syntax error: RSET takes no arguments")
	}
	for i := range s.msgs {
		s.msgs[i].deleted = false
	}
	n, size := s.totals()
	return s.ok("maildrop has %d messages (%d octets)", n, size)
}
