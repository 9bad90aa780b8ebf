package main

// End-to-end scenarios: the real sigillo binary, started as a process with
// a configuration file, provisioned with its own command line, and used by
// independent clients (Python's smtplib/imaplib/poplib and curl) over TLS
// on 127.0.0.1, trusting the root from `sigillo ca export`.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"sigillo/appliance"
	"sigillo/appliance/apptest"
	"sigillo/appliance/pecdir"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sigillo-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sigillo")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build sigillo: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need finds a tool the scenario uses (see apptest.NeedTool).
func need(t testing.TB, tool string) string { return apptest.NeedTool(t, tool) }

// instance is one running sigillo process.
type instance struct {
	t       testing.TB
	name    string
	bin     string // the sigillo binary it serves with; "": the one TestMain built
	dir     string
	config  string
	extra   string // config tables after [listen]
	top     string // top-level config keys
	ports   map[string]int
	cmd     *exec.Cmd
	ca      string
	mu      sync.Mutex
	output  bytes.Buffer
	exited  chan struct{}
	exitErr error

	// serveEnv is added to the server's environment (SIGILLO_CPUPROFILE,
	// say).
	serveEnv []string
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newInstance writes a configuration with fresh ports; extra is appended
// to it (a [routes] table, say).
func newInstance(t testing.TB, name, extra string, top ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{t: t, name: name, dir: dir, config: filepath.Join(dir, "sigillo.toml"),
		extra: extra, top: strings.Join(top, "\n")}
	in.writeConfig()
	t.Cleanup(func() {
		in.stop(syscall.SIGKILL)
		if t.Failed() {
			in.mu.Lock()
			t.Logf("%s output:\n%s", name, in.output.String())
			in.mu.Unlock()
		}
	})
	return in
}

type lockedWriter struct{ in *instance }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.in.mu.Lock()
	defer w.in.mu.Unlock()
	return w.in.output.Write(p)
}

// writeConfig picks free ports and writes the configuration.
func (in *instance) writeConfig() {
	in.t.Helper()
	in.ports = map[string]int{}
	for _, l := range []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "https"} {
		in.ports[l] = freePort(in.t)
	}
	in.saveConfig()
}

// saveConfig writes the configuration with the ports already picked (after
// a change of extra, say).
func (in *instance) saveConfig() {
	in.t.Helper()
	var listen strings.Builder
	for _, l := range []string{"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "https"} {
		fmt.Fprintf(&listen, "%s = \"127.0.0.1:%d\"\n", l, in.ports[l])
	}
	size := "max_message_bytes = 1048576\n"
	if strings.Contains(in.top, "max_message_bytes") {
		size = "" // the scenario sets its own
	}
	conf := fmt.Sprintf("hostname = %q\ndata_dir = %q\n%slog_level = \"debug\"\n%s\n\n[listen]\n%s\n%s",
		in.name, filepath.Join(in.dir, "data"), size, in.top, listen.String(), in.extra)
	if err := os.WriteFile(in.config, []byte(conf), 0o600); err != nil {
		in.t.Fatal(err)
	}
}

// start runs `sigillo serve` and waits until its control socket answers.
// A port picked free may be taken by another test process before the
// server binds it: then the ports are picked again.
func (in *instance) start() {
	in.t.Helper()
	for try := 1; ; try++ {
		err := in.startOnce()
		if err == nil {
			return
		}
		in.mu.Lock()
		busy := strings.Contains(in.output.String(), "address already in use")
		in.mu.Unlock()
		if !busy || try == 3 {
			in.t.Fatal(err)
		}
		in.mu.Lock()
		in.output.Reset()
		in.mu.Unlock()
		in.t.Logf("%s: a port was taken meanwhile; picking new ports", in.name)
		in.writeConfig()
	}
}

func (in *instance) startOnce() error {
	in.t.Helper()
	bin := in.bin
	if bin == "" {
		bin = binary
	}
	in.cmd = exec.Command(bin, "serve", "--config", in.config)
	if len(in.serveEnv) > 0 {
		in.cmd.Env = append(os.Environ(), in.serveEnv...)
	}
	in.cmd.Stdout = lockedWriter{in}
	in.cmd.Stderr = lockedWriter{in}
	if err := in.cmd.Start(); err != nil {
		return err
	}
	in.exited = make(chan struct{})
	go func() {
		in.exitErr = in.cmd.Wait()
		close(in.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-in.exited:
			return fmt.Errorf("%s exited at start: %v", in.name, in.exitErr)
		default:
		}
		if _, err := in.try("", "domain", "list"); err == nil {
			if in.ca == "" {
				in.ca = filepath.Join(in.dir, "ca.pem")
				pem := in.cli("", "ca", "export")
				if err := os.WriteFile(in.ca, []byte(pem), 0o600); err != nil {
					return err
				}
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not start within 60 s", in.name)
}

// stop sends sig and waits for the process to end.
func (in *instance) stop(sig syscall.Signal) {
	if in.cmd == nil || in.cmd.Process == nil {
		return
	}
	select {
	case <-in.exited:
		return
	default:
	}
	in.cmd.Process.Signal(sig)
	select {
	case <-in.exited:
	case <-time.After(30 * time.Second):
		in.cmd.Process.Kill()
		<-in.exited
		in.t.Errorf("%s did not stop within 30 s of %v", in.name, sig)
	}
}

// tlsClient is a client TLS configuration that trusts the instance's
// exported root (`sigillo ca export`) and expects serverName.
func (in *instance) tlsClient(t testing.TB, serverName string) *tls.Config {
	t.Helper()
	pemBytes, err := os.ReadFile(in.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s: no certificate in %s", in.name, in.ca)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName}
}

func (in *instance) try(stdin string, args ...string) (string, error) {
	args = append(args, "--config", in.config)
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("sigillo %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (in *instance) cli(stdin string, args ...string) string {
	in.t.Helper()
	out, err := in.try(stdin, args...)
	if err != nil {
		in.t.Fatal(err)
	}
	return out
}

// python runs a scenario of testdata/clients.py against the instance.
func (in *instance) python(t testing.TB, scenario string, env ...string) string {
	t.Helper()
	out, err := in.tryPython(t, scenario, env...)
	if err != nil {
		t.Fatalf("scenario %s: %v\n%s", scenario, err, out)
	}
	return out
}

func (in *instance) tryPython(t testing.TB, scenario string, env ...string) (string, error) {
	py := need(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/clients.py", scenario)
	cmd.Env = append(os.Environ(), in.env()...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	t.Logf("scenario %s:\n%s", scenario, out)
	return string(out), err
}

func (in *instance) env() []string {
	e := []string{"CA=" + in.ca, "HOST=127.0.0.1", "MAX_BYTES=1048576"}
	for name, p := range in.ports {
		e = append(e, fmt.Sprintf("%s=%d", strings.ToUpper(name), p))
	}
	return e
}

// provision adds a domain and mailboxes with the command line.
func (in *instance) provision(domain string, mailboxes ...string) {
	in.t.Helper()
	in.cli("", "domain", "add", domain)
	for _, m := range mailboxes {
		in.cli("secret-"+m+"\n", "mailbox", "add", m, "--password-stdin")
	}
}

func password(mailbox string) string { return "secret-" + mailbox }

func TestMailClientsUseTheServer(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.provision("a.test", "alice@a.test", "bob@a.test")
	user := []string{"USER=alice@a.test", "PASSWORD=" + password("alice@a.test"), "OTHER=bob@a.test"}

	t.Run("send, read, flag, move, expunge, POP3", func(t *testing.T) { a.python(t, "mailflow", user...) })
	t.Run("IDLE wakes within 1 s", func(t *testing.T) { a.python(t, "idle", user...) })
	t.Run("POP3 download marks read", func(t *testing.T) { a.python(t, "pop3seen", user...) })
	t.Run("refusals", func(t *testing.T) { a.python(t, "refusals", user...) })
	t.Run("garbage lines", func(t *testing.T) { a.python(t, "garbage", user...) })
	t.Run("malformed MIME", func(t *testing.T) { a.python(t, "malformed", user...) })
	t.Run("curl", func(t *testing.T) {
		curl := need(t, "curl")
		msg := filepath.Join(t.TempDir(), "msg.eml")
		os.WriteFile(msg, []byte("From: alice@a.test\r\nTo: bob@a.test\r\nSubject: by curl\r\n\r\nsent with curl\r\n"), 0o600)
		run := func(args ...string) string {
			t.Helper()
			base := []string{"--silent", "--show-error", "--cacert", a.ca, "--user", "bob@a.test:" + password("bob@a.test")}
			out, err := exec.Command(curl, append(base, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("curl %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		base := []string{"--silent", "--show-error", "--cacert", a.ca, "--user", "alice@a.test:" + password("alice@a.test")}
		out, err := exec.Command(curl, append(base, fmt.Sprintf("smtps://127.0.0.1:%d", a.ports["submissions"]),
			"--mail-from", "alice@a.test", "--mail-rcpt", "bob@a.test", "--upload-file", msg)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl smtps: %v\n%s", err, out)
		}
		list := run(fmt.Sprintf("imaps://127.0.0.1:%d/INBOX", a.ports["imaps"]), "--request", "SEARCH SUBJECT \"by curl\"")
		if !strings.Contains(list, "SEARCH") || strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(list), "* SEARCH")) == "" {
			t.Fatalf("curl imaps SEARCH: %q", list)
		}
		uid := strings.Fields(list)[len(strings.Fields(list))-1]
		body := run(fmt.Sprintf("imaps://127.0.0.1:%d/INBOX;UID=%s", a.ports["imaps"], uid))
		if !strings.Contains(body, "sent with curl") {
			t.Fatalf("curl imaps fetch: %q", body)
		}
		pop := run(fmt.Sprintf("pop3s://127.0.0.1:%d/", a.ports["pop3s"]))
		if !strings.Contains(pop, "1 ") {
			t.Fatalf("curl pop3s LIST: %q", pop)
		}
		health, err := exec.Command(curl, "--silent", "--show-error", "--cacert", a.ca, fmt.Sprintf("https://127.0.0.1:%d/healthz", a.ports["https"])).CombinedOutput()
		if err != nil || !strings.Contains(string(health), `"leader":true`) {
			t.Fatalf("curl https /healthz: %v %s", err, health)
		}
		t.Logf("curl: sent by smtps, found UID %s by imaps, pop3s LIST %q", uid, strings.TrimSpace(pop))
	})
	t.Run("TLS on every port", func(t *testing.T) {
		pool := a.tlsClient(t, "").RootCAs
		for _, l := range []struct {
			name string
			alpn []string
		}{{"submissions", []string{"smtp"}}, {"imaps", []string{"imap"}}, {"pop3s", []string{"pop3"}}, {"https", []string{"h2"}}} {
			addr := fmt.Sprintf("127.0.0.1:%d", a.ports[l.name])
			c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "mail.a.test", NextProtos: l.alpn})
			if err != nil {
				t.Fatalf("%s: a client offering ALPN %v and trusting the exported root: %v", l.name, l.alpn, err)
			}
			c.Close()
			if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "mail.a.test", MaxVersion: tls.VersionTLS11}); err == nil {
				c.Close()
				t.Fatalf("%s accepted TLS 1.1", l.name)
			}
		}
	})
	t.Run("private files", func(t *testing.T) {
		for name, want := range map[string]os.FileMode{"data": 0o700, "data/sigillo.db": 0o600, "data/control.sock": 0o600, "data/raft/raft.db": 0o600} {
			fi, err := os.Stat(filepath.Join(a.dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
			}
		}
	})
	t.Run("command line errors", func(t *testing.T) {
		for _, c := range []struct {
			stdin string
			args  []string
			want  string
		}{
			{"", []string{"domain", "add", "a.test"}, "already exists"},
			{"", []string{"domain", "add", "not a domain"}, "invalid domain"},
			{"", []string{"domain", "remove", "a.test"}, "still has 2 mailboxes"},
			{"x\n", []string{"mailbox", "add", "carol@a.test", "--password-stdin"}, "password too short"},
			{"long enough pw\n", []string{"mailbox", "add", "carol@a.test"}, "--password-stdin"},
			{"long enough pw\n", []string{"mailbox", "add", "carol@nowhere.test", "--password-stdin"}, "not hosted here"},
			{"", []string{"mailbox", "remove", "nobody@a.test"}, "no mailbox"},
			{"", []string{"frobnicate"}, "unknown command"},
			{"", []string{"domain", "list", "--bogus"}, "flag provided but not defined"},
		} {
			out, err := a.try(c.stdin, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("sigillo %v: got %v (%q), want an error with %q", c.args, err, out, c.want)
			}
			if err != nil && strings.Count(strings.TrimSpace(err.Error()[strings.LastIndex(err.Error(), ": sigillo:")+1:]), "\n") > 0 && c.args[0] != "frobnicate" {
				t.Errorf("sigillo %v: error is more than one line: %v", c.args, err)
			}
		}
		if _, err := a.try("new password 1\n", "mailbox", "passwd", "bob@a.test", "--password-stdin"); err != nil {
			t.Fatal(err)
		}
		list, err := a.try("", "mailbox", "list", "a.test")
		if err != nil || !strings.Contains(list, "alice@a.test") || !strings.Contains(list, "bob@a.test") {
			t.Fatalf("mailbox list: %q", list)
		}
	})
}

func TestMailCrossesToASecondInstanceThroughRoutes(t *testing.T) {
	b := newInstance(t, "mail.b.test", "")
	b.start()
	b.provision("b.test", "bob@b.test")
	a := newInstance(t, "mail.a.test", fmt.Sprintf("[routes]\n\"b.test\" = \"127.0.0.1:%d\"\n", b.ports["smtp"]))
	a.start()
	a.provision("a.test", "alice@a.test")

	a.python(t, "send", "USER=alice@a.test", "PASSWORD="+password("alice@a.test"),
		"FROM=alice@a.test", "TO=bob@b.test", "SUBJECT=across the routes")
	b.python(t, "remote", "USER=bob@b.test", "PASSWORD="+password("bob@b.test"), "SUBJECT=across the routes", "WAIT=30")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var items []json.RawMessage
		out := a.cli("", "queue", "list", "--json")
		json.Unmarshal([]byte(out), &items)
		if len(items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue of a.test not empty after delivery: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestNothingIsLostAcrossRestarts(t *testing.T) {
	dead := freePort(t) // nothing listens there: mail for far.test stays queued
	a := newInstance(t, "mail.a.test", fmt.Sprintf("[routes]\n\"far.test\" = \"127.0.0.1:%d\"\n", dead))
	a.start()
	a.provision("a.test", "alice@a.test")
	user := []string{"USER=alice@a.test", "PASSWORD=" + password("alice@a.test")}
	for i := 0; i < 3; i++ {
		a.python(t, "send", append(user, "FROM=alice@a.test", "TO=alice@a.test", fmt.Sprintf("SUBJECT=local %d", i))...)
	}
	a.python(t, "send", append(user, "FROM=alice@a.test", "TO=carol@far.test", "SUBJECT=for far away")...)
	// Move one message to Archive so that two folders carry state.
	a.python(t, "mailflow_archive_one", user...)
	before := state(t, a, user)
	queueBefore := a.cli("", "queue", "list", "--json")
	if !strings.Contains(queueBefore, "carol@far.test") {
		t.Fatalf("remote message not queued: %s", queueBefore)
	}

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		a.stop(sig)
		a.start()
		after := state(t, a, user)
		if after != before {
			t.Fatalf("after %v: mailbox state changed\nbefore: %s\nafter:  %s", sig, before, after)
		}
		q := a.cli("", "queue", "list", "--json")
		if !strings.Contains(q, "carol@far.test") {
			t.Fatalf("after %v: queued message lost: %s", sig, q)
		}
		t.Logf("after %v: %s; queue still holds carol@far.test", sig, after)
	}
}

func state(t *testing.T, in *instance, user []string) string {
	t.Helper()
	out := in.python(t, "snapshot", user...)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "STATE ") {
			return l
		}
	}
	t.Fatalf("no state in %q", out)
	return ""
}

func TestAClientOverTheConnectionLimitIsToldAndOthersAreServed(t *testing.T) {
	a := newInstance(t, "mail.a.test", "", "max_connections_per_host = 3")
	a.start()
	for _, l := range []struct{ name, greeting, refusal string }{
		{"smtp", "220 ", "421 4.7.0"},
		{"imap", "* OK", "* BYE Too many connections"},
		{"pop3", "+OK", "-ERR [SYS/TEMP] Too many connections"},
	} {
		addr := fmt.Sprintf("127.0.0.1:%d", a.ports[l.name])
		read := func(c net.Conn) string {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			return line
		}
		var open []net.Conn
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if g := read(c); !strings.HasPrefix(g, l.greeting) {
				t.Fatalf("%s connection %d greeted %q", l.name, i+1, g)
			}
			open = append(open, c)
		}
		over, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := read(over); !strings.HasPrefix(got, l.refusal) {
			t.Fatalf("%s: fourth connection got %q, want %q", l.name, got, l.refusal)
		}
		over.Close()
		open[0].Close()
		// The server notices the close when it reads EOF; give it a moment.
		var g string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			again, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			g = read(again)
			again.Close()
			if strings.HasPrefix(g, l.greeting) {
				break
			}
		}
		if !strings.HasPrefix(g, l.greeting) {
			t.Fatalf("%s: after one closed, a new connection got %q", l.name, g)
		}
		for _, c := range open[1:] {
			c.Close()
		}
		t.Logf("%s: 3 connections served, the 4th told %q, a freed slot reused", l.name, l.refusal)
	}
}

// TestEveryAcknowledgedMessageSurvivesKill9 kills the server while four
// clients are sending and checks, after a restart, that every message
// that got its 250 is in the mailbox: acknowledged means committed.
func TestEveryAcknowledgedMessageSurvivesKill9(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	addr := fmt.Sprintf("127.0.0.1:%d", a.ports["submissions"])

	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.Dial("tcp", addr, tlsConf)
			if err != nil {
				return
			}
			c, err := smtp.NewClient(conn, "mail.a.test")
			if err != nil {
				return
			}
			defer c.Close()
			if c.Auth(smtp.PlainAuth("", "alice@a.test", password("alice@a.test"), "mail.a.test")) != nil {
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				subject := fmt.Sprintf("w%d-%d", w, i)
				if sendOne(c, "alice@a.test", "alice@a.test", []byte("From: alice@a.test\r\nTo: alice@a.test\r\nSubject: "+subject+"\r\n\r\nx\r\n")) != nil {
					return // the server died mid-transaction: not acknowledged
				}
				mu.Lock()
				acked = append(acked, subject)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	a.stop(syscall.SIGKILL)
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 50 {
		t.Fatalf("only %d messages acknowledged before the kill; the test needs traffic", n)
	}

	a.start()
	c, err := imapclient.DialTLS(fmt.Sprintf("127.0.0.1:%d", a.ports["imaps"]), &imapclient.Options{TLSConfig: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@a.test", password("alice@a.test")).Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	var all imap.SeqSet
	all.AddRange(1, 0)
	msgs, err := c.Fetch(all, &imap.FetchOptions{Envelope: true, UID: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, m := range msgs {
		stored[m.Envelope.Subject] = true
	}
	for _, s := range acked {
		if !stored[s] {
			t.Errorf("message %s was acknowledged with 250 but is gone after kill -9", s)
		}
	}
	t.Logf("%d messages acknowledged before kill -9; %d in the INBOX after restart (the difference was in flight, unacknowledged)", n, sel.NumMessages)
}

// TestAFullDiskMakesSendersWaitAndLosesNothing puts the data directory on a
// small tmpfs, sends until the server refuses, and checks the refusal is
// temporary, every acknowledged message is there, and mail flows again once
// there is room, without a restart.
func TestAFullDiskMakesSendersWaitAndLosesNothing(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	data := filepath.Join(a.dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", data).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot mount a tmpfs for the full-disk test: %v %s", err, out)
		}
		t.Skipf("SKIPPING: cannot mount a tmpfs (%v %s); this test did not run", err, out)
	}
	t.Cleanup(func() {
		a.stop(syscall.SIGKILL)
		exec.Command("umount", "-l", data).Run()
	})
	a.start()
	a.provision("a.test", "alice@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	body := bytes.Repeat([]byte(strings.Repeat("y", 998)+"\r\n"), 200) // 200 kB

	send := func(subject string) error {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", a.ports["submissions"]), tlsConf)
		if err != nil {
			return err
		}
		c, err := smtp.NewClient(conn, "mail.a.test")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Auth(smtp.PlainAuth("", "alice@a.test", password("alice@a.test"), "mail.a.test")); err != nil {
			return err
		}
		return sendOne(c, "alice@a.test", "alice@a.test", append([]byte("Subject: "+subject+"\r\n\r\n"), body...))
	}
	acked := 0
	var refusal error
	for i := 0; i < 200 && refusal == nil; i++ {
		if refusal = send(fmt.Sprintf("fill %d", i)); refusal == nil {
			acked++
		}
	}
	if refusal == nil {
		t.Fatal("a 12 MB disk took 40 MB of mail")
	}
	if !strings.HasPrefix(refusal.Error(), "452") && !strings.HasPrefix(refusal.Error(), "451") {
		t.Fatalf("after %d messages the refusal was %q, want a temporary 452/451", acked, refusal)
	}
	count := func() uint32 {
		t.Helper()
		c, err := imapclient.DialTLS(fmt.Sprintf("127.0.0.1:%d", a.ports["imaps"]), &imapclient.Options{TLSConfig: tlsConf})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("alice@a.test", password("alice@a.test")).Wait(); err != nil {
			t.Fatal(err)
		}
		st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return *st.NumMessages
	}
	if n := count(); n != uint32(acked) {
		t.Fatalf("%d messages acknowledged, %d in the INBOX", acked, n)
	}
	// Room again (the admin grew the volume): mail flows without a restart.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", data).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = send("after the disk grew"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("still refused after the disk grew: %v", err)
	}
	if n := count(); n != uint32(acked+1) {
		t.Fatalf("%d in the INBOX, want %d", n, acked+1)
	}
	t.Logf("12 MB data disk: %d messages of 200 kB acknowledged, then %q; all %d readable; accepted again after growing the disk", acked, refusal, acked)
}

// TestPecVerifyJudgesRealGestoriMessages runs `sigillo pec verify` on the
// shared samples of real PEC traffic (never copied into the project).
func TestPecVerifyJudgesRealGestoriMessages(t *testing.T) {
	dir := os.Getenv("SIGILLO_PEC_SAMPLES")
	if dir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("SIGILLO_PEC_SAMPLES is not set; CI must run this test")
		}
		t.Skip("SKIPPING: SIGILLO_PEC_SAMPLES is not set; this test did not run")
	}
	want := map[string][2]string{ // file: kind, signature
		"OCA_l10n-italy__message1":              {"posta-certificata", "valid"},
		"OCA_l10n-italy__message2":              {"posta-certificata", "valid"},
		"OCA_l10n-italy__message2_accettazione": {"accettazione", "valid"},
		"OCA_l10n-italy__message2_consegna":     {"avvenuta-consegna", "valid"},
		"linux-mailinglist-archives_osst-users.lists.sourceforge.net.0__6919bccf_m.signed-part.eml": {"posta-certificata", "valid"},
		"agenziaentrateriscossione_docway-msa__partNull.eml":                                        {"posta-certificata", "invalid"},
		"danzipie_go-pec__accettazione.eml":                                                         {"accettazione", "invalid"},
		"danzipie_go-pec__consegna.eml":                                                             {"errore-consegna", "invalid"},
	}
	var files []string
	for f := range want {
		files = append(files, filepath.Join(dir, f))
	}
	cmd := exec.Command(binary, append([]string{"pec", "verify"}, files...)...)
	out, err := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit code %d (%v), want 1 with negative cases among the files", code, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d JSON lines for %d files:\n%s", len(lines), len(files), out)
	}
	for _, l := range lines {
		var r struct {
			File, Kind, Signature string
			Daticert              struct{ Tipo string }
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		w := want[filepath.Base(r.File)]
		if r.Kind != w[0] || r.Signature != w[1] {
			t.Errorf("%s: kind %q signature %q, want %q %q", filepath.Base(r.File), r.Kind, r.Signature, w[0], w[1])
		}
	}
	// Only valid files: exit 0.
	valid := exec.Command(binary, "pec", "verify", filepath.Join(dir, "OCA_l10n-italy__message2_accettazione"),
		"--roots", filepath.Join(dir, "OCA_l10n-italy__aruba-2014-signer-chain.pem"))
	if out, err := valid.Output(); err != nil {
		t.Fatalf("valid file with its roots: %v %s", err, out)
	}
}

// TestAStalePasswordDoesNotLockOutOthersOnTheSameAddress: a phone retrying
// an old password over several connections, giving up on slow answers,
// must not keep another user behind the same address from logging in.
func TestAStalePasswordDoesNotLockOutOthersOnTheSameAddress(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.provision("a.test", "alice@a.test", "bob@a.test")
	tlsConf := a.tlsClient(t, "mail.a.test")
	addr := fmt.Sprintf("127.0.0.1:%d", a.ports["submissions"])
	login := func(user, pw string, timeout time.Duration) error {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, tlsConf)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		c, err := smtp.NewClient(conn, "mail.a.test")
		if err != nil {
			return err
		}
		return c.Auth(smtp.PlainAuth("", user, pw, "mail.a.test"))
	}
	var wg sync.WaitGroup
	deadline := time.Now().Add(8 * time.Second)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				login("bob@a.test", "the old password", 2*time.Second) // gives up after 2 s
			}
		}()
	}
	wg.Wait()
	start := time.Now()
	if err := login("alice@a.test", password("alice@a.test"), 60*time.Second); err != nil {
		t.Fatalf("alice, right after bob's stale client: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("alice waited %v to log in behind bob's stale client", took)
	} else {
		t.Logf("8 s of a stale password on 4 connections; then alice logged in in %v", took.Round(time.Millisecond))
	}
}

// TestGestoreInitMakesTheKeyInTheTokenAndShowsItsCertificate drives
// `sigillo gestore init` and `gestore cert` against a real SoftHSM2 token,
// and checks the certificate with openssl.
func TestGestoreInitMakesTheKeyInTheTokenAndShowsItsCertificate(t *testing.T) {
	openssl := need(t, "openssl")
	dir := t.TempDir()
	module, pins := softhsmTokens(t, dir, "sigillo")
	pinFile := pins["sigillo"]

	a := newInstance(t, "mail.a.test", fmt.Sprintf("[signer]\npkcs11_module = %q\ntoken_label = \"sigillo\"\npin_file = %q\nkey_label = \"gestore\"\n[pec]\nprovider_name = \"Example PEC S.p.A.\"\n", module, pinFile))
	first := a.cli("", "gestore", "init")
	if !strings.Contains(first, "posta-certificata@mail.a.test") {
		t.Fatalf("gestore init: %q", first)
	}
	if again := a.cli("", "gestore", "init"); again != first {
		t.Fatalf("a second init changed the certificate:\n%s%s", first, again)
	}
	pemOut := a.cli("", "gestore", "cert")
	certFile := filepath.Join(dir, "gestore.pem")
	os.WriteFile(certFile, []byte(pemOut), 0o600)
	text, err := exec.Command(openssl, "x509", "-in", certFile, "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v %s", err, text)
	}
	for _, want := range []string{"email:posta-certificata@mail.a.test", "Digital Signature, Non Repudiation", "E-mail Protection", "Example PEC S.p.A."} {
		if !strings.Contains(string(text), want) {
			t.Errorf("certificate lacks %q:\n%s", want, text)
		}
	}
	t.Logf("gestore init: %s", strings.TrimSpace(first))

	// Its directory entry, exported and imported by another installation:
	// that is how two gestori come to trust each other.
	a.start()
	a.cli("", "domain", "add", "a.test", "--pec")
	a.cli("", "domain", "add", "plain.test")
	if _, err := a.try("", "directory", "export"); err != nil {
		t.Fatalf("directory export: %v", err)
	}
	entry := a.cli("", "directory", "export")
	ps, err := pecdir.ParseLDIF(strings.NewReader(entry))
	if err != nil || len(ps) != 1 || strings.Join(ps[0].ManagedDomains, ",") != "a.test,mail.a.test" || ps[0].MailReceipt != "posta-certificata@mail.a.test" {
		t.Fatalf("exported entry %+v, %v:\n%s", ps, err, entry)
	}
	other := newInstance(t, "mail.b.test", "")
	other.start()
	entryFile := filepath.Join(dir, "a.ldif")
	os.WriteFile(entryFile, []byte(entry), 0o600)
	other.cli("", "directory", "import", entryFile)
	if list := other.cli("", "directory", "list"); !strings.Contains(list, "Example PEC S.p.A.") || !strings.Contains(list, "a.test") {
		t.Fatalf("B's directory after importing A's entry:\n%s", list)
	}
	a.stop(syscall.SIGTERM)

	// A wrong PIN and a missing [signer] are one clear line each.
	os.WriteFile(pinFile, []byte("9999\n"), 0o600)
	if _, err := a.try("", "gestore", "cert"); err == nil {
		t.Fatal("a wrong PIN was accepted")
	} else {
		t.Logf("wrong PIN: %v", err)
	}
	bare := newInstance(t, "mail.b.test", "")
	if _, err := bare.try("", "gestore", "init"); err == nil || !strings.Contains(err.Error(), "no [signer]") {
		t.Fatalf("without [signer]: %v", err)
	}
}

// TestTheProvidersDirectoryIsImportedListedAndKept loads an LDIF trust list
// through the command line, refuses a broken one whole, and keeps the
// directory across a restart.
func TestTheProvidersDirectoryIsImportedListedAndKept(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	ldif, err := filepath.Abs("appliance/pecdir/testdata/indice.ldif")
	if err != nil {
		t.Fatal(err)
	}
	out := a.cli("", "directory", "import", ldif)
	if !strings.Contains(out, "imported") {
		t.Fatalf("import: %q", out)
	}
	list := func() []appliance.ProviderInfo {
		t.Helper()
		var ps []appliance.ProviderInfo
		if err := json.Unmarshal([]byte(a.cli("", "directory", "list", "--json")), &ps); err != nil {
			t.Fatal(err)
		}
		return ps
	}
	before := list()
	if len(before) == 0 || len(before[0].ManagedDomains) == 0 || before[0].MailReceipt == "" {
		t.Fatalf("directory after import: %+v", before)
	}
	// The same file again replaces, it does not duplicate.
	a.cli("", "directory", "import", ldif)
	if again := list(); len(again) != len(before) {
		t.Fatalf("a second import made %d entries from %d", len(again), len(before))
	}
	// A broken file is refused whole, with the line at fault.
	broken := filepath.Join(t.TempDir(), "broken.ldif")
	os.WriteFile(broken, []byte("dn: cn=x\nproviderName: X\n mailReceipt:: !!!notbase64\n"), 0o600)
	if _, err := a.try("", "directory", "import", broken); err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("broken LDIF: %v", err)
	}
	a.stop(syscall.SIGTERM)
	a.start()
	if after := list(); len(after) != len(before) {
		t.Fatalf("after a restart %d providers, want %d", len(after), len(before))
	}
	t.Logf("%d providers imported, listed, kept across a restart; %s", len(before), strings.TrimSpace(out))
}
