package smtpd

import (
	"strings"
	"testing"
)

// TestAClientsRetryAfterALostReplyIsStoredOnce: alice's client sends a
// message to bob and to carol at another domain, loses the connection
// before the 250 (a leader's failover) and sends the very same message
// again on a new connection: both get 250, bob has it once and carol's
// copy is queued once. A server sending bob the same message twice on
// port 25 likewise. A message without Message-ID is another message each
// time (this server gives it a new one), so it is stored twice.
func TestAClientsRetryAfterALostReplyIsStoredOnce(t *testing.T) {
	e := newEnv(t, 0)
	m := e.file(msg("retried"))
	inbound := e.file(msgFrom("someone@remote.test", "inbound-retried"))
	noID := e.file([]byte("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: no id\r\n\r\nTwice.\r\n"))
	submit := func(file string) [][]any { // 7 steps; the connection is left without QUIT
		return [][]any{
			s("connect", "smtps", port(e.subs)), s("ehlo"),
			s("login", "alice@example.test", alicePass, "PLAIN"),
			s("mail", "alice@example.test"), s("rcpt", "bob@example.test"), s("rcpt", "carol@far.test"),
			s("data", file),
		}
	}
	var steps [][]any
	steps = append(steps, submit(m)...)    // 0-6
	steps = append(steps, submit(m)...)    // 7-13: the retry
	steps = append(steps, submit(noID)...) // 14-20
	steps = append(steps, submit(noID)...) // 21-27
	for range 2 {                          // 28-30, 31-33
		steps = append(steps, s("connect", "plain", port(e.inbound)), s("ehlo"),
			s("sendmail", "someone@remote.test", []string{"bob@example.test"}, inbound))
	}
	out := e.py(steps...)
	if len(out) != 34 {
		t.Fatalf("%d steps of 34 ran: %+v", len(out), out)
	}
	for _, i := range []int{6, 13, 20, 27} {
		if out[i].Code != 250 || out[i-4].Code != 235 || out[i-1].Code != 250 || out[i-2].Code != 250 {
			t.Fatalf("submission ending at step %d: %+v", i, out[i-6:i+1])
		}
	}
	for _, i := range []int{30, 33} {
		if !out[i].OK || len(out[i].Refused) != 0 {
			t.Fatalf("inbound sendmail at step %d: %+v", i, out[i])
		}
	}

	got := e.inbox("bob@example.test")
	var subjects []string
	for _, b := range got {
		for _, l := range strings.Split(string(b), "\r\n") {
			if strings.HasPrefix(l, "Subject: ") {
				subjects = append(subjects, strings.TrimPrefix(l, "Subject: "))
			}
		}
	}
	if want := "retried|no id|no id|inbound-retried"; strings.Join(subjects, "|") != want {
		t.Fatalf("bob's inbox holds %q, want %q: the retried messages once, the one without Message-ID twice", strings.Join(subjects, "|"), want)
	}
	if a, b := messageIDLine(string(got[1])), messageIDLine(string(got[2])); a == "" || a == b {
		t.Errorf("the message without Message-ID should have got a new one each time: %q %q", a, b)
	}
	var queued []string
	for _, it := range e.queue() {
		queued = append(queued, strings.Join(it.Recipients, ","))
	}
	if len(queued) != 3 || queued[0] != "carol@far.test" {
		t.Fatalf("queue %v, want carol once for the retried message and twice for the other", queued)
	}
}

func messageIDLine(m string) string {
	for _, l := range strings.Split(m, "\r\n") {
		if strings.HasPrefix(l, "Message-ID:") {
			return l
		}
	}
	return ""
}
