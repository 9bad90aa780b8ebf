package main

// `sigillo bench` against a running Sigillo: every scenario completes with
// no error, from the built binary (as the comparison scripts run it) and
// in-process (so that -race watches the load generator's goroutines).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance/loadgen"
)

// benchLine is what the smoke tests read of one --json line.
type benchLine struct {
	Scenario    string  `json:"scenario"`
	Server      string  `json:"server"`
	OpsPerS     float64 `json:"ops_per_s"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	Errors      int64   `json:"errors"`
	Count       int64   `json:"count"`
	DurationS   float64 `json:"duration_s"`
	Interrupted bool    `json:"interrupted"`
	FirstErrors []string
	Error       string
	Ops         []struct {
		Op     string `json:"op"`
		Count  int64  `json:"count"`
		Errors int64  `json:"errors"`
	} `json:"ops"`
}

// bench runs the binary's bench command and returns its JSON lines,
// failing the test on a non-zero exit.
func bench(t *testing.T, args ...string) []benchLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"bench", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("sigillo bench %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("sigillo bench: %v\n%s", err, stderr.String())
	}
	return parseBench(t, stdout.String())
}

func parseBench(t *testing.T, out string) []benchLine {
	t.Helper()
	var lines []benchLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var b benchLine
		if err := json.Unmarshal([]byte(l), &b); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		lines = append(lines, b)
	}
	return lines
}

// checkBench asserts each scenario ran count operations, all of them
// successful.
func checkBench(t *testing.T, lines []benchLine, server string, count int64, scenarios ...string) {
	t.Helper()
	if len(lines) != len(scenarios) {
		t.Fatalf("%d result lines, want %d (%v)", len(lines), len(scenarios), scenarios)
	}
	for i, l := range lines {
		if l.Scenario != scenarios[i] || l.Server != server {
			t.Errorf("line %d is %s/%s, want %s/%s", i, l.Scenario, l.Server, scenarios[i], server)
		}
		if l.Errors != 0 || l.Error != "" || l.OpsPerS <= 0 || l.Count != count || l.DurationS <= 0 || l.P50 <= 0 && l.P99 <= 0 {
			t.Errorf("%s: %+v; want %d operations, no error", l.Scenario, l, count)
		}
	}
}

func TestLoadgenSmokeAgainstSigillo(t *testing.T) {
	in := newInstance(t, "mail.bench.test", "")
	in.start()
	users := []string{"bench1@bench.test", "bench2@bench.test"}
	in.provision("bench.test", users...)
	usersFile := filepath.Join(t.TempDir(), "users")
	var uf strings.Builder
	for _, u := range users {
		fmt.Fprintf(&uf, "%s %s\n", u, password(u))
	}
	os.WriteFile(usersFile, []byte(uf.String()), 0o600)
	port := func(name string) string { return strconv.Itoa(in.ports[name]) }

	t.Run("every scenario over implicit TLS", func(t *testing.T) {
		lines := bench(t, "--scenario", "smtp,deliver,imap,pop3", "--server", "sigillo", "--count", "20",
			"--mailbox-messages", "30", "--ca", in.ca, "--users-file", usersFile, "--concurrency", "4",
			"--sizes", "1k:8,10k:2", "--smtp-port", port("submissions"), "--imap-port", port("imaps"), "--pop3-port", port("pop3s"))
		checkBench(t, lines, "sigillo", 20, "smtp", "deliver", "imap", "pop3")
		ops := map[string]bool{}
		for _, op := range lines[2].Ops {
			if op.Count > 0 {
				ops[op.Op] = true
			}
		}
		for _, want := range []string{"select", "fetch_envelope", "fetch_body", "search", "store"} {
			if !ops[want] {
				t.Errorf("imap: no %s op in %+v", want, lines[2].Ops)
			}
		}
	})

	t.Run("STARTTLS, one user by pattern", func(t *testing.T) {
		// The same password for a user made by pattern.
		in.cli("shared password\n", "mailbox", "add", "solo1@bench.test", "--password-stdin")
		lines := bench(t, "--scenario", "smtp,imap,pop3", "--server", "sigillo-starttls", "--count", "5",
			"--mailbox-messages", "10", "--ca", in.ca, "--user", "solo%d@bench.test", "--users", "1", "--password", "shared password",
			"--concurrency", "2", "--smtp-tls", "starttls", "--smtp-port", port("submission"),
			"--imap-tls", "starttls", "--imap-port", port("imap"), "--pop3-tls", "starttls", "--pop3-port", port("pop3"))
		checkBench(t, lines, "sigillo-starttls", 5, "smtp", "imap", "pop3")
	})

	t.Run("in-process, under the race detector", func(t *testing.T) {
		tlsConf, err := loadgen.TLSConfig(in.ca, false)
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		o := loadgen.Options{Scenarios: []string{"smtp", "deliver", "imap", "pop3"}, Server: "in-process",
			SMTP: loadgen.Endpoint{Port: in.ports["submissions"]}, IMAP: loadgen.Endpoint{Port: in.ports["imaps"]},
			POP3: loadgen.Endpoint{Port: in.ports["pop3s"]}, TLSConfig: tlsConf, Concurrency: 3, Count: 15,
			MailboxMessages: 40, Log: &log}
		for _, u := range users {
			o.Users = append(o.Users, loadgen.User{Address: u, Password: password(u)})
		}
		results, err := loadgen.Run(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		var js bytes.Buffer
		loadgen.WriteJSON(&js, results)
		checkBench(t, parseBench(t, js.String()), "in-process", 15, "smtp", "deliver", "imap", "pop3")
		if log.Len() > 0 {
			t.Errorf("errors logged: %s", log.String())
		}
		var table bytes.Buffer
		loadgen.WriteTable(&table, results)
		t.Logf("\n%s", table.String())
	})

	t.Run("SIGINT prints what was measured", func(t *testing.T) {
		cmd := exec.Command(binary, "bench", "--json", "--scenario", "smtp,imap", "--duration", "1m", "--ca", in.ca,
			"--users-file", usersFile, "--concurrency", "2", "--smtp-port", port("submissions"), "--imap-port", port("imaps"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatal("sigillo bench did not stop within 15 s of SIGINT")
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("exit after SIGINT: %v, want status 1", err)
		}
		lines := parseBench(t, stdout.String())
		if len(lines) != 1 || lines[0].Scenario != "smtp" || !lines[0].Interrupted || lines[0].Count == 0 || lines[0].Errors != 0 {
			t.Fatalf("after SIGINT: %+v\n%s", lines, stderr.String())
		}
		if !strings.Contains(stderr.String(), "interrupted") {
			t.Errorf("stderr: %q", stderr.String())
		}
		t.Logf("interrupted after %.1f s with %d messages measured", lines[0].DurationS, lines[0].Count)
	})
}

func TestLoadgenRefusesBadFlagsInOneLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "lmtp", "--user", "a@a.test", "--password", "x"}, "unknown scenario"},
		{[]string{"--sizes", "1k:x", "--user", "a@a.test", "--password", "x"}, "weight"},
		{[]string{"--size", "1k", "--sizes", "1k:1", "--user", "a@a.test", "--password", "x"}, "not both"},
		{[]string{"--count", "5", "--duration", "1s", "--user", "a@a.test", "--password", "x"}, "not both"},
		{[]string{"--smtp-tls", "ssl", "--user", "a@a.test", "--password", "x"}, "--smtp-tls"},
		{[]string{"--user", "a@a.test"}, "--password"},
		{[]string{"--user", "a@a.test", "--users", "3", "--password", "x"}, "%d"},
		{[]string{"--scenario", "pec", "--password", "x"}, "--pec-from"},
		{[]string{"--frobnicate"}, "flag provided but not defined"},
		{[]string{"extra", "--user", "a@a.test", "--password", "x"}, "unexpected argument"},
		{[]string{"--ca", "/nonexistent.pem", "--user", "a@a.test", "--password", "x"}, "nonexistent"},
	} {
		cmd := exec.Command(binary, append([]string{"bench"}, c.args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Errorf("bench %v: %v, want exit status 1", c.args, err)
		}
		msg := strings.TrimSpace(stderr.String())
		if !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") || stdout.Len() > 0 {
			t.Errorf("bench %v: stderr %q stdout %q, want one line with %q", c.args, msg, stdout.String(), c.want)
		}
	}
	// Help is not an error.
	out, err := exec.Command(binary, "bench", "-h").Output()
	if err != nil || !strings.Contains(string(out), "-mailbox-messages") {
		t.Errorf("bench -h: %v %s", err, out)
	}
}

// TestLoadgenPECSmoke: the pec scenario against one gestore with a
// SoftHSM2 token, sender and recipient in its PEC domain.
func TestLoadgenPECSmoke(t *testing.T) {
	module, pins := softhsmTokens(t, t.TempDir(), "bench")
	pinFile := pins["bench"]

	in := newInstance(t, "mail.pec.test", pecGestoreConfig(module, "bench", pinFile, "Bench PEC S.p.A.", "posta-certificata@pec.test"))
	in.cli("", "gestore", "init")
	in.start()
	in.cli("", "domain", "add", "pec.test", "--pec")
	for _, m := range []string{"alice@pec.test", "bob@pec.test"} {
		in.cli(password(m)+"\n", "mailbox", "add", m, "--password-stdin")
	}
	lines := bench(t, "--scenario", "pec", "--server", "sigillo", "--count", "10", "--concurrency", "2", "--ca", in.ca,
		"--pec-from", "alice@pec.test", "--pec-to", "bob@pec.test", "--password", password("alice@pec.test"),
		"--smtp-port", strconv.Itoa(in.ports["submissions"]), "--imap-port", strconv.Itoa(in.ports["imaps"]))
	checkBench(t, lines, "sigillo", 10, "pec")
	got := map[string]int64{}
	for _, op := range lines[0].Ops {
		got[op.Op] = op.Count
	}
	if got["submit"] != 10 || got["accettazione"] != 10 || got["consegna"] != 10 {
		t.Fatalf("pec ops: %+v", lines[0].Ops)
	}
}
