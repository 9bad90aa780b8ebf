package main

// Timeouts on every listener and state (issue 10, item 5): raw sockets
// against the real binary, with the [timeouts] of the configuration set to
// a second or two so that the scenarios are quick.

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// wire is a client's side of a line protocol over a raw socket.
type wire struct {
	t    *testing.T
	name string
	c    net.Conn
	r    *bufio.Reader
}

func dialWire(t *testing.T, name, addr string, tlsConf *tls.Config) *wire {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if tlsConf != nil {
		tc := tls.Client(c, tlsConf)
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("%s: TLS: %v", name, err)
		}
		c = tc
	}
	t.Cleanup(func() { c.Close() })
	return &wire{t: t, name: name, c: c, r: bufio.NewReader(c)}
}

func (w *wire) send(line string) {
	w.t.Helper()
	w.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(w.c, line+"\r\n"); err != nil {
		w.t.Fatalf("%s: sending %q: %v", w.name, line, err)
	}
}

// line reads one line within wait.
func (w *wire) line(wait time.Duration) (string, error) {
	w.c.SetReadDeadline(time.Now().Add(wait))
	l, err := w.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// expect reads lines until one starts with prefix (skipping multi-line
// continuations and untagged data) and returns it.
func (w *wire) expect(prefix string) string {
	w.t.Helper()
	for {
		l, err := w.line(10 * time.Second)
		if err != nil {
			w.t.Fatalf("%s: waiting for %q: %v", w.name, prefix, err)
		}
		if strings.HasPrefix(l, prefix) {
			return l
		}
		if strings.HasPrefix(l, "* ") || (len(l) > 3 && l[3] == '-') || strings.HasPrefix(l, "+ ") {
			continue
		}
		w.t.Fatalf("%s: got %q, want %q", w.name, l, prefix)
	}
}

// goodbye waits, at most max, for the server's last line and the close
// that follows, and says how long that took.
func (w *wire) goodbye(max time.Duration) (last string, took time.Duration) {
	w.t.Helper()
	start := time.Now()
	for {
		l, err := w.line(max)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				w.t.Fatalf("%s: still open after %v (last line %q)", w.name, max, last)
			}
			return last, time.Since(start)
		}
		last = l
	}
}

// closedWithin reads from a socket that sends nothing until the server
// closes it, and says when.
func closedWithin(t *testing.T, name string, c net.Conn, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(max))
	n, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("%s: still open after %v", name, max)
	}
	if n != 0 {
		t.Errorf("%s: the server sent %d bytes to a client that never spoke", name, n)
	}
	return time.Since(start)
}

const fastTimeouts = `[timeouts]
login = "1s"
smtp = "3s"
imap = "3s"
pop3 = "3s"
data = "1s"
min_data_rate = 500
`

func TestSocketsThatNeverStartTLSOrLoginAreClosed(t *testing.T) {
	a := newInstance(t, "mail.a.test", fastTimeouts)
	a.start()
	addr := func(l string) string { return fmt.Sprintf("127.0.0.1:%d", a.ports[l]) }
	var wg sync.WaitGroup
	// Implicit TLS: not a byte sent, not even a ClientHello.
	for _, l := range []string{"imaps", "pop3s", "submissions", "https"} {
		c, err := net.Dial("tcp", addr(l))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			took := closedWithin(t, l, c, 10*time.Second)
			if took < 800*time.Millisecond {
				t.Errorf("%s: closed after %v, before the 1 s login timeout", l, took)
			}
			t.Logf("%s: a socket that never sent a ClientHello was closed after %v", l, took.Round(10*time.Millisecond))
		}()
	}
	// STARTTLS ports: greeted, then silent.
	for _, p := range []struct{ listener, greeting, bye string }{
		{"smtp", "220 ", "421 4.4.2"},
		{"submission", "220 ", "421 4.4.2"},
		{"imap", "* OK", "* BYE Autologout"},
		{"pop3", "+OK", "-ERR"},
	} {
		w := dialWire(t, p.listener, addr(p.listener), nil)
		w.expect(p.greeting)
		wg.Add(1)
		go func() {
			defer wg.Done()
			last, took := w.goodbye(10 * time.Second)
			if !strings.HasPrefix(last, p.bye) || (p.listener != "pop3" && !strings.Contains(strings.ToLower(last), "timeout") && !strings.Contains(last, "Autologout")) {
				t.Errorf("%s: last line %q, want %s… timeout", p.listener, last, p.bye)
			}
			if took < 800*time.Millisecond {
				t.Errorf("%s: closed after %v, before the 1 s login timeout", p.listener, took)
			}
			t.Logf("%s: idle before login, told %q and closed after %v", p.listener, last, took.Round(10*time.Millisecond))
		}()
	}
	wg.Wait()

	// The limit is per command, not for the whole login: a client that
	// keeps talking stays.
	w := dialWire(t, "imap", addr("imap"), nil)
	w.expect("* OK")
	start := time.Now()
	for i := 1; time.Since(start) < 2500*time.Millisecond; i++ {
		time.Sleep(600 * time.Millisecond)
		w.send(fmt.Sprintf("a%d NOOP", i))
		w.expect(fmt.Sprintf("a%d OK", i))
	}
	last, took := w.goodbye(10 * time.Second)
	if !strings.HasPrefix(last, "* BYE Autologout") {
		t.Fatalf("imap: after %v of commands, then silence: %q", time.Since(start), last)
	}
	t.Logf("imap: NOOP every 600 ms kept the connection for %v; then silence, BYE after %v",
		(time.Since(start) - took).Round(10*time.Millisecond), took.Round(10*time.Millisecond))
}

func TestALoggedInClientOutlivesTheLoginTimeoutUntilAutologout(t *testing.T) {
	a := newInstance(t, "mail.a.test", fastTimeouts)
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	addr := func(l string) string { return fmt.Sprintf("127.0.0.1:%d", a.ports[l]) }
	pw := password("alice@a.test")
	var wg sync.WaitGroup

	wg.Add(4)
	go func() { // Inbound SMTP: no login; MAIL FROM starts the business.
		defer wg.Done()
		w := dialWire(t, "smtp", addr("smtp"), nil)
		w.expect("220 ")
		w.send("EHLO client.b.test")
		w.expect("250 ")
		w.send("MAIL FROM:<sender@b.test>")
		w.expect("250 ")
		time.Sleep(1500 * time.Millisecond)
		w.send("RCPT TO:<alice@a.test>")
		w.expect("250 ")
		last, took := w.goodbye(10 * time.Second)
		if !strings.HasPrefix(last, "421 4.4.2") || took < 2500*time.Millisecond {
			t.Errorf("smtp: %q after %v, want 421 4.4.2 after the 3 s command timeout", last, took)
		}
		t.Logf("smtp: quiet 1.5 s after MAIL FROM, then RCPT accepted; %q after %v", last, took.Round(10*time.Millisecond))
	}()
	go func() { // IMAP: quiet 1.5 s, IDLE 1.5 s, then the 3 s autologout.
		defer wg.Done()
		w := dialWire(t, "imaps", addr("imaps"), tlsConf)
		w.expect("* OK")
		w.send(`a LOGIN alice@a.test "` + pw + `"`)
		w.expect("a OK")
		time.Sleep(1500 * time.Millisecond)
		w.send("b SELECT INBOX")
		w.expect("b OK")
		w.send("c IDLE")
		w.expect("+ ")
		time.Sleep(1500 * time.Millisecond)
		w.send("DONE")
		w.expect("c OK")
		last, took := w.goodbye(10 * time.Second)
		if !strings.HasPrefix(last, "* BYE Autologout") || took < 2500*time.Millisecond {
			t.Errorf("imaps: autologout %q after %v, want * BYE Autologout after 3 s", last, took)
		}
		t.Logf("imaps: logged in, quiet 1.5 s and IDLE 1.5 s past the 1 s login timeout; autologout %q after %v",
			last, took.Round(10*time.Millisecond))
	}()
	go func() { // SMTP submission: quiet 1.5 s after AUTH, then a message.
		defer wg.Done()
		w := dialWire(t, "submissions", addr("submissions"), tlsConf)
		w.expect("220 ")
		w.send("EHLO client.test")
		w.expect("250 ")
		w.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@a.test\x00"+pw)))
		w.expect("235 ")
		time.Sleep(1500 * time.Millisecond)
		w.send("MAIL FROM:<alice@a.test>")
		w.expect("250 ")
		w.send("QUIT")
		w.expect("221 ")
	}()
	go func() { // POP3: quiet 1.5 s after login, then STAT.
		defer wg.Done()
		w := dialWire(t, "pop3s", addr("pop3s"), tlsConf)
		w.expect("+OK")
		w.send("USER alice@a.test")
		w.expect("+OK")
		w.send("PASS " + pw)
		w.expect("+OK")
		time.Sleep(1500 * time.Millisecond)
		w.send("STAT")
		w.expect("+OK")
		last, took := w.goodbye(10 * time.Second)
		if last != "-ERR Disconnected for inactivity" || took < 2500*time.Millisecond {
			t.Errorf("pop3s: %q after %v, want the 3 s autologout", last, took)
		}
	}()
	wg.Wait()
}

func TestAMessageDrippedBelowTheMinimumRateIsCutAndNotStored(t *testing.T) {
	a := newInstance(t, "mail.a.test", fastTimeouts)
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	addr := func(l string) string { return fmt.Sprintf("127.0.0.1:%d", a.ports[l]) }
	header := "From: <sender@b.test>\r\nTo: <alice@a.test>\r\nSubject: %s\r\n\r\n"

	envelope := func(w *wire) {
		w.expect("220 ")
		w.send("EHLO client.b.test")
		w.expect("250 ")
		w.send("MAIL FROM:<sender@b.test>")
		w.expect("250 ")
		w.send("RCPT TO:<alice@a.test>")
		w.expect("250 ")
	}
	// drip sends 20 bytes every 200 ms (100 bytes/s, under the 500 of the
	// configuration) until the server hangs up.
	drip := func(w *wire, what string, min time.Duration) {
		t.Helper()
		stop := make(chan struct{})
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
					w.c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := fmt.Fprintf(w.c, "slow line %08d\r\n", i); err != nil {
						return
					}
				}
			}
		}()
		last, took := w.goodbye(10 * time.Second)
		close(stop)
		if took < min {
			t.Errorf("%s: cut after %v", what, took)
		}
		t.Logf("%s at 100 bytes/s: %q, closed after %v", what, last, took.Round(10*time.Millisecond))
		if what != "APPEND" && !strings.HasPrefix(last, "421 4.4.2") {
			t.Errorf("%s: last line %q, want 421 4.4.2", what, last)
		}
		if what == "APPEND" && !strings.HasPrefix(last, "* BYE Autologout") {
			t.Errorf("%s: last line %q, want * BYE Autologout", what, last)
		}
	}

	// DATA on the inbound port: 1 s of allowance, then 100 bytes/s only
	// pays for a fifth of the time (1 s / (1 - 100/500) = 1.25 s).
	w := dialWire(t, "smtp", addr("smtp"), nil)
	envelope(w)
	w.send("DATA")
	w.expect("354 ")
	fmt.Fprintf(w.c, header, "dripped")
	drip(w, "DATA", time.Second)

	// BDAT, over STARTTLS: the chunk is read at the same rate.
	w = dialWire(t, "smtp", addr("smtp"), nil)
	w.expect("220 ")
	w.send("EHLO client.b.test")
	w.expect("250 ")
	w.send("STARTTLS")
	w.expect("220 ")
	tc := tls.Client(w.c, tlsConf)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	w.c, w.r = tc, bufio.NewReader(tc)
	w.c.SetReadDeadline(time.Time{})
	w.send("EHLO client.b.test")
	w.expect("250 ")
	w.send("MAIL FROM:<sender@b.test>")
	w.expect("250 ")
	w.send("RCPT TO:<alice@a.test>")
	w.expect("250 ")
	w.send("BDAT 100000 LAST")
	drip(w, "BDAT", time.Second)

	// APPEND over IMAPS.
	w = dialWire(t, "imaps", addr("imaps"), tlsConf)
	w.expect("* OK")
	w.send(`a LOGIN alice@a.test "` + password("alice@a.test") + `"`)
	w.expect("a OK")
	w.send("b APPEND INBOX {100000}")
	w.expect("+ ")
	drip(w, "APPEND", time.Second)

	// A sender at full speed, and one that pauses for less than the
	// allowance, get their 250: the rate is an average.
	w = dialWire(t, "smtp", addr("smtp"), nil)
	envelope(w)
	w.send("DATA")
	w.expect("354 ")
	fmt.Fprintf(w.c, header, "fast")
	io.WriteString(w.c, strings.Repeat(strings.Repeat("x", 78)+"\r\n", 4000)) // 320 KB
	w.send(".")
	w.expect("250 ")
	w.send("MAIL FROM:<sender@b.test>")
	w.expect("250 ")
	w.send("RCPT TO:<alice@a.test>")
	w.expect("250 ")
	w.send("DATA")
	w.expect("354 ")
	fmt.Fprintf(w.c, header, "paused")
	for i := 0; i < 3; i++ {
		io.WriteString(w.c, strings.Repeat(strings.Repeat("y", 78)+"\r\n", 100))
		time.Sleep(700 * time.Millisecond)
	}
	w.send(".")
	w.expect("250 ")
	w.send("QUIT")
	w.expect("221 ")

	// Only those two were stored.
	r := dialWire(t, "imaps", addr("imaps"), tlsConf)
	r.expect("* OK")
	r.send(`a LOGIN alice@a.test "` + password("alice@a.test") + `"`)
	r.expect("a OK")
	r.send("b SELECT INBOX")
	r.expect("b OK")
	r.send("c SEARCH ALL")
	found := r.expect("* SEARCH")
	r.expect("c OK")
	r.send("d FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	var subjects []string
	for {
		l := r.expect("")
		if strings.HasPrefix(l, "Subject: ") {
			subjects = append(subjects, strings.TrimPrefix(l, "Subject: "))
		}
		if strings.HasPrefix(l, "d ") {
			break
		}
	}
	if found != "* SEARCH 1 2" || strings.Join(subjects, ",") != "fast,paused" {
		t.Fatalf("INBOX: %q, subjects %q; want the fast and the paused messages only", found, subjects)
	}
}

func TestIdleSocketsFromOneAddressDoNotShutOutAUserBehindIt(t *testing.T) {
	// A long login timeout, so that the idle sockets stay for the whole
	// scenario: here they give way because of the count, not the clock.
	a := newInstance(t, "mail.a.test", "[timeouts]\nlogin = \"30s\"\n", "max_unauthenticated_per_host = 3")
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	imaps := fmt.Sprintf("127.0.0.1:%d", a.ports["imaps"])

	// An attacker (or a broken client) behind the user's NAT opens 50
	// IMAPS sockets and never starts TLS.
	var idle []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", imaps)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// The server keeps 3 of them; each new one took the place of an
	// older one.
	gone := time.Now().Add(10 * time.Second)
	for i, c := range idle[:47] {
		closedWithin(t, fmt.Sprintf("idle socket %d", i+1), c, time.Until(gone))
	}
	for i, c := range idle[47:] {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("idle socket %d of the last 3: %v, want still open", 48+i, err)
		}
	}

	// The user connects and logs in, twice: each connection replaces an
	// idle socket, and once logged in is no longer counted with them.
	var sessions []*wire
	for i := 0; i < 2; i++ {
		w := dialWire(t, "alice", imaps, tlsConf)
		w.expect("* OK")
		w.send(`a LOGIN alice@a.test "` + password("alice@a.test") + `"`)
		w.expect("a OK")
		sessions = append(sessions, w)
	}
	// More idle sockets do not touch the logged-in sessions.
	for i := 0; i < 10; i++ {
		c, err := net.Dial("tcp", imaps)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	for i, w := range sessions {
		w.send("b NOOP")
		w.expect("b OK")
		t.Logf("alice's session %d: logged in behind 50 idle sockets, still served after 10 more", i+1)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
