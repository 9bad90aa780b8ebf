package imapd

import (
	"slices"
	"testing"

	"sigillo/appliance/apptest"
)

// TestNodeNotReadyRefusesChangesNotReads: while the node is not ready (no
// raft leader, say) a user still logs in and reads, but every change is
// answered NO [UNAVAILABLE] with the reason, and nothing is stored; a
// FETCH of a body works and leaves the message unseen. Once ready again,
// the same server takes changes, with nothing restarted. The client is
// Python's imaplib.
func TestNodeNotReadyRefusesChangesNotReads(t *testing.T) {
	gate := &apptest.Gate{}
	e := newEnv(t, func(s *Server) { s.Ready = gate.Ready })
	e.deliver("INBOX", []byte("Subject: first\r\n\r\nfirst body\r\n"))
	e.deliver("INBOX", []byte("Subject: second\r\n\r\nsecond body\r\n"))

	gate.Down("no cluster leader")
	e.runPython(`
def unavailable(resp, what):
    typ, data = resp
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    assert typ == "NO" and text == "[UNAVAILABLE] no cluster leader", (what, typ, text)
    print("%-10s NO %s" % (what, text))

M = login()
assert ok(M.select("INBOX"), "select") == [b"2"]
body = ok(M.fetch("1", "(BODY[])"), "fetch body")
assert body[0][1] == b"Subject: first\r\n\r\nfirst body\r\n", body
assert b"Seen" not in ok(M.fetch("1", "(FLAGS)"), "fetch flags")[0]
assert ok(M.search(None, "ALL"), "search") == [b"1 2"]
print("reads      OK")

unavailable(M.append("INBOX", None, None, MSG), "APPEND")
unavailable(M.store("1", "+FLAGS", "(\\Flagged)"), "STORE")
unavailable(M.copy("1", "Archive"), "COPY")
unavailable(M.uid("MOVE", "1", "Archive"), "MOVE")
unavailable(M.expunge(), "EXPUNGE")
unavailable(M.create("Work"), "CREATE")
unavailable(M.rename("Archive", "Old"), "RENAME")
unavailable(M.delete("Archive"), "DELETE")
unavailable(M.unsubscribe("INBOX"), "UNSUBSCRIBE")
assert ok(M.status("INBOX", "(MESSAGES)"), "status")[0].endswith(b"(MESSAGES 2)")
M.logout()
print("PASS")
`, nil)
	if n := len(e.messages("INBOX")); n != 2 {
		t.Fatalf("INBOX has %d messages after refused changes, want 2", n)
	}
	if n := len(e.messages("Archive")); n != 0 {
		t.Fatalf("Archive has %d messages after refused COPY and MOVE, want 0", n)
	}
	for _, m := range e.messages("INBOX") {
		if len(m.Flags) != 0 {
			t.Fatalf("message %d has flags %q after a node that was not ready served it", m.UID, m.Flags)
		}
	}

	gate.Up()
	e.runPython(`
M = login()
ok(M.select("INBOX"), "select")
ok(M.append("INBOX", None, None, MSG), "append")
ok(M.store("1", "+FLAGS", "(\\Flagged)"), "store")
ok(M.fetch("2", "(BODY[])"), "fetch body")
M.logout()
print("PASS")
`, nil)
	msgs := e.messages("INBOX")
	if len(msgs) != 3 || !slices.Contains(msgs[0].Flags, `\Flagged`) || !slices.Contains(msgs[1].Flags, `\Seen`) {
		t.Fatalf("INBOX once ready again: %+v", msgs)
	}
}
