package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigillo/appliance/accounts"
	"sigillo/appliance/apptest"
	"sigillo/appliance/passwd"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

const (
	alicePass = "alice's long password"
	testHost  = "mx.example.test"
)

// env is a store with example.test and its mailboxes, and a Server
// listening on all three ports.
type env struct {
	t        *testing.T
	store    *storage.Store
	prop     *apptest.Proposer
	srv      *Server
	pki      *apptest.PKI
	inbound  string
	sub      string
	subs     string
	enqueued atomic.Int32
	serveErr chan error
	mbox     map[string]int64
}

// newEnv starts a Server on three loopback listeners; opts set more of it
// before it serves.
func newEnv(t *testing.T, maxBytes int64, opts ...func(*Server)) *env {
	t.Helper()
	store, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, store: store, prop: apptest.NewProposer(store), pki: apptest.NewPKI(t), mbox: map[string]int64{}}
	cheap := passwd.Params{Memory: 64, Time: 1, Threads: 1}
	hash, err := passwd.Hash(alicePass, cheap)
	if err != nil {
		t.Fatal(err)
	}
	e.prop.Must(t, &storage.AddDomain{Name: "example.test", At: 1})
	for _, mb := range []struct {
		addr  string
		quota int64
	}{{"alice@example.test", 0}, {"bob@example.test", 0}, {"full@example.test", 100}, {"small@example.test", 1000}} {
		e.mbox[mb.addr] = e.prop.Must(t, &storage.AddMailbox{Address: mb.addr, PasswordHash: hash, QuotaBytes: mb.quota, At: 1}).(int64)
	}
	// full@ is over its quota already (delivered without enforcement).
	e.prop.Must(t, &storage.Deliver{Targets: []storage.Target{{MailboxID: e.mbox["full@example.test"]}}, Data: bytes.Repeat([]byte("x"), 200)})

	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	e.srv = &Server{
		Spool:           sp,
		Hostname:        testHost,
		Store:           store,
		Proposer:        e.prop,
		Auth:            &accounts.Authenticator{Store: store},
		TLSConfig:       e.pki.ServerConfig(),
		MaxMessageBytes: maxBytes,
		Logger:          apptest.Logger(t),
		Now:             func() time.Time { return time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC) },
		Enqueued:        func() { e.enqueued.Add(1) },
	}
	for _, o := range opts {
		o(e.srv)
	}
	e.serveErr = make(chan error, 3)
	listen := func(mode Mode) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { e.serveErr <- e.srv.Serve(ln, mode) }()
		return ln.Addr().String()
	}
	e.inbound, e.sub, e.subs = listen(Inbound), listen(Submission), listen(Submissions)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for range 3 {
			select {
			case err := <-e.serveErr:
				if err != nil {
					t.Errorf("serve returned %v after shutdown", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("serve did not return after shutdown")
				return
			}
		}
	})
	return e
}

func port(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

// inbox returns the stored contents of a mailbox's INBOX, in UID order.
func (e *env) inbox(addr string) [][]byte {
	e.t.Helper()
	ctx := context.Background()
	f, err := e.store.FolderByName(ctx, e.mbox[addr], "INBOX")
	if err != nil {
		e.t.Fatal(err)
	}
	msgs, err := e.store.Messages(ctx, f.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := e.store.Content(ctx, m.SHA256)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func (e *env) queue() []storage.QueueItem {
	e.t.Helper()
	items, err := e.store.QueueItems(context.Background(), time.Time{})
	if err != nil {
		e.t.Fatal(err)
	}
	return items
}

func (e *env) file(data []byte) string {
	e.t.Helper()
	f, err := os.CreateTemp(e.t.TempDir(), "msg*.eml")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

// step is one result of testdata/smtpclient.py.
type step struct {
	OK       bool                      `json:"ok"`
	Code     int                       `json:"code"`
	Msg      string                    `json:"msg"`
	Exc      string                    `json:"exc"`
	Features []string                  `json:"features"`
	Auth     string                    `json:"auth"`
	TLS      string                    `json:"tls"`
	Refused  map[string][2]interface{} `json:"refused"`
}

func (s step) has(feature string) bool {
	for _, f := range s.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// py runs smtplib through the steps and returns one result per step run.
func (e *env) py(steps ...[]any) []step {
	e.t.Helper()
	py := apptest.NeedTool(e.t, "python3")
	job, _ := json.Marshal(map[string]any{"host": "127.0.0.1", "ca": e.pki.CAFile, "helo": "client.test", "steps": steps})
	jobFile := e.file(job)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/smtpclient.py", jobFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("smtpclient.py: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out []step
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		e.t.Fatalf("smtpclient.py output %q: %v (stderr %s)", stdout.String(), err, stderr.String())
	}
	e.t.Logf("smtplib: %s", strings.TrimSpace(stdout.String()))
	return out
}

func s(args ...any) []any { return args }

// raw is a hand-driven connection, for what no well-behaved client sends.
type raw struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := &raw{t: t, c: c, r: bufio.NewReader(c)}
	r.expect("220")
	return r
}

// dialRawTLS is dialRaw over implicit TLS (port 465).
func dialRawTLS(t *testing.T, addr string, conf *tls.Config) *raw {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := &raw{t: t, c: c, r: bufio.NewReader(c)}
	r.expect("220")
	return r
}

// reply reads a whole (possibly multi-line) reply and returns its last line.
func (r *raw) reply() string {
	r.t.Helper()
	for {
		line, err := r.r.ReadString('\n')
		if err != nil {
			r.t.Fatalf("read reply: %v (got %q)", err, line)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != '-' {
			return line
		}
	}
}

func (r *raw) expect(prefix string) string {
	r.t.Helper()
	l := r.reply()
	if !strings.HasPrefix(l, prefix) {
		r.t.Fatalf("got %q, want %s...", l, prefix)
	}
	return l
}

func (r *raw) send(line string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(line + "\r\n")); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *raw) cmd(line, prefix string) string {
	r.t.Helper()
	r.send(line)
	return r.expect(prefix)
}

// closed reports whether the server closed the connection.
func (r *raw) closed() bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := r.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}
