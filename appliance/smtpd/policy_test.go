package smtpd

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"sigillo/storage"
)

// addMailbox adds a mailbox that nobody logs in to.
func (e *env) addMailbox(addr string, quota int64) {
	e.t.Helper()
	e.mbox[addr] = e.prop.Must(e.t, &storage.AddMailbox{Address: addr, PasswordHash: "-", QuotaBytes: quota, At: 1}).(int64)
}

// message is a small message with the given header fields.
func message(fields ...string) []byte {
	return []byte(strings.Join(fields, "\r\n") + "\r\n\r\nHello.\r\n")
}

func TestSubmissionFromMustBeTheAuthenticatedUser(t *testing.T) {
	e := newEnv(t, 0)
	const to = "To: bob@example.test"
	cases := []struct {
		name string
		msg  []byte
		code int
	}{
		{"another hosted user", message("From: bob@example.test", to, "Subject: forged"), 553},
		{"the user, with a name and another case", message(`From: "Alice A." <ALICE@Example.test>`, to, "Subject: own"), 250},
		{"the user and someone else", message("From: alice@example.test, bob@example.test", to, "Subject: two"), 553},
		{"an encoded name before another address", message("From: =?utf-8?q?Alice?= <bob@example.test>", to, "Subject: encoded"), 553},
		{"a folded From", message("From: Bob\r\n <bob@example.test>", to, "Subject: folded"), 553},
		{"a second From field", message("From: alice@example.test", "From: bob@example.test", to, "Subject: twice"), 553},
		{"a Sender that is someone else", message("From: alice@example.test", "Sender: bob@example.test", to, "Subject: sender"), 553},
		{"a From no parser reads", message("From: <<bob@example.test", to, "Subject: unreadable"), 553},
		{"a From with no address at all", message("From: nobody", to, "Subject: empty"), 553},
		{"a remote address", message("From: alice@gmail.test", to, "Subject: remote"), 553},
		{"no From at all", message(to, "Subject: anonymous"), 250},
	}
	steps := [][]any{s("connect", "smtps", port(e.subs)), s("ehlo"), s("login", "alice@example.test", alicePass, "PLAIN")}
	for _, c := range cases {
		steps = append(steps, s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("data", e.file(c.msg)))
	}
	out := e.py(append(steps, s("quit"))...)
	if len(out) != 3+3*len(cases)+1 {
		t.Fatalf("session cut short: %+v", out)
	}
	accepted := 0
	for i, c := range cases {
		got := out[3+3*i+2]
		if got.Code != c.code {
			t.Errorf("%s: DATA answered %d %s, want %d", c.name, got.Code, got.Msg, c.code)
		}
		if c.code == 553 && !strings.HasPrefix(got.Msg, "5.7.1") {
			t.Errorf("%s: %q does not start with 5.7.1", c.name, got.Msg)
		}
		if c.code == 250 {
			accepted++
		}
	}
	if n := len(e.inbox("bob@example.test")); n != accepted {
		t.Errorf("bob has %d messages, want the %d accepted", n, accepted)
	}
}

func TestInboundRefusesHostedSenders(t *testing.T) {
	e := newEnv(t, 0)
	p := port(e.inbound)
	forged := e.file(message("From: Alice <alice@example.test>", "To: bob@example.test", "Subject: forged"))
	remote := e.file(message("From: someone@remote.test", "To: bob@example.test", "Subject: remote"))
	bounce := e.file(message("From: Mail Delivery System <MAILER-DAEMON@remote.test>", "To: bob@example.test", "Subject: bounce"))
	out := e.py(
		s("connect", "plain", p), s("ehlo"), // 0 1
		s("mail", "alice@example.test"),                                 // 2: 550
		s("mail", "ALICE@EXAMPLE.TEST"),                                 // 3: 550
		s("mail", "nobody@example.test"),                                // 4: 550, a mailbox or not
		s("mail", ""), s("rcpt", "bob@example.test"), s("data", bounce), // 5 6 7: a bounce passes
		s("mail", "someone@remote.test"), s("rcpt", "bob@example.test"), s("data", forged), // 8 9 10: From: refused
		s("mail", "someone@remote.test"), s("rcpt", "bob@example.test"), s("data", remote), // 11 12 13
		s("quit"),
	)
	if len(out) != 15 {
		t.Fatalf("session cut short: %+v", out)
	}
	for _, i := range []int{2, 3, 4, 10} {
		if out[i].Code != 550 || !strings.HasPrefix(out[i].Msg, "5.7.1") {
			t.Errorf("step %d: %+v, want 550 5.7.1", i, out[i])
		}
	}
	for _, i := range []int{5, 6, 7, 8, 9, 11, 12, 13} {
		if out[i].Code != 250 {
			t.Errorf("step %d: %+v", i, out[i])
		}
	}
	got := e.inbox("bob@example.test")
	if len(got) != 2 || !bytes.Contains(got[0], []byte("Subject: bounce")) || !bytes.Contains(got[1], []byte("Subject: remote")) {
		t.Fatalf("bob has %d messages: %q", len(got), got)
	}
}

func TestRelayNetworksMaySendAsHostedDomainsButNotRelay(t *testing.T) {
	e := newEnv(t, 0, func(s *Server) { s.RelayNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	app := e.file(message("From: Alice <alice@example.test>", "To: bob@example.test", "Subject: from the app server"))
	out := e.py(
		s("connect", "plain", port(e.inbound)), s("ehlo"),
		s("mail", "alice@example.test"), s("rcpt", "carol@remote.test"), s("rcpt", "bob@example.test"), s("data", app),
		s("quit"),
	)
	if len(out) != 7 || out[2].Code != 250 || out[4].Code != 250 || out[5].Code != 250 {
		t.Fatalf("a client in relay_networks sending as alice: %+v", out)
	}
	if out[3].Code != 554 {
		t.Errorf("relay_networks made a relay: %+v", out[3])
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Errorf("bob has %d messages", n)
	}
}

func TestHarvestingEndsTheConnectionWith421(t *testing.T) {
	e := newEnv(t, 0)
	r := dialRaw(t, e.inbound)
	r.cmd("EHLO harvester.test", "250")
	r.cmd("MAIL FROM:<h@harvester.test>", "250")
	for i := 0; i < DefaultMaxRejectedRecipients; i++ {
		r.cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), "550 5.1.1")
	}
	// Even a good address: the session is over.
	r.cmd("RCPT TO:<bob@example.test>", "421 4.7.0")
	if !r.closed() {
		t.Fatal("the connection stayed open after 421")
	}

	// Pipelined, as a harvester would: 20 answers, then 421 and the end.
	r = dialRaw(t, e.inbound)
	r.cmd("EHLO harvester.test", "250")
	var batch strings.Builder
	batch.WriteString("MAIL FROM:<h@harvester.test>\r\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&batch, "RCPT TO:<guess%d@example.test>\r\n", i)
	}
	r.c.Write([]byte(batch.String()))
	r.expect("250")
	for i := 0; i < DefaultMaxRejectedRecipients; i++ {
		r.expect("550")
	}
	r.expect("421 4.7.0")
	if !r.closed() {
		t.Fatal("the connection stayed open after 421")
	}
}

func TestRejectedRecipientsCountAcrossTransactionsAndTLS(t *testing.T) {
	e := newEnv(t, 0, func(s *Server) { s.MaxRejectedRecipients = 3 })
	r := dialRawTLS(t, e.subs, e.pki.ClientConfig(""))
	r.cmd("EHLO client.test", "250")
	r.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00"+alicePass)), "235")
	r.cmd("MAIL FROM:<alice@example.test>", "250")
	r.cmd("RCPT TO:<nobody@example.test>", "550")
	r.cmd("RCPT TO:<bob@example.test>", "250")
	r.cmd("RCPT TO:<x@[127.0.0.1]>", "550")
	r.cmd("RSET", "250")
	r.cmd("MAIL FROM:<alice@example.test>", "250")
	r.cmd("RCPT TO:<nobody2@example.test>", "550")
	r.cmd("RCPT TO:<bob@example.test>", "421 4.7.0")
	if !r.closed() {
		t.Fatal("the TLS connection stayed open after 421")
	}
	// Another connection starts from zero.
	r = dialRawTLS(t, e.subs, e.pki.ClientConfig(""))
	r.cmd("EHLO client.test", "250")
	r.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00"+alicePass)), "235")
	r.cmd("MAIL FROM:<alice@example.test>", "250")
	r.cmd("RCPT TO:<bob@example.test>", "250")
	r.cmd("QUIT", "221")
}

func TestPostmasterWithAndWithoutDomain(t *testing.T) {
	m := func(e *env) string {
		return e.file(message("From: someone@remote.test", "To: postmaster", "Subject: for the postmaster"))
	}

	t.Run("configured", func(t *testing.T) {
		e := newEnv(t, 0, func(s *Server) { s.Postmaster = "alice@example.test" })
		out := e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("mail", "someone@remote.test"), s("rcpt", "postmaster"), s("rcpt", "PostMaster@Example.test"), s("data", m(e)),
			s("mail", "someone@remote.test"), s("rcpt", "Postmaster"), s("data", m(e)),
			s("quit"))
		for _, i := range []int{3, 4, 5, 7, 8} {
			if out[i].Code != 250 {
				t.Errorf("step %d: %+v", i, out[i])
			}
		}
		if n := len(e.inbox("alice@example.test")); n != 2 {
			t.Errorf("the postmaster (alice) has %d messages, want 2 (one per transaction)", n)
		}
		// A mailbox of its own wins for its domain.
		e.addMailbox("postmaster@example.test", 0)
		out = e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("mail", "someone@remote.test"), s("rcpt", "postmaster@example.test"), s("data", m(e)), s("quit"))
		if out[4].Code != 250 || len(e.inbox("postmaster@example.test")) != 1 || len(e.inbox("alice@example.test")) != 2 {
			t.Errorf("postmaster@example.test with its own mailbox: %+v", out)
		}
	})
	t.Run("not configured", func(t *testing.T) {
		e := newEnv(t, 0)
		out := e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("mail", "someone@remote.test"), s("rcpt", "postmaster"), s("rcpt", "postmaster@example.test"), s("quit"))
		for _, i := range []int{3, 4} {
			if out[i].Code != 550 || !strings.HasPrefix(out[i].Msg, "5.1.1") || !strings.Contains(out[i].Msg, "postmaster") {
				t.Errorf("step %d: %+v, want a 550 5.1.1 that names the postmaster setting", i, out[i])
			}
		}
		// postmaster@<hostname>, when it is a mailbox here, is the default.
		e.prop.Must(t, &storage.AddDomain{Name: testHost, At: 1})
		e.addMailbox("postmaster@"+testHost, 0)
		out = e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("mail", "someone@remote.test"), s("rcpt", "postmaster"), s("data", m(e)), s("quit"))
		if out[3].Code != 250 || out[4].Code != 250 || len(e.inbox("postmaster@"+testHost)) != 1 {
			t.Errorf("bare postmaster with postmaster@%s: %+v", testHost, out)
		}
	})
	t.Run("configured but missing", func(t *testing.T) {
		e := newEnv(t, 0, func(s *Server) { s.Postmaster = "ghost@example.test" })
		out := e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("mail", "someone@remote.test"), s("rcpt", "postmaster"), s("quit"))
		if out[3].Code != 451 {
			t.Errorf("postmaster configured as a missing mailbox: %+v, want 451 (the sender retries)", out[3])
		}
	})
}

func TestSubmissionAddsMessageIDAndDate(t *testing.T) {
	e := newEnv(t, 0)
	bare := message("From: alice@example.test", "To: bob@example.test", "Subject: bare")
	dated := message("From: alice@example.test", "To: bob@example.test", "DATE: Mon, 3 Mar 2025 10:00:00 +0100", "Subject: dated")
	full := message("From: alice@example.test", "To: bob@example.test", "date: Mon, 3 Mar 2025 10:00:00 +0100", "message-id: <x@client.test>", "Subject: full")
	steps := [][]any{s("connect", "smtps", port(e.subs)), s("ehlo"), s("login", "alice@example.test", alicePass, "PLAIN")}
	for _, m := range [][]byte{bare, dated, full} {
		steps = append(steps, s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("data", e.file(m)))
	}
	out := e.py(append(steps, s("quit"))...)
	for _, i := range []int{5, 8, 11} {
		if out[i].Code != 250 {
			t.Fatalf("step %d: %+v", i, out[i])
		}
	}
	got := e.inbox("bob@example.test")
	if len(got) != 3 {
		t.Fatalf("bob has %d messages", len(got))
	}
	msgID := `Message-ID: <20250304050607\.[A-Z2-7]{16}@mx\.example\.test>\r\n`
	date := `Date: Tue, 04 Mar 2025 05:06:07 \+0000\r\n`
	for i, want := range []struct {
		added string
		orig  []byte
	}{{msgID + date, bare}, {msgID, dated}, {"", full}} {
		rest := checkHeaders(t, got[i], "alice@example.test", "ESMTPSA", `TLSv1\.[23]`, "bob@example.test")
		loc := regexp.MustCompile(`^` + want.added).FindIndex(rest)
		if loc == nil || !bytes.Equal(rest[loc[1]:], want.orig) {
			t.Errorf("message %d stored as\n%s\nwant %q then the message as sent", i, rest, want.added)
		}
	}

	// Not on port 25: what another server sends is stored as it is.
	out = e.py(s("connect", "plain", port(e.inbound)), s("ehlo"),
		s("mail", "someone@remote.test"), s("rcpt", "bob@example.test"),
		s("data", e.file(message("From: someone@remote.test", "Subject: inbound"))), s("quit"))
	if out[4].Code != 250 {
		t.Fatalf("inbound: %+v", out)
	}
	got = e.inbox("bob@example.test")
	if rest := checkHeaders(t, got[3], "someone@remote.test", "ESMTP", "", "bob@example.test"); !bytes.Equal(rest, message("From: someone@remote.test", "Subject: inbound")) {
		t.Errorf("inbound message changed: %q", rest)
	}
}

// A mailbox under its quota takes a message that goes over by up to 10 %;
// beyond that the client is told with 552 when nobody can take the message,
// and nothing is ever bounced to a sender that could be forged.
func TestQuotaGraceAndNoBackscatter(t *testing.T) {
	e := newEnv(t, 0)
	e.addMailbox("grace@example.test", 10000)
	e.addMailbox("tiny@example.test", 1000)
	p := port(e.inbound)
	sized := func(subject string, n int) string {
		head := "From: someone@remote.test\r\nTo: x@example.test\r\nSubject: " + subject + "\r\n\r\n"
		return e.file([]byte(head + strings.Repeat("x", n-len(head)-2) + "\r\n"))
	}
	out := e.py(
		s("connect", "plain", p), s("ehlo"),
		s("mail", "someone@remote.test", []string{"SIZE=1200"}), s("rcpt", "tiny@example.test"), // 2 3: SIZE over quota + grace
		s("cmd", "RSET"),
		s("mail", "someone@remote.test", []string{"SIZE=1050"}), s("rcpt", "tiny@example.test"), // 5 6: within the grace
		s("cmd", "RSET"),
		s("mail", "someone@remote.test"), s("rcpt", "grace@example.test"), s("data", sized("over by a little", 10500)), // 8 9 10
		s("mail", "someone@remote.test"), s("rcpt", "grace@example.test"), // 11 12: now over quota: refused at RCPT
		s("cmd", "RSET"),
		s("mail", "someone@remote.test"), s("rcpt", "tiny@example.test"), s("data", sized("far too big", 3000)), // 14 15 16: 552, no bounce
		s("mail", "someone@remote.test"), s("rcpt", "tiny@example.test"), s("rcpt", "bob@example.test"), s("data", sized("for both", 3000)), // 17-20
		s("quit"),
	)
	if len(out) != 22 {
		t.Fatalf("session cut short: %+v", out)
	}
	for i, want := range map[int]int{3: 552, 6: 250, 9: 250, 10: 250, 12: 552, 15: 250, 16: 552, 18: 250, 19: 250, 20: 250} {
		if out[i].Code != want {
			t.Errorf("step %d: %+v, want %d", i, out[i], want)
		}
	}
	if !strings.HasPrefix(out[16].Msg, "5.2.2") {
		t.Errorf("every recipient over quota: %+v", out[16])
	}
	if n := len(e.inbox("grace@example.test")); n != 1 {
		t.Errorf("grace@ has %d messages, want 1", n)
	}
	// Inbound, the sender may be forged: a recipient accepted at RCPT gets
	// the message even beyond the grace, rather than a bounce going out.
	if n := len(e.inbox("tiny@example.test")); n != 1 {
		t.Errorf("tiny@ has %d messages, want 1 (the one with bob)", n)
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Errorf("bob has %d messages", n)
	}
	if q := e.queue(); len(q) != 0 {
		t.Fatalf("a bounce went out to a sender that could be forged: %+v", q)
	}

	// An authenticated sender is who it says: it gets the DSN.
	e.addMailbox("tiny2@example.test", 1000)
	big := e.file([]byte("From: alice@example.test\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 70)+"\r\n", 30)))
	out = e.py(s("connect", "smtps", port(e.subs)), s("ehlo"), s("login", "alice@example.test", alicePass, "PLAIN"),
		s("mail", "alice@example.test"), s("rcpt", "tiny2@example.test"), s("rcpt", "bob@example.test"), s("data", big), // 3-6
		s("mail", "alice@example.test"), s("rcpt", "tiny2@example.test"), s("data", big), // 7-9
		s("quit"))
	if out[6].Code != 250 || out[9].Code != 552 || !strings.HasPrefix(out[9].Msg, "5.2.2") {
		t.Fatalf("authenticated: %+v", out)
	}
	if n := len(e.inbox("tiny2@example.test")); n != 0 {
		t.Errorf("tiny2@ got %d messages beyond its quota and grace", n)
	}
	dsn := e.inbox("alice@example.test")
	if len(dsn) != 1 {
		t.Fatalf("alice got %d bounces, want 1", len(dsn))
	}
	for _, want := range []string{"Return-Path: <>\r\n", "report-type=delivery-status", "Final-Recipient: rfc822; tiny2@example.test", "Status: 5.2.2"} {
		if !bytes.Contains(dsn[0], []byte(want)) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn[0])
		}
	}
}
