package main

// A newcomer's first hour (issue 10, item 12), through the real binary:
// the README's configuration and commands run as copied, and the command
// line answers sizes, passwords, unknown domains, internationalised names,
// a socket it may not use and its own --help the way a newcomer expects.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"sigillo/appliance"
	"sigillo/appliance/cli"
	"sigillo/appliance/config"
)

// readmeSection is the text under a "## " heading of README.md, up to the
// next one.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("README.md has no section %q", heading)
	}
	text = text[start+len(heading)+5:]
	if end := strings.Index(text, "\n## "); end >= 0 {
		text = text[:end]
	}
	return text
}

// codeBlocks are the fenced blocks of a README section in a language.
func codeBlocks(section, lang string) []string {
	var blocks []string
	for rest := section; ; {
		i := strings.Index(rest, "```"+lang+"\n")
		if i < 0 {
			return blocks
		}
		rest = rest[i+len(lang)+4:]
		j := strings.Index(rest, "```")
		if j < 0 {
			return blocks
		}
		blocks = append(blocks, rest[:j])
		rest = rest[j+3:]
	}
}

// waitListening dials addr until it accepts or 10 s have passed.
func waitListening(t *testing.T, name, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("listener %s on %s: %v", name, addr, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestTheREADMEConfigurationStartsAsCopied(t *testing.T) {
	blocks := codeBlocks(readmeSection(t, "Configuration"), "toml")
	if len(blocks) == 0 {
		t.Fatal("README's Configuration has no TOML block")
	}
	// The first block as copied, with only where it keeps its data and
	// where it listens moved to a temporary directory and free ports. (The
	// optional tables, which need a token, a clamd, DNS, follow it.)
	var conf map[string]any
	if _, err := toml.Decode(blocks[0], &conf); err != nil {
		t.Fatalf("README's first TOML block: %v", err)
	}
	listen, ok := conf["listen"].(map[string]any)
	if _, hasDir := conf["data_dir"]; !ok || !hasDir {
		t.Fatalf("README's first TOML block has no data_dir or no [listen]: the test cannot keep it off /var/lib/sigillo and the standard ports")
	}
	in := newInstance(t, "readme", "")
	conf["data_dir"] = filepath.Join(in.dir, "data")
	in.ports = map[string]int{}
	for name, v := range listen {
		if v == "" {
			continue
		}
		in.ports[name] = freePort(t)
		listen[name] = fmt.Sprintf("127.0.0.1:%d", in.ports[name])
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(conf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in.config, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.startOnce(); err != nil {
		t.Fatalf("README's first TOML block does not start: %v", err)
	}
	for name, port := range in.ports {
		if name == "http" {
			continue // opened only for [acme] challenge = "http-01"
		}
		waitListening(t, name, fmt.Sprintf("127.0.0.1:%d", port))
	}
	if len(in.ports) < 8 {
		t.Errorf("README's first block listens on %d ports, want the 8 services and http", len(in.ports))
	}

	// The whole example, optional tables too, is a configuration the
	// server reads: every key known, every value accepted.
	whole := filepath.Join(t.TempDir(), "whole.toml")
	if err := os.WriteFile(whole, []byte(strings.Join(blocks, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(whole)
	if err != nil {
		t.Fatalf("README's configuration, every block together: %v", err)
	}
	if cfg.Scan.Clamd == "" || cfg.ACME == nil || cfg.Signer.PinFile == "" || len(cfg.Routes) == 0 {
		t.Errorf("README's optional tables lost a table: %+v", cfg)
	}
	t.Logf("README's first block started, %d listeners; all %d blocks load", len(in.ports), len(blocks))
}

func TestTheREADMEFirstMailboxAndClientChecksRunAsCopied(t *testing.T) {
	bash := need(t, "bash")
	need(t, "curl")
	need(t, "python3")

	// The ports in the README's table are the embedded default's.
	def := config.Default().Listen.Map()
	var defaultPorts, tablePorts []string
	for _, addr := range def {
		if addr != "" {
			_, p, _ := net.SplitHostPort(addr)
			defaultPorts = append(defaultPorts, p)
		}
	}
	connecting := readmeSection(t, "Connecting a mail client")
	for _, line := range strings.Split(connecting, "\n") {
		if strings.HasPrefix(line, "|") {
			tablePorts = append(tablePorts, regexp.MustCompile(`\b\d{4}\b`).FindAllString(line, -1)...)
		}
	}
	slices.Sort(defaultPorts)
	slices.Sort(tablePorts)
	if !slices.Equal(defaultPorts, tablePorts) {
		t.Errorf("README's port table lists %v, the embedded default listens on %v", tablePorts, defaultPorts)
	}

	// The commands run as after `make run`: in a directory holding
	// ./bin/sigillo and the server's data as ./sigillo-data, without
	// --config; only the ports are the instance's free ones.
	in := newInstance(t, "localhost", "")
	in.start()
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binary, filepath.Join(work, "bin", "sigillo")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(in.dir, "data"), filepath.Join(work, "sigillo-data")); err != nil {
		t.Fatal(err)
	}
	first := codeBlocks(readmeSection(t, "First mailbox"), "sh")
	checks := codeBlocks(connecting, "sh")
	if len(first) != 1 || len(checks) != 1 {
		t.Fatalf("README: %d shell blocks in First mailbox, %d in Connecting a mail client; want one each", len(first), len(checks))
	}
	script := first[0] + checks[0]
	for name, addr := range def {
		if addr == "" {
			continue
		}
		_, p, _ := net.SplitHostPort(addr)
		script = regexp.MustCompile(`\b`+p+`\b`).ReplaceAllString(script, strconv.Itoa(in.ports[name]))
	}
	cmd := exec.Command(bash, "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = work
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("the README's commands:\n%s\nprinted:\n%s\nstderr:\n%s", script, stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("the README's commands failed: %v", err)
	}
	for _, want := range []string{"domain example.test added", "mailbox alice@example.test added", "INBOX", "Logged in"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the README's commands did not print %q", want)
		}
	}
	if pem, err := os.ReadFile(filepath.Join(work, "sigillo-ca.pem")); err != nil || !bytes.HasPrefix(pem, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("sigillo-ca.pem: %v, %.40q", err, pem)
	}
}

// ptyPassword runs `sigillo mailbox add` on a terminal and types the
// password at both prompts: what a newcomer does without --password-stdin.
const ptyPassword = `
import os, pty, sys
argv, password = sys.argv[1:-1], sys.argv[-1].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
def until(s):
    global out
    while s not in out:
        chunk = os.read(fd, 1024)
        if not chunk:
            raise SystemExit("prompt %r never came: %r" % (s, out))
        out += chunk
until(b"characters): ")
os.write(fd, password + b"\n")
until(b"again: ")
os.write(fd, password + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`

// imapCheck sends one message over inbound SMTP (STARTTLS) to the mailbox
// and logs in over IMAPS, printing how many messages its INBOX holds.
const imapCheck = `
import imaplib, os, smtplib, ssl, sys
user, password = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=os.environ["CA"])
with smtplib.SMTP("127.0.0.1", int(os.environ["SMTP"])) as s:
    s.starttls(context=ctx)
    s.sendmail("someone@elsewhere.test", [user], b"Subject: hello\r\n\r\nhello\r\n")
m = imaplib.IMAP4_SSL("127.0.0.1", int(os.environ["IMAPS"]), ssl_context=ctx)
m.login(user, password)
typ, data = m.select("INBOX")
print("EXISTS", data[0].decode())
m.logout()
`

func TestTheCommandLineAnswersANewcomer(t *testing.T) {
	in := newInstance(t, "mail.newcomer.test", "")
	in.start()
	// Everything the command line prints, checked for "1 mailboxes" at the end.
	var printed strings.Builder
	ok := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out := in.cli(stdin, args...)
		printed.WriteString(out)
		return out
	}
	fails := func(t *testing.T, stdin, want string, args ...string) string {
		t.Helper()
		out, err := in.try(stdin, args...)
		if err == nil {
			t.Fatalf("sigillo %v succeeded (%q), want an error with %q", args, out, want)
		}
		msg := err.Error()[strings.LastIndex(err.Error(), ": sigillo: ")+2:]
		printed.WriteString(msg + "\n")
		if !strings.Contains(msg, want) || strings.Contains(strings.TrimSpace(msg), "\n") {
			t.Errorf("sigillo %v: %q, want one line with %q", args, msg, want)
		}
		return msg
	}
	ok(t, "", "domain", "add", "example.test")

	t.Run("quotas as administrators type them", func(t *testing.T) {
		sizes := map[string]int64{"1k": 1 << 10, "500m": 500 << 20, "1T": 1 << 40, "1.5G": 1610612736, "2 GiB": 2 << 30, "64KB": 64 << 10, "0": 0}
		want := map[string]int64{}
		for size, n := range sizes {
			addr := fmt.Sprintf("q%d@example.test", n)
			ok(t, "a long password\n", "mailbox", "add", addr, "--password-stdin", "--quota", size)
			want[addr] = n
		}
		var list []appliance.MailboxInfo
		if err := json.Unmarshal([]byte(ok(t, "", "mailbox", "list", "example.test", "--json")), &list); err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if m.QuotaBytes != want[m.Address] {
				t.Errorf("%s: quota %d, want %d", m.Address, m.QuotaBytes, want[m.Address])
			}
		}
		table := ok(t, "", "mailbox", "list", "example.test")
		for addr, shown := range map[string]string{"q1024@": "1K", "q524288000@": "500M", "q1099511627776@": "1T", "q1610612736@": "1.5G", "q2147483648@": "2G", "q0@": "unlimited"} {
			if !regexp.MustCompile(`(?m)^` + addr + `example\.test +\S+ +` + regexp.QuoteMeta(shown) + `$`).MatchString(table) {
				t.Errorf("mailbox list does not show %s's quota as %s:\n%s", addr, shown, table)
			}
		}
		for _, bad := range []string{"1x", "-1", "1,5G", "1.5.5G", "99999999T"} {
			fails(t, "a long password\n", `quota "`+bad+`"`, "mailbox", "add", "bad@example.test", "--password-stdin", "--quota", bad)
		}
		fails(t, "", "--quota needs a value", "mailbox", "add", "bad@example.test", "--quota", "--password-stdin")
	})

	t.Run("the password minimum is 8 characters, and said", func(t *testing.T) {
		fails(t, "1234567\n", "at least 8", "mailbox", "add", "p@example.test", "--password-stdin")
		fails(t, "ééééééé\n", "password too short (7 characters): use at least 8", "mailbox", "add", "p@example.test", "--password-stdin")
		fails(t, "", "no password on standard input", "mailbox", "add", "p@example.test", "--password-stdin")
		fails(t, "a long password\n", "--password-stdin", "mailbox", "add", "p@example.test")
		ok(t, "éééééééé\n", "mailbox", "add", "p@example.test", "--password-stdin")
		if help := ok(t, "", "help", "mailbox"); !strings.Contains(help, "at least 8 characters") {
			t.Errorf("sigillo help mailbox does not say the password minimum:\n%s", help)
		}
		if !strings.Contains(readmeSection(t, "Command line"), "at least 8 characters") {
			t.Error("README's Command line does not say the password minimum")
		}

		// On a terminal the password is asked twice, not echoed, and works.
		py := need(t, "python3")
		cmd := exec.Command(py, "-c", ptyPassword, binary, "mailbox", "add", "tty@example.test", "--config", in.config, "typed at a terminal")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "mailbox tty@example.test added") || strings.Contains(string(out), "typed at a terminal") {
			t.Fatalf("mailbox add on a terminal: %v\n%s", err, out)
		}
		check := exec.Command(py, "-c", imapCheck, "tty@example.test", "typed at a terminal")
		check.Env = append(os.Environ(), in.env()...)
		if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "EXISTS 1") {
			t.Fatalf("login with the password typed at the terminal: %v\n%s", err, out)
		}
	})

	t.Run("mailbox list of an unknown domain fails", func(t *testing.T) {
		fails(t, "", "no domain nosuch.test", "mailbox", "list", "nosuch.test")
		fails(t, "", "no domain nosuch.test", "mailbox", "list", "nosuch.test", "--json")
	})

	t.Run("internationalised domains are hosted in their xn-- form", func(t *testing.T) {
		if out := ok(t, "", "domain", "add", "Bücher.test"); out != "domain xn--bcher-kva.test (bücher.test) added\n" {
			t.Errorf("domain add: %q", out)
		}
		if out := ok(t, "anna's password\n", "mailbox", "add", "anna@BÜCHER.test", "--password-stdin"); out != "mailbox anna@xn--bcher-kva.test (anna@bücher.test) added\n" {
			t.Errorf("mailbox add: %q", out)
		}
		if out := ok(t, "", "domain", "list"); !regexp.MustCompile(`(?m)^xn--bcher-kva\.test \(bücher\.test\) +mail +1 `).MatchString(out) {
			t.Errorf("domain list does not show both forms:\n%s", out)
		}
		if out := ok(t, "", "mailbox", "list", "bücher.test"); !strings.Contains(out, "anna@xn--bcher-kva.test (anna@bücher.test)") {
			t.Errorf("mailbox list bücher.test:\n%s", out)
		}
		fails(t, "", "not a valid internationalised name", "domain", "add", "xn--zz.test")
		fails(t, "a long password\n", "SMTPUTF8", "mailbox", "add", "jörg@bücher.test", "--password-stdin")

		// Mail comes to the A-label address over SMTP and is read over IMAP.
		check := exec.Command(need(t, "python3"), "-c", imapCheck, "anna@xn--bcher-kva.test", "anna's password")
		check.Env = append(os.Environ(), in.env()...)
		if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "EXISTS 1") {
			t.Fatalf("SMTP to anna@xn--bcher-kva.test, IMAP as her: %v\n%s", err, out)
		}
		// A U-label in RCPT without SMTPUTF8 is refused cleanly, and the
		// session goes on.
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.ports["smtp"]))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "EHLO client.test\r\nMAIL FROM:<someone@elsewhere.test>\r\nRCPT TO:<anna@bücher.test>\r\nRCPT TO:<anna@xn--bcher-kva.test>\r\nQUIT\r\n")
		all, _ := io.ReadAll(c)
		if !regexp.MustCompile(`\r\n5\d\d [^\r]*bücher[^\r]*\r\n250 [^\r]*xn--bcher-kva[^\r]*\r\n221 `).Match(all) {
			t.Errorf("RCPT of a U-label address, then of its A-label form:\n%s", all)
		}
	})

	t.Run("plurals", func(t *testing.T) {
		ok(t, "", "domain", "add", "solo.test")
		ok(t, "a long password\n", "mailbox", "add", "only@solo.test", "--password-stdin")
		fails(t, "", "domain solo.test still has 1 mailbox: remove it first", "domain", "remove", "solo.test")
		if out := ok(t, "", "domain", "list"); !regexp.MustCompile(`(?m)^solo\.test +mail +1 `).MatchString(out) {
			t.Errorf("domain list:\n%s", out)
		}
		ok(t, "", "scan", "status")
		ok(t, "", "log", "verify")
		ok(t, "", "mailbox", "remove", "only@solo.test")
		ok(t, "", "domain", "remove", "solo.test")
	})

	t.Run("a PEC domain without a gestore is warned about", func(t *testing.T) {
		cmd := exec.Command(binary, "domain", "add", "pec.newcomer.test", "--pec", "--config", in.config)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stdout.String() != "PEC domain pec.newcomer.test added\n" ||
			!strings.Contains(stderr.String(), "warning: no PEC gestore runs on this server") {
			t.Errorf("domain add --pec without [signer]: %v, %q, %q", err, stdout.String(), stderr.String())
		}
	})

	t.Run("help, usage and --config before the command", func(t *testing.T) {
		for _, cmd := range []string{"domain", "mailbox", "queue", "log", "ca"} {
			out := ok(t, "", cmd, "--help")
			if !strings.Contains(out, "sigillo "+cmd+" ") || strings.Contains(out, "sigillo serve") {
				t.Errorf("sigillo %s --help:\n%s", cmd, out)
			}
		}
		if out, err := exec.Command(binary, "--config", in.config, "domain", "list").CombinedOutput(); err != nil || !strings.Contains(string(out), "example.test") {
			t.Errorf("sigillo --config FILE domain list: %v\n%s", err, out)
		}
		// Usage, not the development token, for `directory` alone.
		cmd := exec.Command(binary, "directory")
		cmd.Dir = t.TempDir()
		if out, _ := cmd.CombinedOutput(); !strings.Contains(string(out), "usage: sigillo directory") {
			t.Errorf("sigillo directory: %s", out)
		}
		// Every command of the README's Command line is in sigillo help.
		help := ok(t, "", "help")
		for _, line := range strings.Split(readmeSection(t, "Command line"), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "sigillo" && !regexp.MustCompile(`sigillo `+f[1]+`( |\n)`).MatchString(help) {
				t.Errorf("README lists %q, sigillo help does not", "sigillo "+f[1])
			}
		}
		// The banner's examples run as printed: this binary, this --config.
		in.mu.Lock()
		banner := in.output.String()
		in.mu.Unlock()
		if want := cli.CommandLine(binary, in.config) + " domain add example.test"; !strings.Contains(banner, want) {
			t.Errorf("the start-up banner does not say %q:\n%s", want, banner)
		}
	})

	t.Run("a user without the right to the socket is told so", func(t *testing.T) {
		socket := filepath.Join(in.dir, "data", "control.sock")
		run := func(args ...string) (string, error) {
			if os.Geteuid() != 0 {
				// Not root: the owner is refused a socket of mode 000.
				os.Chmod(socket, 0)
				defer os.Chmod(socket, 0o600)
				return in.try("", args...)
			}
			// Root: run as nobody, with a copy of the binary and of the
			// configuration that nobody can read (the data directory
			// stays 0700, as the server made it).
			pub, err := os.MkdirTemp("", "sigillo-public-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(pub)
			os.Chmod(pub, 0o755)
			bin, conf := filepath.Join(pub, "sigillo"), filepath.Join(pub, "sigillo.toml")
			for src, dst := range map[string]string{binary: bin, in.config: conf} {
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dst, b, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(bin, append(args, "--config", conf)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
			}
			return stdout.String(), nil
		}
		for _, args := range [][]string{{"domain", "list"}, {"mailbox", "list", "example.test"}, {"log", "search"}} {
			out, err := run(args...)
			if err == nil || !strings.Contains(err.Error(), "permission denied on the control socket "+socket) ||
				!strings.Contains(err.Error(), "as root") || strings.Contains(err.Error(), "no running server") {
				t.Errorf("sigillo %v without the right to the socket: %v (%q)", args, err, out)
			}
		}
		// Whereas with no server running, that is what is said.
		in.stop(syscall.SIGTERM)
		fails(t, "", "no running server at "+socket, "domain", "list")
	})

	if m := regexp.MustCompile(`\b1 (mailboxes|domains|messages|entries|providers|users|signed heads|problems|characters)\b`).FindString(printed.String()); m != "" {
		t.Errorf("the command line printed %q:\n%s", m, printed.String())
	}
}
