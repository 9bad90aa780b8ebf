// Package devtoken makes and finds the development PKCS#11 token: a SoftHSM2
// token kept under the data directory, for `make run` and first tries,
// never for production (a real HSM, or a token set up by the admin, is
// configured with [signer]).
//
// The token lives in <data_dir>/softhsm:
//
//	softhsm2.conf   SoftHSM2's configuration: tokendir, file backend, log level
//	tokens/         the token (one directory per token, made by softhsm2-util)
//	user.pin        the user PIN (mode 0600), written last: the token is whole
//	so.pin          the security officer PIN (mode 0600), to reset the user PIN
//	.lock           flock(2)ed while a process checks or makes the token
//
// The directory is 0700 and the PINs are random, made once. Ensure takes
// the lock around the check-and-create, so a server and a CLI command
// started together make one token, not two; a token half made (a crash
// between the steps) has no user.pin and is made again from scratch.
//
// SoftHSM2 finds its configuration through the SOFTHSM2_CONF environment
// variable, which the library reads from the process environment when it
// is initialized (C_Initialize, that is crypto11.Configure inside
// signer.Open or signer.Init). This package never changes the process
// environment: it passes SOFTHSM2_CONF to softhsm2-util in the child's
// environment only. A caller that opens the token in its own process must
// set the variable first, for example
//
//	tok, err := devtoken.Ensure(ctx, cfg.DataDir)
//	...
//	os.Setenv("SOFTHSM2_CONF", tok.Conf) // before signer.Open
//
// (os.Setenv also updates the C environment that the library reads, in a
// cgo program, which every program using crypto11 is.)
package devtoken

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// TokenLabel is the label of the development token.
	TokenLabel = "sigillo-dev"
	// KeyLabel is the label of the gestore key pair and certificate in it
	// (signer.DefaultKeyLabel).
	KeyLabel = "gestore"
)

// modulePaths are where distributions put SoftHSM2's PKCS#11 library.
func modulePaths() []string {
	return []string{
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so",
	}
}

// Token is the development token, whole: its PIN file exists.
type Token struct {
	// Dir is <data_dir>/softhsm, an absolute path.
	Dir string
	// Conf is <Dir>/softhsm2.conf: directories.tokendir = <Dir>/tokens,
	// objectstore.backend = file, log.level = ERROR.
	Conf string
	// Module is the path of libsofthsm2.so found on this machine.
	Module string
	// TokenLabel is "sigillo-dev".
	TokenLabel string
	// KeyLabel is "gestore".
	KeyLabel string
	// PinFile is <Dir>/user.pin, mode 0600: the user PIN, on one line.
	PinFile string
}

// Env returns the environment entry the PKCS#11 module must see:
// "SOFTHSM2_CONF=<Conf>".
func (t Token) Env() string { return "SOFTHSM2_CONF=" + t.Conf }

func (t Token) tokensDir() string { return filepath.Join(t.Dir, "tokens") }
func (t Token) soPinFile() string { return filepath.Join(t.Dir, "so.pin") }

// confText is the SoftHSM2 configuration of the token.
func (t Token) confText() []byte {
	return fmt.Appendf(nil, "# Made by sigillo for the development token; do not use in production.\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", t.tokensDir())
}

// Ensure makes the token on first use (directory 0700, conf, random user
// and SO PINs, `softhsm2-util --init-token --free --label sigillo-dev` run
// with SOFTHSM2_CONF=Conf in the child's environment only) and returns it;
// later calls find it and change nothing (but the conf, rewritten when the
// data directory has moved). It fails with one clear line when SoftHSM2 is
// not installed, before making anything. Waiting for another process that
// is making the token ends with ctx.
func Ensure(ctx context.Context, dataDir string) (Token, error) {
	if dataDir == "" {
		return Token{}, errors.New("devtoken: no data directory")
	}
	module, util, err := findSoftHSM(modulePaths())
	if err != nil {
		return Token{}, err
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return Token{}, fmt.Errorf("devtoken: data directory: %w", err)
	}
	dir := filepath.Join(abs, "softhsm")
	t := Token{
		Dir:        dir,
		Conf:       filepath.Join(dir, "softhsm2.conf"),
		Module:     module,
		TokenLabel: TokenLabel,
		KeyLabel:   KeyLabel,
		PinFile:    filepath.Join(dir, "user.pin"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Token{}, fmt.Errorf("devtoken: %w", err)
	}
	if err := private(dir); err != nil {
		return Token{}, err
	}
	unlock, err := lock(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return Token{}, err
	}
	defer unlock()
	if err := t.ensureLocked(ctx, util); err != nil {
		return Token{}, err
	}
	return t, nil
}

// findSoftHSM returns the path of libsofthsm2.so, the first of modules
// that exists, and of softhsm2-util.
func findSoftHSM(modules []string) (module, util string, err error) {
	for _, p := range modules {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			module = p
			break
		}
	}
	if module == "" {
		return "", "", fmt.Errorf("devtoken: SoftHSM2 is not installed (no libsofthsm2.so in %s): apt-get install softhsm2, or configure [signer]",
			strings.Join(modules, ", "))
	}
	util, err = exec.LookPath("softhsm2-util")
	if err != nil {
		return "", "", fmt.Errorf("devtoken: SoftHSM2 is not installed (no softhsm2-util in PATH): apt-get install softhsm2, or configure [signer]")
	}
	return module, util, nil
}

// private makes dir mode 0700 unless it is already.
func private(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("devtoken: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("devtoken: %s is not a directory", dir)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("devtoken: %w", err)
		}
	}
	return nil
}

// lock takes an exclusive flock on path, waiting for it until ctx ends,
// and returns the function that releases it.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("devtoken: lock: %w", err)
	}
	fd := int(f.Fd())
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("devtoken: lock %s: %w", path, err)
		}
		timer := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			f.Close()
			return nil, fmt.Errorf("devtoken: waiting for %s: %w", path, ctx.Err())
		case <-timer.C:
		}
	}
}

// ensureLocked finds the token or makes it; the caller holds the lock.
func (t Token) ensureLocked(ctx context.Context, util string) error {
	removeTemps(t.Dir)
	whole, err := t.whole()
	if err != nil {
		return err
	}
	if whole {
		// The data directory may have moved: the conf names the tokens by
		// their absolute path.
		return writeIfChanged(t.Conf, t.confText())
	}
	return t.make(ctx, util)
}

// whole tells whether the token was made to the end: a non-empty PIN file
// (written last) and one token in the tokens directory.
func (t Token) whole() (bool, error) {
	pin, err := os.ReadFile(t.PinFile)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("devtoken: %w", err)
	}
	if len(bytes.TrimSpace(pin)) == 0 {
		return false, nil
	}
	n, err := countTokens(t.tokensDir())
	if err != nil {
		return false, err
	}
	switch n {
	case 0:
		return false, nil // the tokens were removed: make a new one
	case 1:
		return true, nil
	}
	return false, fmt.Errorf("devtoken: %s holds %d tokens, want 1: remove %s to make a new development token",
		t.tokensDir(), n, t.Dir)
}

// countTokens counts the SoftHSM2 tokens (directories with a
// token.object) in dir.
func countTokens(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("devtoken: %w", err)
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "token.object")); err == nil {
			n++
		}
	}
	return n, nil
}

// make makes the token from scratch, wiping what a crash may have left.
// Each step can be redone; the user PIN file, last, says it is whole.
func (t Token) make(ctx context.Context, util string) error {
	if err := os.Remove(t.PinFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("devtoken: %w", err)
	}
	if err := writeIfChanged(t.Conf, t.confText()); err != nil {
		return err
	}
	if err := os.RemoveAll(t.tokensDir()); err != nil {
		return fmt.Errorf("devtoken: %w", err)
	}
	if err := os.Mkdir(t.tokensDir(), 0o700); err != nil {
		return fmt.Errorf("devtoken: %w", err)
	}
	userPIN, soPIN := rand.Text(), rand.Text()
	// softhsm2-util reads PINs from a terminal only, so they go on its
	// command line: visible to this machine's users for a few
	// milliseconds, acceptable for a development token.
	cmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", t.TokenLabel, "--pin", userPIN, "--so-pin", soPIN)
	cmd.Env = childEnv(os.Environ(), t.Env())
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("devtoken: %s --init-token --label %s (SOFTHSM2_CONF=%s): %v: %s",
			util, t.TokenLabel, t.Conf, err, strings.Join(strings.Fields(string(out)), " "))
	}
	if n, err := countTokens(t.tokensDir()); err != nil {
		return err
	} else if n != 1 {
		return fmt.Errorf("devtoken: softhsm2-util made %d tokens in %s, want 1", n, t.tokensDir())
	}
	if err := writeFile(t.soPinFile(), []byte(soPIN+"\n")); err != nil {
		return err
	}
	if err := writeFile(t.PinFile, []byte(userPIN+"\n")); err != nil {
		return err
	}
	return nil
}

// childEnv is env without SOFTHSM2_CONF, then entry.
func childEnv(env []string, entry string) []string {
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if !strings.HasPrefix(e, "SOFTHSM2_CONF=") {
			out = append(out, e)
		}
	}
	return append(out, entry)
}

// writeIfChanged writes data to path (see writeFile) unless it holds data
// already.
func writeIfChanged(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return writeFile(path, data)
}

// tempPrefix starts the names of the temporary files of writeFile.
const tempPrefix = ".tmp-"

// writeFile replaces path with data, mode 0600, atomically and durably:
// a temporary file, synced, renamed over path, and the directory synced.
func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("devtoken: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("devtoken: writing %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeTemps removes the temporary files a crash left in dir.
func removeTemps(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	for _, n := range names {
		os.Remove(n)
	}
}
