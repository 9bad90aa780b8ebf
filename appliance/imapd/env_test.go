package imapd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"sigillo/appliance/accounts"
	"sigillo/appliance/apptest"
	"sigillo/appliance/authlimit"
	"sigillo/appliance/passwd"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// errNoQuorum is what the proposer fails with while a test makes raft
// unavailable.
var errNoQuorum = errors.New("raft: no quorum (test)")

// env is a running server with one account.
type env struct {
	t        testing.TB
	store    *storage.Store
	proposer *apptest.Proposer
	srv      *Server
	plain    string // host:port without TLS (STARTTLS)
	tls      string // host:port with implicit TLS
	pki      *apptest.PKI
	user     string
	pass     string
	mailbox  int64
	logs     *apptest.LogBuffer
}

const testMaxMessage = 1 << 20

// newEnv starts the server, after opts have set what they set in it.
func newEnv(t testing.TB, opts ...func(*Server)) *env {
	t.Helper()
	dir := t.TempDir()
	store, err := storage.Open(filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &env{t: t, store: store, proposer: apptest.NewProposer(store), pki: apptest.NewPKI(t), user: "alice@example.test", pass: "correct horse", logs: &apptest.LogBuffer{}}
	e.must(&storage.AddDomain{Name: "example.test", At: 1})
	e.mailbox = e.addMailbox(e.user, e.pass, 0)

	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	e.srv = &Server{
		Spool:    sp,
		Store:    store,
		Proposer: e.proposer,
		Auth: &accounts.Authenticator{Store: store,
			Limiter: authlimit.New(time.Now, 10*time.Millisecond, 50*time.Millisecond, time.Minute)},
		TLSConfig:       e.pki.ServerConfig(),
		Logger:          slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxMessageBytes: testMaxMessage,
		Now:             func() time.Time { return time.Date(2024, 3, 5, 10, 20, 30, 0, time.UTC) },
	}
	for _, o := range opts {
		o(e.srv)
	}
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	implicit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.plain, e.tls = plain.Addr().String(), implicit.Addr().String()
	served := make(chan error, 2)
	go func() { served <- e.srv.Serve(plain, false) }()
	go func() { served <- e.srv.Serve(implicit, true) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		for i := 0; i < 2; i++ {
			if err := <-served; err != nil {
				t.Errorf("serve returned %v after shutdown", err)
			}
		}
		// imapserver logs the panics it recovers from at error level:
		// there must be none, whatever the clients sent.
		if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
			t.Errorf("the server logged errors")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) must(c storage.Command) any {
	e.t.Helper()
	return e.proposer.Must(e.t, c)
}

func (e *env) addMailbox(addr, pass string, quota int64) int64 {
	e.t.Helper()
	hash, err := passwd.Hash(pass, passwd.Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	return e.must(&storage.AddMailbox{Address: addr, PasswordHash: hash, QuotaBytes: quota, At: 1000}).(int64)
}

// deliver stores data in a folder of the account the way SMTP does.
func (e *env) deliver(folder string, data []byte) storage.Placement {
	e.t.Helper()
	r := e.must(&storage.Deliver{
		Targets:      []storage.Target{{MailboxID: e.mailbox, Folder: folder}},
		InternalDate: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix(),
		Data:         data,
	}).(*storage.DeliverResult)
	return r.Placed[0]
}

func (e *env) folder(name string) storage.Folder {
	e.t.Helper()
	f, err := e.store.FolderByName(context.Background(), e.mailbox, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

func (e *env) messages(name string) []storage.Message {
	e.t.Helper()
	msgs, err := e.store.Messages(context.Background(), e.folder(name).ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// client logs in over implicit TLS with go-imap's client.
func (e *env) client(h *imapclient.UnilateralDataHandler) *imapclient.Client {
	e.t.Helper()
	c, err := imapclient.DialTLS(e.tls, &imapclient.Options{
		TLSConfig:             e.pki.ClientConfig("localhost"),
		UnilateralDataHandler: h,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Login(e.user, e.pass).Wait(); err != nil {
		e.t.Fatalf("login: %v", err)
	}
	return c
}

// runPython runs script with the environment of e. onLine, if set, sees each
// line the script prints as it prints it (the script flushes). The script
// must print "PASS" last.
func (e *env) runPython(script string, onLine func(line string)) string {
	e.t.Helper()
	py := apptest.NeedTool(e.t, "python3")
	path := filepath.Join(e.t.TempDir(), "client.py")
	if err := os.WriteFile(path, []byte(pythonPrelude+script), 0o600); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-u", path)
	host, tlsPort, _ := net.SplitHostPort(e.tls)
	_, plainPort, _ := net.SplitHostPort(e.plain)
	cmd.Env = append(os.Environ(),
		"IMAP_HOST="+host, "IMAPS_PORT="+tlsPort, "IMAP_PORT="+plainPort,
		"CAFILE="+e.pki.CAFile, "IMAP_USER="+e.user, "IMAP_PASS="+e.pass,
		fmt.Sprintf("MAX_MESSAGE=%d", testMaxMessage))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if onLine != nil {
			onLine(line)
		}
	}
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out.String()), "PASS") {
		e.t.Fatalf("python client failed: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	e.t.Logf("python client output:\n%s", out.String())
	return out.String()
}

// pythonPrelude is shared by the imaplib scripts.
const pythonPrelude = `
import imaplib, os, re, socket, ssl, sys, time
from datetime import datetime, timezone

HOST = os.environ["IMAP_HOST"]
IMAPS_PORT = int(os.environ["IMAPS_PORT"])
IMAP_PORT = int(os.environ["IMAP_PORT"])
USER = os.environ["IMAP_USER"]
PASS = os.environ["IMAP_PASS"]
CTX = ssl.create_default_context(cafile=os.environ["CAFILE"])

def connect():
    return imaplib.IMAP4_SSL(HOST, IMAPS_PORT, ssl_context=CTX, timeout=10)

def login():
    m = connect()
    m.login(USER, PASS)
    return m

def ok(resp, what):
    typ, data = resp
    assert typ == "OK", (what, typ, data)
    return data

def no(resp, code, what):
    typ, data = resp
    assert typ == "NO", (what, typ, data)
    text = b" ".join(d for d in data if isinstance(d, bytes)).decode()
    assert "[" + code + "]" in text, (what, code, text)

def refused(f, what):
    try:
        typ, data = f()
    except imaplib.IMAP4.error:
        return  # BAD
    assert typ != "OK", (what, typ, data)

def names(lines):
    """LIST/LSUB response lines -> mailbox names."""
    out = []
    for l in lines:
        if l is None:
            continue
        if isinstance(l, bytes):
            l = l.decode()
        out.append(re.sub(r'^\(.*?\) (NIL|"[^"]*") ', "", l).strip('"'))
    return out

def fetch_parts(data):
    """imaplib FETCH data -> list of (header bytes, literal bytes or None)."""
    out = []
    for d in data:
        if isinstance(d, tuple):
            out.append((d[0], d[1]))
        elif d not in (b")", None):
            out.append((d, None))
    return out

MSG = (b"From: Bob <bob@example.org>\r\n"
       b"To: Alice <alice@example.test>\r\n"
       b"Subject: Hello there\r\n"
       b"Date: Tue, 05 Mar 2024 09:00:00 +0000\r\n"
       b"Message-ID: <m1@example.org>\r\n"
       b"X-Custom: needle-in-header\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: multipart/alternative; boundary=\"BB\"\r\n"
       b"\r\n"
       b"preamble\r\n"
       b"--BB\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n"
       b"\r\n"
       b"plain text with a unique-word inside\r\n"
       b"--BB\r\n"
       b"Content-Type: text/html; charset=utf-8\r\n"
       b"\r\n"
       b"<p>html text</p>\r\n"
       b"--BB--\r\n")
`
