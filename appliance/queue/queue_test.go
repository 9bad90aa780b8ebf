package queue_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"sigillo/appliance/queue"
	"sigillo/storage"
)

func TestDeliversThroughSTARTTLSToTheNextHop(t *testing.T) {
	w := newWorld(t)
	w.start()
	body := testMessage("over the wire")
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test", "carol@a.test"}, body)

	eventually(t, "bob@b.test to get the message", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })
	eventually(t, "A's queue to empty", func() bool { return len(w.a.queue()) == 0 })

	got := w.b.inbox("bob@b.test")[0]
	// B's Return-Path only (A's local one is not sent on), then B's
	// Received (over TLS from A), then A's (from the client), then the
	// message as submitted.
	re := regexp.MustCompile(`^Return-Path: <alice@a\.test>\r\n` +
		`Received: from mx\.a\.test \(unknown \[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)\)\r\n` +
		`\tby mx\.b\.test \(Sigillo\) with ESMTPS id \w+\r\n\tfor <bob@b\.test>; [^\r]+\r\n` +
		`Received: from client\.test \(unknown \[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.3 [^\r]+\r\n` +
		`\tby mx\.a\.test \(Sigillo\) with ESMTPSA id \w+; [^\r]+\r\n`)
	loc := re.FindStringIndex(got)
	if loc == nil {
		t.Fatalf("message at B:\n%s", got)
	}
	if rest := got[loc[1]:]; rest != body {
		t.Fatalf("body changed in transit:\n%q\nwant\n%q", rest, body)
	}
	if n := strings.Count(got, "Return-Path:"); n != 1 {
		t.Fatalf("%d Return-Path fields at B", n)
	}
	if local := w.a.inbox("carol@a.test"); len(local) != 1 || !strings.HasPrefix(local[0], "Return-Path: <alice@a.test>\r\n") {
		t.Fatalf("local copy at A: %q", local)
	}
	if !strings.Contains(w.log.String(), `tls="TLSv1.3 `) || !strings.Contains(w.log.String(), ` trusted"`) {
		t.Errorf("the runner did not log a verified TLS session")
	}
}

func TestTemporaryFailureIsRetriedLater(t *testing.T) {
	w := newWorld(t)
	w.b.prop.FailWith(errors.New("raft: no quorum")) // B answers 451 at end of data
	w.start()
	t0 := w.clock.Now()
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test"}, testMessage("try again"))

	var it storage.QueueItem
	eventually(t, "the failed attempt to be recorded", func() bool {
		q := w.a.queue()
		if len(q) == 1 && q[0].Attempts == 1 {
			it = q[0]
			return true
		}
		return false
	})
	if !strings.Contains(it.LastError, "451") || !it.NextAttempt.Equal(t0.Add(queue.Backoff(1))) {
		t.Fatalf("after a 451: %+v", it)
	}
	w.b.prop.FailWith(nil)

	// Not due yet: a kick does nothing.
	w.runner.Kick()
	time.Sleep(300 * time.Millisecond)
	if n := len(w.b.inbox("bob@b.test")); n != 0 || len(w.a.queue()) != 1 {
		t.Fatalf("retried before it was due")
	}

	w.clock.Add(queue.Backoff(1))
	w.runner.Kick()
	eventually(t, "the retry to deliver", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })
	eventually(t, "A's queue to empty", func() bool { return len(w.a.queue()) == 0 })
	if n := len(w.a.inbox("alice@a.test")); n != 0 {
		t.Fatalf("alice got %d bounces for a delivered message", n)
	}
}

// parts checks a DSN's MIME structure with go-message and returns its
// delivery-status part.
func parts(t *testing.T, dsn string) string {
	t.Helper()
	ent, err := message.Read(strings.NewReader(dsn))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, dsn)
	}
	mt, params, _ := ent.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN content type %s %v", mt, params)
	}
	if from := ent.Header.Get("From"); from != "Mail Delivery System <MAILER-DAEMON@mx.a.test>" {
		t.Errorf("DSN From: %q", from)
	}
	mr := ent.MultipartReader()
	var types []string
	var status string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		ct, _, _ := p.Header.ContentType()
		types = append(types, ct)
		b, _ := io.ReadAll(p.Body)
		if ct == "message/delivery-status" {
			status = string(b)
		}
	}
	if strings.Join(types, " ") != "text/plain message/delivery-status text/rfc822-headers" {
		t.Fatalf("DSN parts: %v", types)
	}
	return status
}

func TestPermanentFailureBouncesToTheSender(t *testing.T) {
	w := newWorld(t)
	w.start()
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test", "nobody@b.test"}, testMessage("half refused"))

	eventually(t, "the bounce", func() bool { return len(w.a.inbox("alice@a.test")) == 1 })
	eventually(t, "A's queue to empty", func() bool { return len(w.a.queue()) == 0 })
	if n := len(w.b.inbox("bob@b.test")); n != 1 {
		t.Fatalf("bob got %d messages", n)
	}
	dsn := w.a.inbox("alice@a.test")[0]
	if !strings.HasPrefix(dsn, "Return-Path: <>\r\n") || !strings.Contains(dsn, "Subject: half refused") {
		t.Fatalf("bounce:\n%s", dsn)
	}
	status := parts(t, dsn)
	for _, want := range []string{"Reporting-MTA: dns; mx.a.test", "Final-Recipient: rfc822; nobody@b.test",
		"Action: failed", "Status: 5.1.1", "Remote-MTA: dns; 127.0.0.1", "Diagnostic-Code: smtp; 550 5.1.1"} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery status lacks %q:\n%s", want, status)
		}
	}
	if strings.Contains(status, "bob@b.test") {
		t.Errorf("delivery status names bob, who got the message")
	}
}

func TestItemsOlderThanMaxAgeAreBounced(t *testing.T) {
	w := newWorld(t)
	w.b.prop.FailWith(errors.New("raft: no quorum"))
	w.start()
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test"}, testMessage("too late"))
	eventually(t, "the first failure", func() bool { q := w.a.queue(); return len(q) == 1 && q[0].Attempts == 1 })

	w.clock.Add(queue.DefaultMaxAge + time.Minute)
	w.runner.Kick()
	eventually(t, "the bounce", func() bool { return len(w.a.inbox("alice@a.test")) == 1 })
	eventually(t, "A's queue to empty", func() bool { return len(w.a.queue()) == 0 })
	status := parts(t, w.a.inbox("alice@a.test")[0])
	for _, want := range []string{"Final-Recipient: rfc822; bob@b.test", "Status: 4.4.7", "delivery time expired", "451 4.3.0"} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery status lacks %q:\n%s", want, status)
		}
	}
}

func TestMXLookupImplicitMXAndNullMX(t *testing.T) {
	w := newWorld(t)
	_, port, _ := net.SplitHostPort(w.b.inbound)
	w.runner.Routes = nil
	w.runner.Port = port
	w.runner.Resolver = staticResolver{
		mx: map[string][]*net.MX{
			"b.test":    {{Host: "mx-dead.b.test.", Pref: 5}, {Host: "mx.b.test.", Pref: 10}},
			"null.test": {{Host: ".", Pref: 0}},
		},
		hosts: map[string][]string{
			"mx-dead.b.test": {"127.0.0.2"}, // nothing listens there: the next MX is tried
			"mx.b.test":      {"127.0.0.1"},
			"nomx.test":      {"127.0.0.1"}, // no MX: the domain's own address
		},
	}
	w.start()
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test", "dave@nomx.test", "x@null.test", "y@gone.test"}, testMessage("by MX"))

	eventually(t, "bob to get it by MX", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })
	eventually(t, "dave to get it by implicit MX", func() bool { return len(w.b.inbox("dave@nomx.test")) == 1 })
	eventually(t, "the bounce", func() bool { return len(w.a.inbox("alice@a.test")) == 1 })
	eventually(t, "A's queue to empty", func() bool { return len(w.a.queue()) == 0 })
	status := parts(t, w.a.inbox("alice@a.test")[0])
	for _, want := range []string{"Final-Recipient: rfc822; x@null.test", "Status: 5.1.10", "null MX",
		"Final-Recipient: rfc822; y@gone.test", "Status: 5.1.2"} {
		if !strings.Contains(status, want) {
			t.Errorf("delivery status lacks %q:\n%s", want, status)
		}
	}
	// mx.b.test's certificate does not name it: TLS is used anyway.
	if !strings.Contains(w.log.String(), "untrusted TLS connection") {
		t.Errorf("the untrusted certificate was not logged")
	}
	if !strings.Contains(w.b.inbox("bob@b.test")[0], "with ESMTPS id") {
		t.Errorf("delivered without TLS")
	}
}

func TestBrokenTLSFallsBackToPlaintext(t *testing.T) {
	w := newWorld(t)
	// A second smtpd on B's store that offers STARTTLS but cannot do it
	// (no certificate).
	broken := newHost(t, "broken.b.test", w.pki, w.clock, &tls.Config{}, nil, []string{"c.test"}, "eve@c.test")
	w.runner.Routes["c.test"] = broken.inbound
	w.start()
	w.a.submit(w.pki, "alice@a.test", []string{"eve@c.test"}, testMessage("plain after all"))
	eventually(t, "eve to get it", func() bool { return len(broken.inbox("eve@c.test")) == 1 })
	got := broken.inbox("eve@c.test")[0]
	if !strings.Contains(got, "by broken.b.test (Sigillo) with ESMTP id") {
		t.Fatalf("message:\n%s", got)
	}
	if !strings.Contains(w.log.String(), "STARTTLS failed; retrying in plaintext") {
		t.Errorf("fallback not logged")
	}
}

func TestABounceIsNeverBounced(t *testing.T) {
	w := newWorld(t)
	w.start()
	now := w.clock.Now()
	w.a.prop.Must(t, &storage.Deliver{
		Outbound:     &storage.Outbound{ID: queue.NewID(), Sender: "", Recipients: []string{"nobody@b.test"}, NextAttempt: now.Unix()},
		InternalDate: now.Unix(),
		Data:         []byte("Subject: a report\r\n\r\nundeliverable\r\n"),
	})
	w.runner.Kick()
	eventually(t, "the item to go", func() bool { return len(w.a.queue()) == 0 })
	if n := len(w.a.inbox("alice@a.test")); n != 0 {
		t.Fatalf("a bounce was bounced")
	}
	if !strings.Contains(w.log.String(), "never bounce a bounce") {
		t.Errorf("drop not logged")
	}
}

func TestRunStopsPromptlyWithAnAttemptInFlight(t *testing.T) {
	w := newWorld(t)
	// A next hop that accepts and then says nothing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	w.runner.Routes["silent.test"] = ln.Addr().String()
	w.start()
	w.a.submit(w.pki, "alice@a.test", []string{"x@silent.test"}, testMessage("silence"))
	var c net.Conn
	select {
	case c = <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the runner did not connect")
	}
	start := time.Now()
	w.stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Run took %v to stop", d)
	}
	q := w.a.queue()
	if len(q) != 1 || q[0].Attempts != 0 {
		t.Fatalf("an interrupted attempt was recorded: %+v", q)
	}
}

func TestBounceCommandRoutesTheReport(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	now := w.clock.Now()
	b := queue.Bounce{Hostname: "mx.a.test", QueueID: "Q1", Arrival: now,
		Failures: []queue.Failure{{Recipient: "z@b.test", Status: "5.1.1", Diagnostic: "550 5.1.1 no"}},
		Original: []byte("Subject: s\n\nbody with bare LF\n")}

	for _, tc := range []struct {
		sender       string
		local, queue bool
	}{{"", false, false}, {"ghost@a.test", false, false}, {"alice@a.test", true, false}, {"someone@remote.test", false, true}} {
		b.Sender = tc.sender
		cmd, queued, err := queue.BounceCommand(ctx, w.a.store, b, now)
		if err != nil {
			t.Fatal(err)
		}
		if (cmd != nil) != (tc.local || tc.queue) || queued != tc.queue {
			t.Fatalf("%q: cmd %+v queued %v", tc.sender, cmd, queued)
		}
		if cmd == nil {
			continue
		}
		if tc.local && (len(cmd.Targets) != 1 || cmd.Targets[0].MailboxID != w.a.mbox["alice@a.test"] || cmd.Outbound != nil) {
			t.Fatalf("local bounce: %+v", cmd)
		}
		if tc.queue && (cmd.Outbound == nil || cmd.Outbound.Sender != "" || cmd.Outbound.Recipients[0] != tc.sender || len(cmd.Targets) != 0) {
			t.Fatalf("remote bounce: %+v", cmd)
		}
		if strings.Contains(strings.ReplaceAll(string(cmd.Data), "\r\n", ""), "\n") {
			t.Fatalf("bare LF in the report")
		}
	}
}

func TestAnOutcomeThatCannotBeRecordedIsNotRetriedAtOnce(t *testing.T) {
	w := newWorld(t)
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test"}, testMessage("unrecorded"))
	w.a.prop.FailWith(errors.New("raft: not leader"))
	w.start()
	eventually(t, "bob to get it", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })
	eventually(t, "the failure to record to be logged", func() bool {
		return strings.Contains(w.log.String(), "cannot record the delivery attempt")
	})
	// No hot loop re-sending it: the item is held off for a while.
	for range 5 {
		w.runner.Kick()
		time.Sleep(50 * time.Millisecond)
	}
	if n := len(w.b.inbox("bob@b.test")); n != 1 {
		t.Fatalf("bob got %d copies", n)
	}
	if q := w.a.queue(); len(q) != 1 || q[0].Attempts != 0 {
		t.Fatalf("queue: %+v", q)
	}
}

// TestPECItemsGoOverTLSOrWait: an item that requires TLS (a busta for
// another gestore) is never sent in plaintext to a peer whose STARTTLS is
// broken, and is sent over TLS to one whose STARTTLS works.
func TestPECItemsGoOverTLSOrWait(t *testing.T) {
	w := newWorld(t)
	broken := newHost(t, "broken.b.test", w.pki, w.clock, &tls.Config{}, nil, []string{"c.test"}, "eve@c.test")
	w.runner.Routes["c.test"] = broken.inbound
	w.start()
	enqueue := func(id, rcpt string) {
		t.Helper()
		_, err := w.a.prop.Apply(context.Background(), &storage.Deliver{InternalDate: w.clock.Now().Unix(), Data: []byte(testMessage("PEC " + id)),
			Outbound: &storage.Outbound{ID: id, Sender: "alice@a.test", Recipients: []string{rcpt}, NextAttempt: w.clock.Now().Unix(), RequireTLS: true}})
		if err != nil {
			t.Fatal(err)
		}
		w.runner.Kick()
	}
	enqueue("PECBROKEN", "eve@c.test")
	enqueue("PECGOOD", "bob@b.test")
	eventually(t, "bob to get his over TLS", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })
	if got := w.b.inbox("bob@b.test")[0]; !strings.Contains(got, "with ESMTPS") {
		t.Fatalf("bob's message did not come over TLS:\n%s", got)
	}
	eventually(t, "the broken peer's item to be deferred", func() bool {
		for _, it := range w.a.queue() {
			if it.ID == "PECBROKEN" && it.Attempts > 0 {
				return true
			}
		}
		return false
	})
	if n := len(broken.inbox("eve@c.test")); n != 0 {
		t.Fatalf("a TLS-only item went in plaintext (%d messages)", n)
	}
	if strings.Contains(w.log.String(), "retrying in plaintext") {
		t.Errorf("the runner fell back to plaintext for a TLS-only item:\n%s", w.log.String())
	}
}
