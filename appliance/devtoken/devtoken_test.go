package devtoken

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/signer"
)

// needSoftHSM returns softhsm2-util's path; without SoftHSM2 the test is
// skipped, loudly, or fails under CI=true.
func needSoftHSM(t *testing.T) string {
	t.Helper()
	util := apptest.NeedTool(t, "softhsm2-util")
	if _, _, err := findSoftHSM(modulePaths()); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: %s cannot run, and in CI that is a failure", err, t.Name())
		}
		t.Skipf("!!! SKIPPING %s: %v !!!", t.Name(), err)
	}
	return util
}

func mustEnsure(t *testing.T, dataDir string) Token {
	t.Helper()
	tok, err := Ensure(context.Background(), dataDir)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return tok
}

func readPIN(t *testing.T, tok Token) string {
	t.Helper()
	b, err := os.ReadFile(tok.PinFile)
	if err != nil {
		t.Fatal(err)
	}
	pin := strings.TrimSpace(string(b))
	if len(pin) < 16 {
		t.Fatalf("PIN %q: want a long random one", pin)
	}
	return pin
}

var labelLine = regexp.MustCompile(`(?m)^\s*Label:\s*(\S.*?)\s*$`)

// tokenLabels lists the labels of the initialized tokens that
// softhsm2-util --show-slots sees through tok's conf.
func tokenLabels(t *testing.T, tok Token) []string {
	t.Helper()
	util := needSoftHSM(t)
	cmd := exec.Command(util, "--show-slots")
	cmd.Env = childEnv(os.Environ(), tok.Env())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --show-slots: %v\n%s", err, out)
	}
	var labels []string
	for _, m := range labelLine.FindAllStringSubmatch(string(out), -1) {
		labels = append(labels, m[1])
	}
	return labels
}

func mustHaveOneToken(t *testing.T, tok Token) {
	t.Helper()
	if got := tokenLabels(t, tok); len(got) != 1 || got[0] != TokenLabel {
		t.Fatalf("softhsm2-util --show-slots lists tokens %q, want just %q", got, TokenLabel)
	}
	if n, err := countTokens(filepath.Join(tok.Dir, "tokens")); err != nil || n != 1 {
		t.Fatalf("%d token directories (%v), want 1", n, err)
	}
}

// tokenDir is the directory SoftHSM2 made for the token: a new one means
// a new token.
func tokenDir(t *testing.T, tok Token) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(tok.Dir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 1 {
		t.Fatalf("token directories %q, want one", dirs)
	}
	return dirs[0]
}

func mustMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
	}
}

// signerConfig is what the server will use to reach the token; it points
// SOFTHSM2_CONF at the token for the rest of the test, as the server will
// for the rest of its life.
func signerConfig(t *testing.T, tok Token) signer.Config {
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	return signer.Config{PKCS11Module: tok.Module, TokenLabel: tok.TokenLabel, PIN: readPIN(t, tok), KeyLabel: tok.KeyLabel}
}

const part = "Content-Type: text/plain; charset=utf-8\r\n\r\nRicevuta di accettazione di prova.\r\n"

// signAndVerify makes the gestore key and certificate in the token, signs
// with it and verifies the signature; it returns the certificate.
func signAndVerify(t *testing.T, tok Token) *x509.Certificate {
	t.Helper()
	cfg := signerConfig(t, tok)
	cert, err := signer.Init(cfg, signer.InitOptions{ProviderName: "Sigillo (sviluppo)", ServiceAddress: "posta-certificata@localhost"})
	if err != nil {
		t.Fatalf("signer.Init: %v", err)
	}
	s, err := signer.Open(cfg, nil)
	if err != nil {
		t.Fatalf("signer.Open: %v", err)
	}
	defer s.Close()
	if !s.Certificate().Equal(cert) {
		t.Fatalf("Open found %q, want the certificate of Init", s.Certificate().Subject)
	}
	ct, body, err := s.SignMIME([]byte(part))
	if err != nil {
		t.Fatalf("SignMIME: %v", err)
	}
	msg := append([]byte("From: posta-certificata@localhost\r\nMIME-Version: 1.0\r\nContent-Type: "+ct+"\r\n\r\n"), body...)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	v := signer.VerifyMIME(msg, roots, time.Time{})
	if !v.Signed || !v.Valid || v.Err != nil {
		t.Fatalf("VerifyMIME: signed %v valid %v: %v", v.Signed, v.Valid, v.Err)
	}
	if !v.Signer.Equal(cert) || !bytes.Equal(v.Content, []byte(part)) {
		t.Fatalf("VerifyMIME: signer %q content %q", v.Signer.Subject, v.Content)
	}
	return cert
}

// An empty data directory gets a whole token: private directory and PIN
// files, a conf pointing at its own tokens, one token labelled
// sigillo-dev; the process environment is left alone.
func TestEnsureMakesTokenInEmptyDataDir(t *testing.T) {
	needSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", "/nonexistent/elsewhere.conf")
	dataDir := filepath.Join(t.TempDir(), "data") // not there yet
	start := time.Now()
	tok := mustEnsure(t, dataDir)
	t.Logf("token made in %v", time.Since(start))

	abs, _ := filepath.Abs(dataDir)
	dir := filepath.Join(abs, "softhsm")
	want := Token{Dir: dir, Conf: filepath.Join(dir, "softhsm2.conf"), Module: tok.Module,
		TokenLabel: "sigillo-dev", KeyLabel: "gestore", PinFile: filepath.Join(dir, "user.pin")}
	if tok != want {
		t.Fatalf("Ensure = %+v, want %+v", tok, want)
	}
	if st, err := os.Stat(tok.Module); err != nil || !st.Mode().IsRegular() {
		t.Errorf("module %q: %v", tok.Module, err)
	}
	if tok.Env() != "SOFTHSM2_CONF="+tok.Conf {
		t.Errorf("Env() = %q", tok.Env())
	}
	if got := os.Getenv("SOFTHSM2_CONF"); got != "/nonexistent/elsewhere.conf" {
		t.Errorf("Ensure changed SOFTHSM2_CONF in the process to %q", got)
	}
	mustMode(t, tok.Dir, 0o700)
	mustMode(t, tok.PinFile, 0o600)
	mustMode(t, filepath.Join(tok.Dir, "so.pin"), 0o600)
	mustMode(t, tok.Conf, 0o600)
	conf, err := os.ReadFile(tok.Conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"directories.tokendir = " + filepath.Join(dir, "tokens"), "objectstore.backend = file", "log.level = ERROR"} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("conf lacks %q:\n%s", line, conf)
		}
	}
	if readPIN(t, tok) == strings.TrimSpace(string(must(os.ReadFile(filepath.Join(tok.Dir, "so.pin"))))) {
		t.Error("the user PIN is the SO PIN")
	}
	mustHaveOneToken(t, tok)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A second Ensure finds the token and changes nothing: same Token, same
// PIN, same token, files untouched.
func TestEnsureAgainChangesNothing(t *testing.T) {
	needSoftHSM(t)
	dataDir := t.TempDir()
	tok := mustEnsure(t, dataDir)
	pin, dirName := readPIN(t, tok), tokenDir(t, tok)
	stamp := func() map[string]time.Time {
		m := map[string]time.Time{}
		filepath.WalkDir(tok.Dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if info, err := d.Info(); err == nil {
					m[p] = info.ModTime()
				}
			}
			return nil
		})
		return m
	}
	before := stamp()
	time.Sleep(20 * time.Millisecond) // so that a rewrite would show in the times

	again := mustEnsure(t, dataDir)
	if again != tok {
		t.Fatalf("second Ensure = %+v, want %+v", again, tok)
	}
	if readPIN(t, again) != pin || tokenDir(t, again) != dirName {
		t.Fatal("second Ensure made a new PIN or a new token")
	}
	after := stamp()
	if len(after) != len(before) {
		t.Errorf("files before %d, after %d", len(before), len(after))
	}
	for p, m := range before {
		if !after[p].Equal(m) {
			t.Errorf("%s rewritten by the second Ensure", p)
		}
	}
	mustHaveOneToken(t, again)
}

// Goroutines calling Ensure at once on a fresh data directory make one
// token, and all get it.
func TestEnsureConcurrentGoroutines(t *testing.T) {
	needSoftHSM(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	const n = 8
	toks := make([]Token, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			toks[i], errs[i] = Ensure(context.Background(), dataDir)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Ensure %d: %v", i, errs[i])
		}
		if toks[i] != toks[0] {
			t.Fatalf("Ensure %d = %+v, Ensure 0 = %+v", i, toks[i], toks[0])
		}
	}
	mustHaveOneToken(t, toks[0])
}

const helperEnv = "SIGILLO_DEVTOKEN_HELPER_DATA_DIR"

// TestHelperProcess is the other process of TestEnsureConcurrentProcesses:
// it calls Ensure on the data directory in its environment and prints the
// PIN. Without that variable it does nothing.
func TestHelperProcess(t *testing.T) {
	dataDir := os.Getenv(helperEnv)
	if dataDir == "" {
		return
	}
	tok, err := Ensure(context.Background(), dataDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	pin, err := os.ReadFile(tok.PinFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("PIN=%s\n", strings.TrimSpace(string(pin)))
	os.Exit(0)
}

// Processes calling Ensure at once (the server and a CLI command) make
// one token, and all get its PIN.
func TestEnsureConcurrentProcesses(t *testing.T) {
	needSoftHSM(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	const n = 4
	cmds := make([]*exec.Cmd, n)
	outs := make([]bytes.Buffer, n)
	for i := range n {
		cmds[i] = exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmds[i].Env = append(os.Environ(), helperEnv+"="+dataDir)
		cmds[i].Stdout = &outs[i]
		cmds[i].Stderr = &outs[i]
	}
	for i := range n {
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	pins := map[string]bool{}
	for i := range n {
		if err := cmds[i].Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i].String())
		}
		m := regexp.MustCompile(`(?m)^PIN=(\S+)$`).FindStringSubmatch(outs[i].String())
		if m == nil {
			t.Fatalf("process %d printed no PIN:\n%s", i, outs[i].String())
		}
		pins[m[1]] = true
	}
	if len(pins) != 1 {
		t.Fatalf("%d processes saw %d PINs, want 1", n, len(pins))
	}
	tok := mustEnsure(t, dataDir)
	if !pins[readPIN(t, tok)] {
		t.Fatal("the PIN file is not the PIN the processes saw")
	}
	mustHaveOneToken(t, tok)
}

// The token works end to end: signer.Init makes the gestore key and
// certificate in it, signer.Open finds them, a signature verifies; after
// another Ensure (the next start) the same key is there.
func TestTokenSignsEndToEnd(t *testing.T) {
	needSoftHSM(t)
	dataDir := t.TempDir()
	tok := mustEnsure(t, dataDir)
	cert := signAndVerify(t, tok)
	if got := cert.EmailAddresses; len(got) != 1 || got[0] != "posta-certificata@localhost" {
		t.Errorf("certificate addresses %q", got)
	}

	again := mustEnsure(t, dataDir)
	s, err := signer.Open(signerConfig(t, again), nil)
	if err != nil {
		t.Fatalf("signer.Open after a second Ensure: %v", err)
	}
	defer s.Close()
	if !s.Certificate().Equal(cert) {
		t.Fatal("after a second Ensure the token holds another certificate")
	}
}

// A data directory moved elsewhere keeps its token: Ensure rewrites the
// conf (which names the tokens by absolute path), keeps PIN and key.
func TestEnsureAfterDataDirMoved(t *testing.T) {
	needSoftHSM(t)
	root := t.TempDir()
	oldDir, newDir := filepath.Join(root, "old"), filepath.Join(root, "new")
	tok := mustEnsure(t, oldDir)
	cert := signAndVerify(t, tok)
	pin := readPIN(t, tok)
	if err := os.Rename(oldDir, newDir); err != nil {
		t.Fatal(err)
	}
	moved := mustEnsure(t, newDir)
	if readPIN(t, moved) != pin {
		t.Fatal("a new PIN after the move")
	}
	if conf := string(must(os.ReadFile(moved.Conf))); !strings.Contains(conf, filepath.Join(newDir, "softhsm", "tokens")) {
		t.Fatalf("conf after the move:\n%s", conf)
	}
	mustHaveOneToken(t, moved)
	s, err := signer.Open(signerConfig(t, moved), nil)
	if err != nil {
		t.Fatalf("signer.Open after the move: %v", err)
	}
	defer s.Close()
	if !s.Certificate().Equal(cert) {
		t.Fatal("after the move the token holds another certificate")
	}
}

// A token half made (a crash between the steps) is made again by the
// next Ensure, and works.
func TestEnsureRedoesHalfMadeToken(t *testing.T) {
	needSoftHSM(t)
	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, tok Token)
		sign  bool
	}{
		{"no PIN file (crash before the last step)", func(t *testing.T, tok Token) {
			if err := os.Remove(tok.PinFile); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"PIN file but no token", func(t *testing.T, tok Token) {
			if err := os.RemoveAll(filepath.Join(tok.Dir, "tokens")); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"conf, a broken token, no PIN file, a temporary file", func(t *testing.T, tok Token) {
			if err := os.Remove(tok.PinFile); err != nil {
				t.Fatal(err)
			}
			junk := filepath.Join(tok.Dir, "tokens", "00000000-junk")
			if err := os.Mkdir(junk, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(junk, "token.object"), []byte("half"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(tok.Dir, ".tmp-user.pin-123"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			tok := mustEnsure(t, dataDir)
			oldPIN, oldToken := readPIN(t, tok), tokenDir(t, tok)
			tc.crash(t, tok)

			redone := mustEnsure(t, dataDir)
			if redone != tok {
				t.Fatalf("Ensure = %+v, want %+v", redone, tok)
			}
			if readPIN(t, redone) == oldPIN || tokenDir(t, redone) == oldToken {
				t.Fatal("the half-made token was not made again")
			}
			mustHaveOneToken(t, redone)
			if temps, _ := filepath.Glob(filepath.Join(tok.Dir, ".tmp-*")); len(temps) > 0 {
				t.Errorf("temporary files left: %q", temps)
			}
			if tc.sign {
				signAndVerify(t, redone)
			}
		})
	}
}

// Ensure waits for another process holding the lock, until its context
// ends.
func TestEnsureWaitsForTheLock(t *testing.T) {
	needSoftHSM(t)
	dataDir := t.TempDir()
	tok := mustEnsure(t, dataDir)
	f, err := os.OpenFile(filepath.Join(tok.Dir, ".lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := Ensure(ctx, dataDir); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ensure with the lock held elsewhere: %v, want the deadline", err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.Close()
		close(released)
	}()
	if again := mustEnsure(t, dataDir); again != tok {
		t.Fatalf("Ensure after the lock was released = %+v", again)
	}
	<-released
}

// Without SoftHSM2, Ensure says so in one line with the fix, and makes
// nothing.
func TestEnsureWithoutSoftHSM(t *testing.T) {
	_, _, err := findSoftHSM([]string{"/nonexistent/libsofthsm2.so"})
	if err == nil || !strings.Contains(err.Error(), "apt-get install softhsm2") || strings.Contains(err.Error(), "\n") {
		t.Errorf("without the module: %v", err)
	}
	t.Setenv("PATH", t.TempDir()) // no softhsm2-util
	dataDir := filepath.Join(t.TempDir(), "data")
	_, err = Ensure(context.Background(), dataDir)
	if err == nil || !strings.Contains(err.Error(), "apt-get install softhsm2") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("without softhsm2-util: %v", err)
	}
	t.Log(err)
	if _, err := os.Stat(dataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Ensure made %s anyway (%v)", dataDir, err)
	}
}
