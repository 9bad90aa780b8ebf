package apptest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

// handshake runs one TLS handshake on the loopback between a server with
// the server config and a client with the client config, and returns the
// client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			tls.Server(c, server).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		c.Close()
	}
	return err
}

// TestPKIServesAVerifiedHandshake: a server with ServerConfig completes a
// handshake that ClientConfig verifies, for each name of the certificate
// and for no other; the CA file holds the CA.
func TestPKIServesAVerifiedHandshake(t *testing.T) {
	pki := apptest.NewPKI(t, "mail.example.test", "192.0.2.1")
	for _, name := range []string{"localhost", "127.0.0.1", "mail.example.test", "192.0.2.1"} {
		if err := handshake(t, pki.ServerConfig(), pki.ClientConfig(name)); err != nil {
			t.Fatalf("as %s: %v", name, err)
		}
	}
	if err := handshake(t, pki.ServerConfig(), pki.ClientConfig("other.example.test")); err == nil {
		t.Fatal("a name the certificate does not have verified")
	}
	if err := handshake(t, pki.ServerConfig(), &tls.Config{ServerName: "localhost"}); err == nil {
		t.Fatal("a client without the CA verified the certificate")
	}
	b, err := os.ReadFile(pki.CAFile)
	if err != nil || string(b) != string(pki.CAPEM) || !strings.HasPrefix(string(b), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("CA file %q (%v) is not the CA's PEM", b, err)
	}
}

func newStore(t *testing.T) *storage.Store {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appliedIndex(t *testing.T, s *storage.Store) uint64 {
	t.Helper()
	i, err := s.AppliedIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestFailWithAppliesNothing: while FailWith is set, Apply returns its
// error and writes nothing; once cleared, commands apply again.
func TestFailWithAppliesNothing(t *testing.T) {
	s := newStore(t)
	p := apptest.NewProposer(s)
	p.Must(t, &storage.AddDomain{Name: "a.test", At: 1})

	errDown := errors.New("raft: no quorum (test)")
	p.FailWith(errDown)
	if _, err := p.Apply(context.Background(), &storage.AddDomain{Name: "b.test", At: 1}); err != errDown {
		t.Fatalf("Apply while failing: %v, want %v", err, errDown)
	}
	if i := appliedIndex(t, s); i != 1 {
		t.Fatalf("applied index %d after a failed Apply, want 1", i)
	}
	p.FailWith(nil)
	// b.test was not added before: adding it now is no conflict.
	p.Must(t, &storage.AddDomain{Name: "b.test", At: 1})
	if _, err := p.Apply(context.Background(), &storage.AddDomain{Name: "a.test", At: 1}); !storage.IsCode(err, storage.ErrExists) {
		t.Fatalf("refusal: %v, want %s", err, storage.ErrExists)
	}
	if d, err := s.Domains(context.Background()); err != nil || len(d) != 2 {
		t.Fatalf("domains %+v (%v), want a.test and b.test", d, err)
	}
}

// TestProposerInLogOrder: concurrent commands all apply, one index each,
// and a new Proposer on a used store goes on after its applied index.
func TestProposerInLogOrder(t *testing.T) {
	s := newStore(t)
	p := apptest.NewProposer(s)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := p.Apply(context.Background(), &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i), At: 1})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if i := appliedIndex(t, s); i != n {
		t.Fatalf("applied index %d, want %d", i, n)
	}
	again := &apptest.Proposer{Store: s}
	again.Must(t, &storage.AddDomain{Name: "last.test", At: 1})
	if d, err := s.Domains(context.Background()); err != nil || len(d) != n+1 {
		t.Fatalf("%d domains (%v), want %d", len(d), err, n+1)
	}
}

// tb records what NeedTool tells a test, and ends the goroutine on Fatalf
// and Skipf as testing does.
type tb struct {
	testing.TB
	fatal, skip string
}

func (r *tb) Helper()      {}
func (r *tb) Name() string { return "TestNeedsIt" }
func (r *tb) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *tb) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestNeedTool: a tool on PATH is found; a missing one skips the test
// loudly, or fails it under CI=true.
func TestNeedTool(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	if p := apptest.NeedTool(t, "sh"); p != sh {
		t.Fatalf("NeedTool(sh) = %q, want %q", p, sh)
	}
	run := func(ci string) *tb {
		t.Setenv("CI", ci)
		r := &tb{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			apptest.NeedTool(r, "no-such-tool-apptest")
		}()
		<-done
		return r
	}
	if r := run(""); r.fatal != "" || !strings.Contains(r.skip, "SKIPPING TestNeedsIt") || !strings.Contains(r.skip, "no-such-tool-apptest") {
		t.Errorf("outside CI: fatal %q, skip %q; want a loud skip", r.fatal, r.skip)
	}
	if r := run("true"); r.skip != "" || !strings.Contains(r.fatal, "no-such-tool-apptest not found") {
		t.Errorf("in CI: fatal %q, skip %q; want a failure", r.fatal, r.skip)
	}
}

// TestTheClockMovesOnlyWhenTheTestMovesIt: Now stands still, Add and Set
// move it, and a reader on another goroutine sees the moves (under -race).
func TestTheClockMovesOnlyWhenTheTestMovesIt(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clk := apptest.NewClock(t0)
	if a, b := clk.Now(), clk.Now(); !a.Equal(t0) || !b.Equal(t0) {
		t.Fatalf("Now = %v, %v; want %v twice", a, b, t0)
	}
	seen := make(chan time.Time)
	go func() {
		var last time.Time
		for !last.Equal(t0.Add(3 * time.Hour)) {
			last = clk.Now()
		}
		seen <- last
	}()
	clk.Add(time.Hour)
	clk.Add(2 * time.Hour)
	if got := <-seen; !got.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("the reader saw %v", got)
	}
	clk.Set(t0.AddDate(1, 0, 0))
	if got := clk.String(); got != "2027-03-01T09:00:00Z" {
		t.Fatalf("after Set: %s", got)
	}
}
