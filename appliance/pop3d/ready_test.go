package pop3d

import (
	"slices"
	"testing"

	"sigillo/appliance/apptest"
)

// notReadyScript is a visit by poplib: log in, read message 1, try to
// delete it, list, QUIT. It prints what each step answered as JSON.
const notReadyScript = `
import json, poplib, ssl, sys

mode, host, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
out = {}

def s(b):
    return b.decode('latin-1')

p = poplib.POP3_SSL(host, port, context=ctx, timeout=10)
p.user('alice')
out['pass'] = s(p.pass_('secret pw'))
out['retr_1'] = [s(l) for l in p.retr(1)[1]]
try:
    out['dele_1'] = s(p.dele(1))
except poplib.error_proto as e:
    out['dele_1'] = s(e.args[0])
out['list'] = [s(l) for l in p.list()[1]]
out['quit'] = s(p.quit())
print(json.dumps(out))
`

type notReadyResult struct {
	Pass  string   `json:"pass"`
	Retr1 []string `json:"retr_1"`
	Dele1 string   `json:"dele_1"`
	List  []string `json:"list"`
	Quit  string   `json:"quit"`
}

// TestNodeNotReadyKeepsTheMaildrop: while the node is not ready (no raft
// leader, say) a user logs in and reads, but DELE, and a QUIT that would
// delete what was marked before, answer -ERR [SYS/TEMP] with the reason,
// and nothing is deleted. Once ready again, the same server deletes.
func TestNodeNotReadyKeepsTheMaildrop(t *testing.T) {
	py := apptest.NeedTool(t, "python3")
	gate := &apptest.Gate{}
	e := startEnv(t, func(s *Server) { s.Ready = gate.Ready })
	all := []string{"u1", "u2", "u3"}

	gate.Down("no cluster leader")
	var res notReadyResult
	runPython(t, py, notReadyScript, &res, "ssl", e.tlsAddr, e.pki.CAFile)
	if res.Pass[:3] != "+OK" || len(res.Retr1) == 0 || res.Retr1[1] != "Subject: one" {
		t.Errorf("login and RETR while not ready: %+v", res)
	}
	if res.Dele1 != "-ERR [SYS/TEMP] no cluster leader" {
		t.Errorf("DELE while not ready answered %q, want -ERR [SYS/TEMP] no cluster leader", res.Dele1)
	}
	if len(res.List) != 3 || res.Quit[:3] != "+OK" {
		t.Errorf("LIST and QUIT while not ready: %+v", res)
	}
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); !slices.Equal(got, all) {
		t.Fatalf("INBOX after the visit holds %q, want %q", got, all)
	}

	// Marked while ready, QUIT once not ready: the UPDATE state fails.
	gate.Up()
	c := dialTLS(t, e)
	c.login("alice", "secret pw")
	c.cmd("DELE 2", "+OK")
	gate.Down("no cluster leader")
	if got := c.cmd("QUIT", "-ERR"); got != "-ERR [SYS/TEMP] no cluster leader" {
		t.Errorf("QUIT with a deletion while not ready answered %q", got)
	}
	c.expectClosed()
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); !slices.Equal(got, all) {
		t.Fatalf("INBOX after a QUIT while not ready holds %q, want %q", got, all)
	}

	// Ready again: the same visit deletes message 1.
	gate.Up()
	res = notReadyResult{}
	runPython(t, py, notReadyScript, &res, "ssl", e.tlsAddr, e.pki.CAFile)
	if res.Dele1 != "+OK message 1 deleted" || len(res.List) != 2 || res.Quit[:3] != "+OK" {
		t.Errorf("visit once ready again: %+v", res)
	}
	e.waitSessionsGone(t)
	if got := e.be.uids("alice"); !slices.Equal(got, []string{"u2", "u3"}) {
		t.Fatalf("INBOX once ready again holds %q, want [u2 u3]", got)
	}
}
