package pop3d

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/authlimit"
)

func TestPlainPortRequiresSTLSBeforeAuth(t *testing.T) {
	e := startEnv(t)
	c := dialPlain(t, e)

	c.cmd("CAPA", "+OK")
	caps := c.multi()
	if !slices.Contains(caps, "STLS") {
		t.Errorf("CAPA before TLS = %q, want STLS", caps)
	}
	for _, bad := range []string{"USER", "SASL PLAIN"} {
		if slices.Contains(caps, bad) {
			t.Errorf("CAPA before TLS advertises %q: %q", bad, caps)
		}
	}
	c.cmd("USER alice", "-ERR [AUTH]")
	c.cmd("PASS secret pw", "-ERR [AUTH]")
	c.cmd("AUTH PLAIN "+plainResp("", "alice", "secret pw"), "-ERR [AUTH]")
	c.cmd("STAT", "-ERR")

	c.cmd("STLS", "+OK")
	tc := tls.Client(c.conn, e.pki.ClientConfig("127.0.0.1"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STLS handshake: %v", err)
	}
	c = newRawClient(t, tc)
	c.cmd("CAPA", "+OK")
	caps = c.multi()
	if slices.Contains(caps, "STLS") || !slices.Contains(caps, "USER") || !slices.Contains(caps, "SASL PLAIN") {
		t.Errorf("CAPA after STLS = %q, want USER and SASL PLAIN, no STLS", caps)
	}
	c.cmd("STLS", "-ERR")
	c.login("alice", "secret pw")
	if got := c.cmd("STAT", "+OK"); got != fmt.Sprintf("+OK 3 %d", mailboxSize()) {
		t.Errorf("STAT = %q", got)
	}
	c.cmd("QUIT", "+OK")
	c.expectClosed()
}

func mailboxSize() int64 {
	var n int64
	for _, m := range testMessages() {
		n += crlfSize(m.body)
	}
	return n
}

func TestSTLSRefusesPipelinedCommands(t *testing.T) {
	e := startEnv(t)
	c := dialPlain(t, e)
	// A man in the middle appends a command after STLS; it must not be
	// executed inside the TLS session.
	c.send("STLS\r\nUSER mallory")
	c.expect("-ERR")
	c.expectClosed()
}

func TestCapaOnImplicitTLS(t *testing.T) {
	e := startEnv(t)
	c := dialTLS(t, e)
	c.cmd("CAPA", "+OK")
	caps := c.multi()
	for _, want := range []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN", "IMPLEMENTATION Sigillo", "EXPIRE NEVER", "LOGIN-DELAY 0"} {
		if !slices.Contains(caps, want) {
			t.Errorf("CAPA lacks %q: %q", want, caps)
		}
	}
	if slices.Contains(caps, "STLS") {
		t.Errorf("CAPA on pop3s advertises STLS: %q", caps)
	}
}

func TestGarbageAndOverlongLines(t *testing.T) {
	e := startEnv(t)
	c := dialPlain(t, e)
	c.cmd("HELO there", "-ERR unknown command")
	c.cmd("XYZZY", "-ERR unknown command")
	c.cmd("\x01\x02\x7f", "-ERR")
	c.cmd("", "-ERR")
	c.cmd("12345", "-ERR unknown command")
	c.cmd("RETR 1", "-ERR")
	c.cmd("USER "+strings.Repeat("x", 2000), "-ERR line too long")
	// Still serving: a good command resets the count of bad ones.
	c.cmd("CAPA", "+OK")
	c.multi()

	// A second connection works meanwhile.
	c2 := dialTLS(t, e)
	c2.login("alice", "secret pw")
	c2.cmd("NOOP", "+OK")
	c2.cmd("QUIT", "+OK")

	// Ten bad commands in a row end the session.
	for range 9 {
		c.cmd("GARBAGE", "-ERR")
	}
	c.cmd("GARBAGE", "-ERR too many bad commands")
	c.expectClosed()
}

func TestEndlessLineClosesConnection(t *testing.T) {
	e := startEnv(t)
	c := dialPlain(t, e)
	go func() {
		// The server may close before we are done writing.
		c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.conn.Write([]byte(strings.Repeat("A", 200<<10)))
	}()
	c.expect("-ERR line too long")
	c.expectClosed()
}

func plainResp(authz, authc, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + authc + "\x00" + pass))
}

func TestAuthPlain(t *testing.T) {
	e := startEnv(t)

	t.Run("initial response", func(t *testing.T) {
		c := dialTLS(t, e)
		c.cmd("AUTH PLAIN "+plainResp("", "alice", "secret pw"), "+OK")
		c.cmd("STAT", "+OK 3 ")
		c.cmd("QUIT", "+OK")
	})
	t.Run("continuation", func(t *testing.T) {
		c := dialTLS(t, e)
		if got := c.cmd("auth plain", "+ "); got != "+ " {
			t.Errorf("continuation = %q, want %q", got, "+ ")
		}
		c.cmd(plainResp("alice", "alice", "secret pw"), "+OK")
		c.cmd("STAT", "+OK 3 ")
	})
	t.Run("cancel and malformed", func(t *testing.T) {
		c := dialTLS(t, e)
		c.cmd("AUTH PLAIN", "+ ")
		c.cmd("*", "-ERR")
		c.cmd("AUTH PLAIN =", "-ERR")
		c.cmd("AUTH PLAIN !!notbase64", "-ERR")
		c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("no nuls")), "-ERR")
		c.cmd("AUTH PLAIN "+plainResp("bob", "alice", "secret pw"), "-ERR")
		c.cmd("AUTH CRAM-MD5", "-ERR")
		c.cmd("AUTH PLAIN "+plainResp("", "alice", "wrong"), "-ERR [AUTH]")
		c.send("AUTH")
		c.expect("+OK")
		if got := c.multi(); !slices.Equal(got, []string{"PLAIN"}) {
			t.Errorf("AUTH list = %q", got)
		}
		// The session is still usable after all that.
		c.cmd("AUTH PLAIN", "+ ")
		c.cmd(plainResp("", "alice", "secret pw"), "+OK")
		c.cmd("AUTH PLAIN", "-ERR")
	})
}

func TestWrongPasswordIsSlowedDown(t *testing.T) {
	const base = 300 * time.Millisecond
	lim := authlimit.New(nil, base, 10*base, time.Minute)
	e := startEnv(t, withLimiter(lim))
	c := dialTLS(t, e)
	host := authlimit.Host(c.conn.LocalAddr())

	c.cmd("USER alice", "+OK")
	start := time.Now()
	c.cmd("PASS guess1", "-ERR [AUTH]")
	if d := time.Since(start); d < base {
		t.Errorf("first failure answered after %v, want at least %v", d, base)
	}
	c.cmd("USER alice", "+OK")
	start = time.Now()
	c.cmd("PASS guess2", "-ERR [AUTH]")
	if d := time.Since(start); d < 2*base {
		t.Errorf("second failure answered after %v, want at least %v", d, 2*base)
	}
	if n := lim.Failures(host); n != 2 {
		t.Errorf("limiter counts %d failures for %s, want 2", n, host)
	}
	start = time.Now()
	c.cmd("AUTH PLAIN "+plainResp("", "alice", "secret pw"), "+OK")
	if d := time.Since(start); d >= base {
		t.Errorf("successful login took %v; it should not be delayed", d)
	}
	if n := lim.Failures(host); n != 0 {
		t.Errorf("limiter still counts %d failures after success", n)
	}
}

func TestTooManyAuthFailuresCloseSession(t *testing.T) {
	e := startEnv(t)
	c := dialTLS(t, e)
	for i := range maxAuthFailures {
		c.cmd("USER alice", "+OK")
		got := c.cmd("PASS nope", "-ERR [AUTH]")
		if i == maxAuthFailures-1 && !strings.Contains(got, "closing") {
			t.Errorf("last failure = %q, want it to announce closing", got)
		}
	}
	c.expectClosed()
}

func TestTransactionCommands(t *testing.T) {
	e := startEnv(t)
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	msgs := testMessages()

	c.cmd("LIST", "+OK 3 messages")
	want := []string{
		fmt.Sprintf("1 %d", crlfSize(msgs[0].body)),
		fmt.Sprintf("2 %d", crlfSize(msgs[1].body)),
		fmt.Sprintf("3 %d", crlfSize(msgs[2].body)),
	}
	if got := c.multi(); !slices.Equal(got, want) {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	c.cmd("LIST 2", "+OK "+want[1])
	c.cmd("UIDL", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"1 u1", "2 u2", "3 u3"}) {
		t.Errorf("UIDL = %q", got)
	}
	c.cmd("UIDL 3", "+OK 3 u3")
	c.cmd("LIST 4", "-ERR")
	c.cmd("LIST 0", "-ERR")
	c.cmd("LIST -1", "-ERR")
	c.cmd("LIST x", "-ERR")
	c.cmd("RETR", "-ERR")
	c.cmd("TOP 1", "-ERR")
	c.cmd("TOP 1 -1", "-ERR")

	// RETR of the bare-LF message: CRLF out, dot-stuffed, and the
	// octet count matches what was sent.
	c.send("RETR 2")
	c.expect(fmt.Sprintf("+OK %d octets", crlfSize(msgs[1].body)))
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw := make([]byte, crlfSize(msgs[1].body)+1+3) // one stuffed dot, ".\r\n"
	if _, err := io.ReadFull(c.r, raw); err != nil {
		t.Fatal(err)
	}
	wantRaw := "From: b@example.org\r\nSubject: two\r\n\r\nline1\r\nline2\r\n..\r\nline4\r\n.\r\n"
	if string(raw) != wantRaw {
		t.Errorf("RETR 2 sent %q, want %q", raw, wantRaw)
	}

	c.cmd("RETR 3", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"Subject: three", "", "body1", "body2", "body3"}) {
		t.Errorf("RETR 3 = %q", got)
	}
	c.cmd("TOP 3 1", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"Subject: three", "", "body1"}) {
		t.Errorf("TOP 3 1 = %q", got)
	}
	c.cmd("TOP 1 0", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"From: a@example.org", "Subject: one", ""}) {
		t.Errorf("TOP 1 0 = %q", got)
	}
	c.cmd("TOP 1 99999999999999999999999", "+OK")
	if got := c.multi(); len(got) != 7 {
		t.Errorf("TOP 1 huge = %q", got)
	}

	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 1", "-ERR")
	c.cmd("RETR 1", "-ERR")
	c.cmd("LIST 1", "-ERR")
	c.cmd("STAT", fmt.Sprintf("+OK 2 %d", crlfSize(msgs[1].body)+crlfSize(msgs[2].body)))
	c.cmd("RSET", "+OK")
	c.cmd("STAT", fmt.Sprintf("+OK 3 %d", mailboxSize()))
	c.cmd("USER bob", "-ERR")
	c.cmd("NOOP", "+OK")
	c.cmd("QUIT", "+OK")
	c.expectClosed()
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); len(got) != 3 {
		t.Errorf("after RSET and QUIT the INBOX holds %q, want all 3", got)
	}
}

func TestPipelining(t *testing.T) {
	e := startEnv(t)
	c := dialTLS(t, e)
	c.send("USER alice\r\nPASS secret pw\r\nSTAT\r\nUIDL 1\r\nNOOP")
	c.expect("+OK")
	c.expect("+OK logged in")
	c.expect("+OK 3 ")
	c.expect("+OK 1 u1")
	c.expect("+OK")
}

func TestDeletionsOnlyAtQuit(t *testing.T) {
	e := startEnv(t)

	// Dropped connection: nothing is deleted.
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 3", "+OK")
	c.conn.Close()
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); !slices.Equal(got, []string{"u1", "u2", "u3"}) {
		t.Fatalf("after a dropped connection the INBOX holds %q, want all 3", got)
	}

	// QUIT: the marked messages go.
	c = dialTLS(t, e)
	c.login("alice", "secret pw")
	c.cmd("DELE 1", "+OK")
	c.cmd("DELE 3", "+OK")
	if got := e.be.uids("alice"); len(got) != 3 {
		t.Fatalf("DELE removed messages before QUIT: %q", got)
	}
	c.cmd("QUIT", "+OK")
	c.expectClosed()
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); !slices.Equal(got, []string{"u2"}) {
		t.Fatalf("after QUIT the INBOX holds %q, want [u2]", got)
	}
	if opened, closed := e.be.balanced(); opened != closed {
		t.Errorf("maildrops opened %d, closed %d", opened, closed)
	}
}

func TestDeleteFailureAtQuit(t *testing.T) {
	e := startEnv(t)
	e.be.setDeleteErr(errors.New("disk on fire"))
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	c.cmd("DELE 2", "+OK")
	c.cmd("QUIT", "-ERR [SYS/TEMP] some deleted messages not removed")
	c.expectClosed()
}

func TestBackendTemporaryFailure(t *testing.T) {
	e := startEnv(t)
	e.be.setLoginHook(func(context.Context) error { return errors.New("database down") })
	c := dialTLS(t, e)
	c.cmd("USER alice", "+OK")
	c.cmd("PASS secret pw", "-ERR [SYS/TEMP]")
}

func TestMessageRemovedBySomeoneElse(t *testing.T) {
	e := startEnv(t)
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	other := dialTLS(t, e)
	other.login("alice", "secret pw")
	other.cmd("DELE 2", "+OK")
	other.cmd("QUIT", "+OK")
	c.cmd("RETR 2", "-ERR")
	c.cmd("RETR 1", "+OK")
	c.multi()
}

func TestIdleTimeout(t *testing.T) {
	e := startEnv(t, withIdleTimeout(200*time.Millisecond))
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	c.cmd("DELE 1", "+OK")
	start := time.Now()
	c.expect("-ERR Disconnected for inactivity")
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	c.expectClosed()
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); len(got) != 3 {
		t.Errorf("timeout deleted messages: %q", got)
	}
}

func TestImplicitTLSListenerMustYieldTLS(t *testing.T) {
	srv := &Server{Backend: newMemBackend(), Logger: apptest.Logger(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, true) }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newRawClient(t, conn)
	c.expectClosed()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
}

func TestShutdown(t *testing.T) {
	t.Run("idle sessions are told and closed", func(t *testing.T) {
		e := startEnv(t)
		e.shutdown = true
		c := dialTLS(t, e)
		c.login("alice", "secret pw")
		c.cmd("DELE 1", "+OK")
		p := dialPlain(t, e)
		// A client that connects to pop3s and never starts TLS.
		silent, err := net.Dial("tcp", e.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Shutdown took %v with only idle sessions", d)
		}
		c.expect("-ERR [SYS/TEMP] Server shutting down")
		c.expectClosed()
		p.expect("-ERR")
		p.expectClosed()
		for range 2 {
			if err := <-e.serveErrs; err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		}
		if got := e.be.uids("alice"); len(got) != 3 {
			t.Errorf("shutdown deleted messages: %q", got)
		}
		if _, err := net.DialTimeout("tcp", e.tlsAddr, time.Second); err == nil {
			t.Error("listener still accepting after Shutdown")
		}
	})

	t.Run("busy session finishes its command", func(t *testing.T) {
		e := startEnv(t)
		e.shutdown = true
		entered, release := make(chan struct{}), make(chan struct{})
		e.be.setLoginHook(func(context.Context) error {
			close(entered)
			<-release
			return nil
		})
		c := dialTLS(t, e)
		c.cmd("USER alice", "+OK")
		c.send("PASS secret pw")
		<-entered
		shut := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			shut <- e.srv.Shutdown(ctx)
		}()
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v while a command was running", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(release)
		c.expect("+OK logged in")
		c.expect("-ERR [SYS/TEMP] Server shutting down")
		c.expectClosed()
		if err := <-shut; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		for range 2 {
			<-e.serveErrs
		}
	})

	t.Run("deadline force-closes", func(t *testing.T) {
		e := startEnv(t)
		e.shutdown = true
		entered := make(chan struct{})
		cancelled := make(chan struct{})
		e.be.setLoginHook(func(ctx context.Context) error {
			close(entered)
			<-ctx.Done()
			close(cancelled)
			return ctx.Err()
		})
		c := dialTLS(t, e)
		c.cmd("USER alice", "+OK")
		c.send("PASS secret pw")
		<-entered
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want deadline exceeded", err)
		}
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("backend call not cancelled by forced shutdown")
		}
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c.r) // until the server closes
		e.waitSessionsGone(t)
		for range 2 {
			<-e.serveErrs
		}
	})

	t.Run("serve after shutdown", func(t *testing.T) {
		srv := &Server{Backend: newMemBackend(), Logger: apptest.Logger(t)}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(ln, false); err != nil {
			t.Fatalf("Serve after Shutdown = %v, want nil", err)
		}
	})
}
