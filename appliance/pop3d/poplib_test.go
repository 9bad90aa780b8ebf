package pop3d

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// These tests drive the server with Python's poplib, an independent POP3
// client, the way a user's mail program would.

// poplibScript runs one user's visit: log in, look around, read, delete
// one message, undo, delete another and QUIT; then a visit that marks a
// message and drops the connection; then a last look. It prints what it
// saw as JSON.
const poplibScript = `
import json, poplib, ssl, sys

mode, host, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
out = {}

def s(b):
    return b.decode('latin-1')

def connect(first=False):
    if mode == 'ssl':
        return poplib.POP3_SSL(host, port, context=ctx, timeout=10)
    p = poplib.POP3(host, port, timeout=10)
    if first:
        out['plain_capa'] = sorted(p.capa().keys())
        try:
            p.user('alice')
            out['user_before_stls'] = 'accepted'
        except poplib.error_proto as e:
            out['user_before_stls'] = s(e.args[0])
    p.stls(context=ctx)
    return p

p = connect(first=True)
out['capa'] = sorted(p.capa().keys())
p.user('alice')
out['pass'] = s(p.pass_('secret pw'))
out['stat'] = list(p.stat())
out['list'] = [s(l) for l in p.list()[1]]
out['uidl'] = [s(l) for l in p.uidl()[1]]
out['uidl_2'] = s(p.uidl(2))
out['retr_1'] = [s(l) for l in p.retr(1)[1]]
out['retr_2'] = [s(l) for l in p.retr(2)[1]]
out['top_1_0'] = [s(l) for l in p.top(1, 0)[1]]
out['top_3_1'] = [s(l) for l in p.top(3, 1)[1]]
p.dele(1)
try:
    p.retr(1)
    out['retr_deleted'] = 'accepted'
except poplib.error_proto as e:
    out['retr_deleted'] = s(e.args[0])
out['rset'] = s(p.rset())
p.dele(2)
out['stat_after_dele'] = list(p.stat())
out['quit'] = s(p.quit())

p = connect()
p.user('alice')
p.pass_('secret pw')
out['stat_second'] = list(p.stat())
p.dele(1)
p.close()  # drop the connection without QUIT

p = connect()
p.user('alice')
p.pass_('secret pw')
out['stat_after_drop'] = list(p.stat())
out['uidl_after_drop'] = [s(l) for l in p.uidl()[1]]
p.quit()

print(json.dumps(out))
`

type poplibResult struct {
	PlainCapa      []string `json:"plain_capa"`
	UserBeforeSTLS string   `json:"user_before_stls"`
	Capa           []string `json:"capa"`
	Pass           string   `json:"pass"`
	Stat           []int64  `json:"stat"`
	List           []string `json:"list"`
	UIDL           []string `json:"uidl"`
	UIDL2          string   `json:"uidl_2"`
	Retr1          []string `json:"retr_1"`
	Retr2          []string `json:"retr_2"`
	Top10          []string `json:"top_1_0"`
	Top31          []string `json:"top_3_1"`
	RetrDeleted    string   `json:"retr_deleted"`
	Rset           string   `json:"rset"`
	StatAfterDele  []int64  `json:"stat_after_dele"`
	Quit           string   `json:"quit"`
	StatSecond     []int64  `json:"stat_second"`
	StatAfterDrop  []int64  `json:"stat_after_drop"`
	UIDLAfterDrop  []string `json:"uidl_after_drop"`
}

func runPoplib(t *testing.T, py, mode, addr, cafile string) poplibResult {
	t.Helper()
	var res poplibResult
	runPython(t, py, poplibScript, &res, mode, addr, cafile)
	return res
}

// runPython runs a poplib script with the arguments mode, host, port and
// cafile (addr split in two), and decodes the JSON it prints into out.
func runPython(t *testing.T, py, script string, out any, mode, addr, cafile string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "client.py")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, path, mode, host, port, cafile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("poplib client failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("poplib client output %q: %v", stdout.String(), err)
	}
	t.Logf("poplib: %s", bytes.TrimSpace(stdout.Bytes()))
}

func TestPoplib(t *testing.T) {
	py := apptest.NeedTool(t, "python3")
	for _, mode := range []string{"ssl", "stls"} {
		t.Run(mode, func(t *testing.T) {
			e := startEnv(t)
			addr := e.tlsAddr
			if mode == "stls" {
				addr = e.plainAddr
			}
			res := runPoplib(t, py, mode, addr, e.pki.CAFile)
			e.waitSessionsGone(t)
			checkPoplib(t, mode, res)

			// The first visit's DELE 1 was undone by RSET, so its QUIT
			// removed only message 2; the dropped visit removed nothing.
			if got := e.be.uids("alice"); !slices.Equal(got, []string{"u1", "u3"}) {
				t.Errorf("INBOX after the visits holds %q, want [u1 u3]", got)
			}
			if opened, closed := e.be.balanced(); opened != 3 || closed != 3 {
				t.Errorf("maildrops opened %d, closed %d; want 3 and 3", opened, closed)
			}
		})
	}
}

func checkPoplib(t *testing.T, mode string, res poplibResult) {
	t.Helper()
	msgs := testMessages()
	size := func(i int) int64 { return crlfSize(msgs[i].body) }
	eq := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}

	if mode == "stls" {
		if !slices.Contains(res.PlainCapa, "STLS") || slices.Contains(res.PlainCapa, "USER") || slices.Contains(res.PlainCapa, "SASL") {
			t.Errorf("CAPA before STLS = %q, want STLS and neither USER nor SASL", res.PlainCapa)
		}
		if len(res.UserBeforeSTLS) < 11 || res.UserBeforeSTLS[:11] != "-ERR [AUTH]" {
			t.Errorf("USER before STLS answered %q, want -ERR [AUTH]", res.UserBeforeSTLS)
		}
	}
	for _, c := range []string{"USER", "SASL", "TOP", "UIDL", "PIPELINING", "RESP-CODES"} {
		if !slices.Contains(res.Capa, c) {
			t.Errorf("CAPA over TLS lacks %s: %q", c, res.Capa)
		}
	}
	if slices.Contains(res.Capa, "STLS") {
		t.Errorf("CAPA over TLS offers STLS: %q", res.Capa)
	}
	eq("PASS", res.Pass[:3], "+OK")
	eq("STAT", res.Stat, []int64{3, size(0) + size(1) + size(2)})
	eq("LIST", res.List, []string{
		fmt.Sprintf("1 %d", size(0)), fmt.Sprintf("2 %d", size(1)), fmt.Sprintf("3 %d", size(2)),
	})
	eq("UIDL", res.UIDL, []string{"1 u1", "2 u2", "3 u3"})
	eq("UIDL 2", res.UIDL2, "+OK 2 u2")
	eq("RETR 1", res.Retr1, []string{"From: a@example.org", "Subject: one", "", "Hello", ".hidden dot line", "..two dots", "end"})
	eq("RETR 2", res.Retr2, []string{"From: b@example.org", "Subject: two", "", "line1", "line2", ".", "line4"})
	eq("TOP 1 0", res.Top10, []string{"From: a@example.org", "Subject: one", ""})
	eq("TOP 3 1", res.Top31, []string{"Subject: three", "", "body1"})
	if len(res.RetrDeleted) < 4 || res.RetrDeleted[:4] != "-ERR" {
		t.Errorf("RETR of a deleted message answered %q, want -ERR", res.RetrDeleted)
	}
	eq("STAT after DELE 2", res.StatAfterDele, []int64{2, size(0) + size(2)})
	eq("QUIT", res.Quit[:3], "+OK")
	eq("STAT in second visit", res.StatSecond, []int64{2, size(0) + size(2)})
	eq("STAT after dropped visit", res.StatAfterDrop, []int64{2, size(0) + size(2)})
	eq("UIDL after dropped visit", res.UIDLAfterDrop, []string{"1 u1", "2 u3"})
}
