package pop3d

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/authlimit"
)

// memBackend is an in-memory backend: one user table and one INBOX per
// user. It is a real (if small) backend, not a mock of the server.
type memBackend struct {
	mu        sync.Mutex
	passwords map[string]string
	boxes     map[string][]memMsg
	opened    int
	closed    int
	// loginHook, if set, runs at the start of Login.
	loginHook func(ctx context.Context) error
	// deleteErr, if set, makes Delete fail.
	deleteErr error
}

type memMsg struct {
	uid  string
	body string
}

// testMessages is the INBOX every test starts with: a CRLF message with
// lines that need dot-stuffing, a bare-LF message, and one without a final
// newline.
func testMessages() []memMsg {
	return []memMsg{
		{"u1", "From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n.hidden dot line\r\n..two dots\r\nend\r\n"},
		{"u2", "From: b@example.org\nSubject: two\n\nline1\nline2\n.\nline4\n"},
		{"u3", "Subject: three\r\n\r\nbody1\r\nbody2\r\nbody3"},
	}
}

func newMemBackend() *memBackend {
	return &memBackend{
		passwords: map[string]string{"alice": "secret pw", "bob": "hunter2"},
		boxes:     map[string][]memMsg{"alice": testMessages(), "bob": nil},
	}
}

func (b *memBackend) Login(ctx context.Context, user, pass string) (Maildrop, error) {
	b.mu.Lock()
	hook := b.loginHook
	b.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	pw, ok := b.passwords[user]
	if !ok || pw != pass {
		return nil, ErrAuthFailed
	}
	b.opened++
	return &memDrop{b: b, user: user}, nil
}

// setLoginHook installs a function run at the start of every Login.
func (b *memBackend) setLoginHook(f func(ctx context.Context) error) {
	b.mu.Lock()
	b.loginHook = f
	b.mu.Unlock()
}

// setDeleteErr makes Delete fail with err.
func (b *memBackend) setDeleteErr(err error) {
	b.mu.Lock()
	b.deleteErr = err
	b.mu.Unlock()
}

// balanced reports whether every maildrop opened was closed.
func (b *memBackend) balanced() (opened, closed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened, b.closed
}

// uids returns the UIDs left in a user's INBOX.
func (b *memBackend) uids(user string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var u []string
	for _, m := range b.boxes[user] {
		u = append(u, m.uid)
	}
	return u
}

type memDrop struct {
	b    *memBackend
	user string
}

// crlfSize is the size of a message as sent: bare LFs count as CRLF.
func crlfSize(s string) int64 {
	return int64(len(s) + strings.Count(s, "\n") - strings.Count(s, "\r\n"))
}

func (d *memDrop) Messages(ctx context.Context) ([]Message, error) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	var ms []Message
	for _, m := range d.b.boxes[d.user] {
		ms = append(ms, Message{UID: m.uid, Size: crlfSize(m.body)})
	}
	return ms, nil
}

func (d *memDrop) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	for _, m := range d.b.boxes[d.user] {
		if m.uid == uid {
			return io.NopCloser(strings.NewReader(m.body)), nil
		}
	}
	return nil, ErrNoSuchMessage
}

func (d *memDrop) Delete(ctx context.Context, uids []string) error {
	d.b.mu.Lock()
	defer d.b.mu.Unlock()
	if d.b.deleteErr != nil {
		return d.b.deleteErr
	}
	d.b.boxes[d.user] = slices.DeleteFunc(d.b.boxes[d.user], func(m memMsg) bool {
		return slices.Contains(uids, m.uid)
	})
	return nil
}

func (d *memDrop) Close() error {
	d.b.mu.Lock()
	d.b.closed++
	d.b.mu.Unlock()
	return nil
}

// testEnv is a running server with a plain (pop3) and an implicit TLS
// (pop3s) listener.
type testEnv struct {
	srv       *Server
	be        *memBackend
	pki       *apptest.PKI
	plainAddr string
	tlsAddr   string
	serveErrs chan error
	shutdown  bool
}

type envOption func(*Server)

func withLimiter(l *authlimit.Limiter) envOption { return func(s *Server) { s.Limiter = l } }
func withIdleTimeout(d time.Duration) envOption {
	return func(s *Server) { s.IdleTimeout = d }
}

func startEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	pki := apptest.NewPKI(t)
	be := newMemBackend()
	srv := &Server{
		Backend:   be,
		TLSConfig: pki.ServerConfig(),
		Limiter:   authlimit.New(nil, time.Millisecond, 2*time.Millisecond, time.Minute),
		Hostname:  "pop.test.example",
		Logger:    apptest.Logger(t),
	}
	for _, o := range opts {
		o(srv)
	}
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{
		srv: srv, be: be, pki: pki,
		plainAddr: plain.Addr().String(),
		tlsAddr:   tl.Addr().String(),
		serveErrs: make(chan error, 2),
	}
	go func() { env.serveErrs <- srv.Serve(plain, false) }()
	go func() { env.serveErrs <- srv.Serve(tls.NewListener(tl, srv.TLSConfig), true) }()
	t.Cleanup(func() {
		if env.shutdown {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-env.serveErrs; err != nil {
				t.Errorf("Serve returned %v after Shutdown, want nil", err)
			}
		}
	})
	return env
}

// waitSessionsGone waits until the server has no session left, so that
// whatever a dropped connection might have done has been done.
func (e *testEnv) waitSessionsGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		e.srv.mu.Lock()
		n := len(e.srv.sessions)
		e.srv.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("sessions still open after 5s")
}

// rawClient speaks POP3 by hand over a net.Conn.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialPlain(t *testing.T, e *testEnv) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.plainAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc := newRawClient(t, c)
	rc.expect("+OK")
	return rc
}

func dialTLS(t *testing.T, e *testEnv) *rawClient {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: e.pki.ClientConfig("127.0.0.1")}
	c, err := d.Dial("tcp", e.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	rc := newRawClient(t, c)
	rc.expect("+OK")
	return rc
}

func newRawClient(t *testing.T, c net.Conn) *rawClient {
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *rawClient) send(line string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// line reads one response line without its CRLF.
func (c *rawClient) line() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading response: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("response %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// expect reads a line and checks its prefix.
func (c *rawClient) expect(prefix string) string {
	c.t.Helper()
	l := c.line()
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("got %q, want prefix %q", l, prefix)
	}
	return l
}

// cmd sends a command and checks the first response line's prefix.
func (c *rawClient) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line)
	return c.expect(prefix)
}

// multi reads the body of a multi-line response, dot-unstuffed.
func (c *rawClient) multi() []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line()
		if l == "." {
			return lines
		}
		lines = append(lines, strings.TrimPrefix(l, "."))
	}
}

// expectClosed checks the server closes the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.ReadString('\n')
		c.t.Fatalf("connection still open, got %q", string(b)+rest)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("want EOF, got %v", err)
	}
}

// login authenticates with USER/PASS on an already protected connection.
func (c *rawClient) login(user, pass string) {
	c.t.Helper()
	c.cmd("USER "+user, "+OK")
	c.cmd("PASS "+pass, "+OK")
}
