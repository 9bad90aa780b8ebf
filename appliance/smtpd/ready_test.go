package smtpd

import (
	"testing"

	"sigillo/appliance/apptest"
)

// TestNodeNotReadyRefusesNewMail: while the node is not ready (no raft
// leader, say), every port greets with 421 and hangs up, and a session
// opened before gets 421 at its next MAIL FROM; a transaction already past
// MAIL goes on. Once the node is ready again, mail is accepted with
// nothing restarted.
func TestNodeNotReadyRefusesNewMail(t *testing.T) {
	gate := &apptest.Gate{}
	e := newEnv(t, 0, func(s *Server) { s.Ready = gate.Ready })
	const refusal = "4.3.0 mx.example.test Service not available: no cluster leader"

	// Sessions opened while the node was ready: one idle after EHLO, one
	// in the middle of a transaction.
	idle := dialRaw(t, e.inbound)
	idle.cmd("EHLO client.test", "250")
	busy := dialRaw(t, e.inbound)
	busy.cmd("EHLO client.test", "250")
	busy.cmd("MAIL FROM:<carol@remote.test>", "250")
	busy.cmd("RCPT TO:<bob@example.test>", "250")

	gate.Down("no cluster leader")

	// New connections, by smtplib, on the three ports: 421 as the greeting.
	out := e.py(
		s("connect", "plain", port(e.inbound)),
		s("connect", "plain", port(e.sub)),
		s("connect", "smtps", port(e.subs)),
	)
	if len(out) != 3 {
		t.Fatalf("smtplib: %+v", out)
	}
	for i, o := range out {
		if o.Exc != "SMTPConnectError" || o.Code != 421 || o.Msg != refusal {
			t.Errorf("connection %d while not ready: %+v, want SMTPConnectError 421 %q", i, o, refusal)
		}
	}

	// The idle session: MAIL FROM gets 421 and the connection ends.
	if got := idle.cmd("MAIL FROM:<dave@remote.test>", "421"); got != "421 "+refusal {
		t.Errorf("MAIL FROM while not ready: %q, want %q", got, "421 "+refusal)
	}
	if !idle.closed() {
		t.Error("the connection stayed open after 421")
	}

	// The transaction past MAIL goes on (its commit does not depend on
	// the gate, only on raft).
	busy.cmd("DATA", "354")
	busy.send("Subject: begun before\r\n\r\nstarted while ready\r\n.")
	busy.expect("250 2.0.0 Ok: queued as")
	busy.cmd("QUIT", "221")
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages after the transaction begun while ready, want 1", n)
	}

	// Ready again: a submission by smtplib goes through.
	gate.Up()
	m := e.file(msg("after the leader came back"))
	out = e.py(
		s("connect", "smtps", port(e.subs)), s("ehlo"),
		s("login", "alice@example.test", alicePass, "PLAIN"),
		s("sendmail", "alice@example.test", []string{"bob@example.test"}, m),
		s("quit"),
	)
	if len(out) != 5 || !out[3].OK || len(out[3].Refused) != 0 {
		t.Fatalf("submission once ready again: %+v", out)
	}
	if n := len(e.inbox("bob@example.test")); n != 2 {
		t.Fatalf("bob has %d messages once ready again, want 2", n)
	}
}
