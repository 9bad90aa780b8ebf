package smtpd

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// msg is a message from alice, as she submits it.
func msg(subject string) []byte { return msgFrom("alice@example.test", subject) }

// msgFrom is a complete message (Date: and Message-ID: included) from
// someone to bob.
func msgFrom(from, subject string) []byte {
	return []byte("From: " + from + "\r\nTo: bob@example.test\r\nSubject: " + subject +
		"\r\nDate: Tue, 4 Mar 2025 06:00:00 +0100\r\nMessage-ID: <" + subject + "@client.test>\r\n\r\nHello Bob.\r\n.leading dot survives\r\n")
}

// checkHeaders checks the fields smtpd prepends and returns the rest.
func checkHeaders(t *testing.T, got []byte, returnPath, proto, tlsPart, forRcpt string) []byte {
	t.Helper()
	s := string(got)
	if returnPath != "" {
		want := "Return-Path: <" + returnPath + ">\r\n"
		if returnPath == "<>" {
			want = "Return-Path: <>\r\n"
		}
		if !strings.HasPrefix(s, want) {
			t.Fatalf("stored message does not start with %q:\n%s", want, s)
		}
		s = s[len(want):]
	}
	re := `^Received: from client\.test \(unknown \[127\.0\.0\.1\]\)\r\n`
	if tlsPart != "" {
		re += `\t\(using ` + tlsPart + ` with cipher TLS_[A-Z0-9_]+( \(\d+/\d+ bits\))?\)\r\n`
	}
	re += `\tby mx\.example\.test \(Sigillo\) with ` + proto + ` id [A-Z2-7]{16}`
	if forRcpt != "" {
		re += `\r\n\tfor <` + regexp.QuoteMeta(forRcpt) + `>`
	}
	re += `; Tue, 04 Mar 2025 05:06:07 \+0000\r\n`
	loc := regexp.MustCompile(re).FindStringIndex(s)
	if loc == nil {
		t.Fatalf("Received: header does not match %s:\n%s", re, s)
	}
	return []byte(s[loc[1]:])
}

func TestSMTPSWithAuthPlainAndLoginDeliversLocally(t *testing.T) {
	e := newEnv(t, 0)
	p := port(e.subs)
	m1, m2 := e.file(msg("plain")), e.file(msg("login"))
	out := e.py(
		s("connect", "smtps", p), s("ehlo"),
		s("login", "Alice@Example.test", alicePass, "PLAIN"),
		s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("data", m1),
		s("quit"),
	)
	if len(out) != 7 || !strings.Contains(out[1].Auth, "PLAIN") || !strings.Contains(out[1].Auth, "LOGIN") || out[1].has("starttls") {
		t.Fatalf("EHLO on 465: %+v", out)
	}
	if out[2].Code != 235 || out[3].Code != 250 || out[4].Code != 250 || out[5].Code != 250 {
		t.Fatalf("PLAIN session: %+v", out)
	}
	if !strings.Contains(out[5].Msg, "queued as") {
		t.Errorf("250 after DATA does not name the queue ID: %q", out[5].Msg)
	}
	out = e.py(
		s("connect", "smtps", p), s("ehlo"),
		s("login", "alice@example.test", alicePass, "LOGIN"),
		s("sendmail", "ALICE@example.test", []string{"bob@example.test"}, m2),
		s("quit"),
	)
	if out[2].Code != 235 || !out[3].OK {
		t.Fatalf("LOGIN session: %+v", out)
	}
	got := e.inbox("bob@example.test")
	if len(got) != 2 {
		t.Fatalf("bob has %d messages, want 2", len(got))
	}
	rest := checkHeaders(t, got[0], "alice@example.test", "ESMTPSA", `TLSv1\.[23]`, "bob@example.test")
	if !bytes.Equal(rest, msg("plain")) {
		t.Fatalf("body changed:\n%q\nwant\n%q", rest, msg("plain"))
	}
	rest = checkHeaders(t, got[1], "ALICE@example.test", "ESMTPSA", `TLSv1\.[23]`, "bob@example.test")
	if !bytes.Equal(rest, msg("login")) {
		t.Fatalf("body changed:\n%q", rest)
	}
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("local mail queued: %+v", q)
	}
}

func TestSubmissionNeedsSTARTTLSThenAuth(t *testing.T) {
	e := newEnv(t, 0)
	p := port(e.sub)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00" + alicePass))
	m := e.file(msg("submission"))
	out := e.py(
		s("connect", "plain", p), s("ehlo"), // 0 1
		s("cmd", "AUTH PLAIN "+ir),      // 2: refused before TLS
		s("mail", "alice@example.test"), // 3: 530
		s("starttls"), s("ehlo"),        // 4 5
		s("login", "alice@example.test", "wrong password", "PLAIN"), // 6
		s("login", "nobody@example.test", alicePass, "LOGIN"),       // 7
		s("mail", "alice@example.test"),                             // 8: still 530
		s("login", "alice@example.test", alicePass, "LOGIN"),        // 9
		s("mail", "mallory@example.test"),                           // 10: 553
		s("mail", "alice@example.test"),                             // 11
		s("rcpt", "bob@example.test"),                               // 12
		s("rcpt", "carol@remote.test"),                              // 13: relayed for an authenticated user
		s("rcpt", "Bob@Example.test"),                               // 14: duplicate
		s("data", m),                                                // 15
		s("quit"),
	)
	if len(out) != 17 {
		t.Fatalf("session cut short: %+v", out)
	}
	if out[1].Auth != "" || !out[1].has("starttls") {
		t.Errorf("587 before TLS must offer STARTTLS and not AUTH: %+v", out[1])
	}
	if out[2].Code < 500 {
		t.Errorf("AUTH before STARTTLS: %+v", out[2])
	}
	if out[3].Code != 530 || !strings.HasPrefix(out[3].Msg, "5.7.0") {
		t.Errorf("MAIL before AUTH: %+v", out[3])
	}
	if out[4].Code != 220 || !strings.Contains(out[5].Auth, "PLAIN") || !strings.Contains(out[5].Auth, "LOGIN") {
		t.Errorf("after STARTTLS: %+v %+v", out[4], out[5])
	}
	for _, i := range []int{6, 7} {
		if out[i].Exc != "SMTPAuthenticationError" || out[i].Code != 535 {
			t.Errorf("bad credentials %d: %+v", i, out[i])
		}
	}
	if out[8].Code != 530 {
		t.Errorf("MAIL after failed AUTH: %+v", out[8])
	}
	if out[9].Code != 235 {
		t.Fatalf("AUTH LOGIN: %+v", out[9])
	}
	if out[10].Code != 553 || !strings.HasPrefix(out[10].Msg, "5.7.1") {
		t.Errorf("foreign sender: %+v", out[10])
	}
	for _, i := range []int{11, 12, 13, 14, 15} {
		if out[i].Code != 250 {
			t.Errorf("step %d: %+v", i, out[i])
		}
	}
	got := e.inbox("bob@example.test")
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	// Two recipients: no "for".
	rest := checkHeaders(t, got[0], "alice@example.test", "ESMTPSA", `TLSv1\.[23]`, "")
	if !bytes.Equal(rest, msg("submission")) {
		t.Fatalf("body changed: %q", rest)
	}
	q := e.queue()
	if len(q) != 1 || q[0].Sender != "alice@example.test" || len(q[0].Recipients) != 1 || q[0].Recipients[0] != "carol@remote.test" {
		t.Fatalf("queue: %+v", q)
	}
	if q[0].SHA256 == "" || e.enqueued.Load() != 1 {
		t.Fatalf("queue item %+v, Enqueued called %d times", q[0], e.enqueued.Load())
	}
	// The local copy and the queued one are the same stored content.
	qb, err := e.store.Content(context.Background(), q[0].SHA256)
	if err != nil || !bytes.Equal(qb, got[0]) {
		t.Fatalf("queued content differs from the local copy: %v", err)
	}
}

func TestInboundAcceptsHostedDomainsOnly(t *testing.T) {
	e := newEnv(t, 0)
	p := port(e.inbound)
	ir := base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00" + alicePass))
	m, bounce := e.file(msgFrom("someone@remote.test", "inbound")), e.file([]byte("Subject: bounce\r\n\r\nA report.\r\n"))
	m2 := e.file(msgFrom("someone@remote.test", "inbound-tls")) // the same message again would be a retry
	out := e.py(
		s("connect", "plain", p), s("ehlo"), // 0 1
		s("mail", "someone@remote.test"), // 2
		s("rcpt", "carol@remote.test"),   // 3: relay denied
		s("rcpt", "nobody@example.test"), // 4: unknown user
		s("rcpt", "full@example.test"),   // 5: over quota
		s("rcpt", "bob@example.test"),    // 6
		s("data", m),                     // 7
		s("mail", ""),                    // 8: null sender
		s("rcpt", "bob@example.test"),    // 9
		s("data", bounce),                // 10
		s("starttls"), s("ehlo"),         // 11 12
		s("cmd", "AUTH PLAIN "+ir),       // 13: no AUTH on port 25, even with TLS
		s("mail", "someone@remote.test"), // 14
		s("rcpt", "bob@example.test"),    // 15
		s("data", m2),                    // 16
		s("quit"),
	)
	if len(out) != 18 {
		t.Fatalf("session cut short: %+v", out)
	}
	if out[1].Auth != "" || !out[1].has("starttls") || !out[1].has("size") {
		t.Errorf("EHLO on 25: %+v", out[1])
	}
	if out[3].Code != 554 || !strings.HasPrefix(out[3].Msg, "5.7.1") {
		t.Errorf("relay: %+v", out[3])
	}
	if out[4].Code != 550 || !strings.HasPrefix(out[4].Msg, "5.1.1") {
		t.Errorf("unknown user: %+v", out[4])
	}
	if out[5].Code != 552 || !strings.HasPrefix(out[5].Msg, "5.2.2") {
		t.Errorf("over quota: %+v", out[5])
	}
	for _, i := range []int{2, 6, 7, 8, 9, 10, 14, 15, 16} {
		if out[i].Code != 250 {
			t.Errorf("step %d: %+v", i, out[i])
		}
	}
	if out[12].Auth != "" || out[13].Code < 500 {
		t.Errorf("AUTH on port 25 after TLS: %+v %+v", out[12], out[13])
	}
	got := e.inbox("bob@example.test")
	if len(got) != 3 {
		t.Fatalf("bob has %d messages", len(got))
	}
	if rest := checkHeaders(t, got[0], "someone@remote.test", "ESMTP", "", "bob@example.test"); !bytes.Equal(rest, msgFrom("someone@remote.test", "inbound")) {
		t.Fatalf("body changed: %q", rest)
	}
	checkHeaders(t, got[1], "<>", "ESMTP", "", "bob@example.test")
	checkHeaders(t, got[2], "someone@remote.test", "ESMTPS", `TLSv1\.[23]`, "bob@example.test")
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("inbound mail queued: %+v", q)
	}
}

func TestOversizeAndTooManyRecipients(t *testing.T) {
	e := newEnv(t, 64<<10)
	p := port(e.inbound)
	huge := e.file(append(msgFrom("someone@remote.test", "huge"), bytes.Repeat([]byte(strings.Repeat("x", 70)+"\r\n"), 1200)...)) // ~86 KB
	small := e.file(msgFrom("someone@remote.test", "small"))
	steps := [][]any{
		s("connect", "plain", p), s("ehlo"),
		s("sendmail", "someone@remote.test", []string{"bob@example.test"}, huge),         // 2: SIZE=… refused at MAIL
		s("mail", "someone@remote.test"), s("rcpt", "bob@example.test"), s("data", huge), // 3 4 5: refused at end of data
		s("mail", "someone@remote.test"), // 6
	}
	for i := 0; i < MaxRecipients+1; i++ { // 7 … 107
		steps = append(steps, s("rcpt", "bob@example.test"))
	}
	steps = append(steps, s("data", small), s("quit")) // 108 109
	out := e.py(steps...)
	if len(out) != 110 {
		t.Fatalf("session cut short: %d steps", len(out))
	}
	if !out[1].has("size") || out[2].Exc != "SMTPSenderRefused" || out[2].Code != 552 {
		t.Errorf("oversize with SIZE: %+v %+v", out[1], out[2])
	}
	if out[5].Code != 552 || !strings.HasPrefix(out[5].Msg, "5.3.4") {
		t.Errorf("oversize without SIZE: %+v", out[5])
	}
	for i := 7; i < 7+MaxRecipients; i++ {
		if out[i].Code != 250 {
			t.Fatalf("recipient %d: %+v", i-6, out[i])
		}
	}
	if last := out[7+MaxRecipients]; last.Code != 452 || !strings.HasPrefix(last.Msg, "4.5.3") {
		t.Errorf("recipient %d: %+v", MaxRecipients+1, last)
	}
	if out[108].Code != 250 {
		t.Errorf("data after too many recipients: %+v", out[108])
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Errorf("bob got %d messages, want 1 (the small one, once)", n)
	}
}

func TestGarbageAndLongLinesDoNotStopTheServer(t *testing.T) {
	e := newEnv(t, 0)
	bad := dialRaw(t, e.inbound)
	idle := dialRaw(t, e.inbound) // another session, open meanwhile
	bad.cmd("EHLO client.test", "250")
	bad.cmd("XYZZY plugh", "50")
	bad.cmd("\x00\xff\xfe garbage \x01", "50")
	bad.cmd("MAIL FROM:<<<>>>", "501")
	bad.send(strings.Repeat("A", MaxLineLength+100))
	bad.expect("500")
	if !bad.closed() {
		t.Errorf("connection still open after an overlong line")
	}
	idle.cmd("EHLO other.test", "250")
	idle.cmd("NOOP", "250")
	idle.cmd("QUIT", "221")

	// Overlong line inside DATA.
	d := dialRaw(t, e.inbound)
	d.cmd("EHLO client.test", "250")
	d.cmd("MAIL FROM:<a@remote.test>", "250")
	d.cmd("RCPT TO:<bob@example.test>", "250")
	d.cmd("DATA", "354")
	d.send("Subject: long\r\n\r\n" + strings.Repeat("B", MaxLineLength+100))
	d.expect("500")

	// And the server still delivers.
	m := e.file(msgFrom("x@remote.test", "after garbage"))
	out := e.py(s("connect", "plain", port(e.inbound)), s("ehlo"), s("sendmail", "x@remote.test", []string{"bob@example.test"}, m), s("quit"))
	if len(out) != 4 || !out[2].OK {
		t.Fatalf("after garbage: %+v", out)
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob got %d messages, want 1", n)
	}
}

func TestMalformedMIMEIsStoredByteForByte(t *testing.T) {
	e := newEnv(t, 0)
	body := []byte("From: =?bogus?Q?=ZZ?= <someone@remote.test>\r\n" +
		"To: bob@example.test\r\n" +
		"Subject: caf\xe9 \xff\xfe not utf-8\r\n" +
		"Header without colon\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"never-closed\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		"--wrong-boundary\r\n" +
		"Content-Type: text/plain; charset=\"\r\n" +
		"\r\n" +
		"!!! not base64 !!!\r\n" +
		".\tdot-tab line\r\n" +
		"..two dots\r\n" +
		"bare\nline feed and bare\rcarriage return\r\n" +
		"--never-closed\r\n" +
		"trailing whitespace   \t\r\n" +
		"\r\n" +
		"\r\n")
	out := e.py(s("connect", "plain", port(e.inbound)), s("ehlo"), s("starttls"), s("ehlo"),
		s("mail", "someone@remote.test"), s("rcpt", "bob@example.test"), s("data", e.file(body)), s("quit"))
	if len(out) != 8 || out[6].Code != 250 {
		t.Fatalf("malformed message: %+v", out)
	}
	got := e.inbox("bob@example.test")
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	rest := checkHeaders(t, got[0], "someone@remote.test", "ESMTPS", `TLSv1\.[23]`, "bob@example.test")
	if !bytes.Equal(rest, body) {
		t.Fatalf("stored body differs:\n got %q\nwant %q", rest, body)
	}
}

func TestUnavailableRaftGives451AndStoresNothing(t *testing.T) {
	e := newEnv(t, 0)
	e.prop.FailWith(errors.New("raft: no leader"))
	m := e.file(msg("lost"))
	out := e.py(
		s("connect", "smtps", port(e.subs)), s("ehlo"), s("login", "alice@example.test", alicePass, "PLAIN"),
		s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("rcpt", "carol@remote.test"), s("data", m),
		s("quit"),
	)
	if len(out) != 8 || out[6].Code != 451 || !strings.HasPrefix(out[6].Msg, "4.3.0") {
		t.Fatalf("data with raft down: %+v", out)
	}
	if n := len(e.inbox("bob@example.test")); n != 0 {
		t.Errorf("bob got %d messages", n)
	}
	if q := e.queue(); len(q) != 0 {
		t.Errorf("queued: %+v", q)
	}
	if e.enqueued.Load() != 0 {
		t.Errorf("Enqueued called")
	}
	// Once raft is back, the client's retry goes through.
	e.prop.FailWith(nil)
	out = e.py(
		s("connect", "smtps", port(e.subs)), s("ehlo"), s("login", "alice@example.test", alicePass, "PLAIN"),
		s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("data", m), s("quit"),
	)
	if out[5].Code != 250 || len(e.inbox("bob@example.test")) != 1 {
		t.Fatalf("retry: %+v", out)
	}
}

func TestCurlSendsOverSMTPS(t *testing.T) {
	e := newEnv(t, 0)
	curl := apptest.NeedTool(t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := msg("curl")
	cmd := exec.CommandContext(ctx, curl, "--silent", "--show-error",
		"--url", "smtps://"+e.subs+"/client.test", "--cacert", e.pki.CAFile,
		"--user", "alice@example.test:"+alicePass, "--login-options", "AUTH=PLAIN",
		"--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
		"--upload-file", e.file(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	got := e.inbox("bob@example.test")
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	if rest := checkHeaders(t, got[0], "alice@example.test", "ESMTPSA", `TLSv1\.[23]`, "bob@example.test"); !bytes.Equal(rest, body) {
		t.Fatalf("body changed: %q", rest)
	}
}

func TestShutdownEndsIdleSessionsAndWaitsForTransactions(t *testing.T) {
	e := newEnv(t, 0)
	idle := dialRaw(t, e.inbound)
	idle.cmd("EHLO client.test", "250")
	busy := dialRaw(t, e.inbound)
	busy.cmd("EHLO client.test", "250")
	busy.cmd("MAIL FROM:<a@remote.test>", "250")
	busy.cmd("RCPT TO:<bob@example.test>", "250")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	idle.expect("421")
	// New connections are refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.inbound, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after Shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The open transaction finishes.
	busy.cmd("DATA", "354")
	busy.send(string(msgFrom("a@remote.test", "during shutdown")) + ".")
	busy.expect("250")
	busy.send("QUIT")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages", n)
	}
}

func TestShutdownDeadlineClosesBusySessions(t *testing.T) {
	e := newEnv(t, 0)
	busy := dialRaw(t, e.inbound)
	busy.cmd("EHLO client.test", "250")
	busy.cmd("MAIL FROM:<a@remote.test>", "250")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	if !busy.closed() {
		t.Fatal("busy session still open")
	}
}

func TestBDATChunksAreJoined(t *testing.T) {
	e := newEnv(t, 0)
	c := dialRaw(t, e.inbound)
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@remote.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	part1, part2 := "Subject: chunks\r\n\r\nfirst ", "and second\r\n"
	fmt.Fprintf(c.c, "BDAT %d\r\n%s", len(part1), part1)
	c.expect("250")
	fmt.Fprintf(c.c, "BDAT %d LAST\r\n%s", len(part2), part2)
	c.expect("250 2.0.0 Ok: queued as")
	got := e.inbox("bob@example.test")
	if len(got) != 1 {
		t.Fatalf("bob has %d messages", len(got))
	}
	if rest := checkHeaders(t, got[0], "a@remote.test", "ESMTP", "", "bob@example.test"); string(rest) != part1+part2 {
		t.Fatalf("body %q", rest)
	}
}
