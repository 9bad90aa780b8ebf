package datalock

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The helper process: it takes the lock named by the environment and holds
// it until killed, as a running server does.
func TestMain(m *testing.M) {
	if dir := os.Getenv("DATALOCK_HOLD"); dir != "" {
		if _, err := Acquire(dir); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("holding")
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func hold(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "DATALOCK_HOLD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "holding") {
		t.Fatalf("helper: %q", buf[:n])
	}
	return cmd
}

func TestASecondProcessIsToldWhoHoldsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	holder := hold(t, dir)

	start := time.Now()
	_, err := Acquire(dir)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("acquire while held: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %v", d)
	}
	if held.PID != holder.Process.Pid || held.Dir != dir {
		t.Fatalf("held by %+v, want pid %d dir %s", held, holder.Process.Pid, dir)
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, fmt.Sprint(holder.Process.Pid)) {
		t.Fatalf("message %q names neither the directory nor the pid", msg)
	}

	// The holder is killed: its lock goes with it, the file stays, and the
	// next start takes it.
	holder.Process.Kill()
	holder.Wait()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatalf("acquire after the holder died: %v", err)
	}
	b, _ := os.ReadFile(dir + "/" + FileName)
	if strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("lock file holds %q, want this pid %d", b, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = Acquire(dir)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	l.Release()
}
