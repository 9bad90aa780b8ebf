package apptest

import (
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EICAR is the antivirus test string every scanner detects.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// EICARSignature is the name our private clamd reports for EICAR (clamd
// appends ".UNOFFICIAL" to signatures of its own databases).
const EICARSignature = "Test.EICAR-NDB.UNOFFICIAL"

// Clamd is a clamd started by a test, with a signature database of its own
// (there is no network for freshclam here): EICAR only.
type Clamd struct {
	// Address is "unix:<socket>", as Sigillo's [scan] clamd setting takes it;
	// TCP is "tcp://127.0.0.1:<port>".
	Address, TCP string
	Dir          string
	cmd          *exec.Cmd
	exited       chan struct{}
}

// StartClamd starts clamd on a private socket and TCP port and waits until
// it answers PING; it is stopped when the test ends. Without clamd the test
// is skipped loudly, or fails under CI=true.
func StartClamd(t testing.TB) *Clamd {
	t.Helper()
	bin := NeedTool(t, "clamd")
	dir, err := os.MkdirTemp("", "clamd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"db", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sig := "Test.EICAR-NDB:0:*:" + hex.EncodeToString([]byte(EICAR)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "db", "custom.ndb"), []byte(sig), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freeTCPPort(t)
	sock := filepath.Join(dir, "clamd.sock")
	conf := fmt.Sprintf(`Foreground yes
DatabaseDirectory %s/db
TemporaryDirectory %s/tmp
LocalSocket %s
TCPSocket %d
TCPAddr 127.0.0.1
LogFile %s/clamd.log
MaxThreads 8
StreamMaxLength 50M
SelfCheck 0
Bytecode no
`, dir, dir, sock, port, dir)
	confPath := filepath.Join(dir, "clamd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Clamd{Address: "unix:" + sock, TCP: fmt.Sprintf("tcp://127.0.0.1:%d", port), Dir: dir, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, "--config-file="+confPath)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("clamd: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.Stop)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c.ping() {
			return c
		}
		select {
		case <-c.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "clamd.log"))
			t.Fatalf("clamd exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("clamd did not answer PING within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Clamd) ping() bool {
	conn, err := net.DialTimeout("unix", strings.TrimPrefix(c.Address, "unix:"), time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("nPING\n")); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, _ := conn.Read(buf)
	return strings.TrimSpace(string(buf[:n])) == "PONG"
}

// Stop stops clamd (SIGTERM) and waits for it; it may be called again.
func (c *Clamd) Stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
