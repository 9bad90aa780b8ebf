package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func call(t *testing.T, socket string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Call(ctx, socket, Request{Op: "ping"}, nil)
}

func TestCallAnswersAndSaysWhyItCannot(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "control.sock")

	// No socket at all: no running server.
	if err := call(t, socket); !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), socket) {
		t.Errorf("no socket: %v, want ErrNoServer naming %s", err, socket)
	}

	// A socket file left by a server that died: connection refused, no
	// running server either.
	ln, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := call(t, socket); !errors.Is(err, ErrNoServer) {
		t.Errorf("stale socket: %v, want ErrNoServer", err)
	}

	// A running server answers.
	ln, err = Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: func(ctx context.Context, req Request) (any, error) {
		if req.Op != "ping" {
			return nil, errors.New("unknown request")
		}
		return "pong", nil
	}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var out string
	if err := Call(context.Background(), socket, Request{Op: "ping"}, &out); err != nil || out != "pong" {
		t.Fatalf("ping: %q, %v", out, err)
	}
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	// Without the right to use the socket (not root: mode 000 is enough;
	// root is refused only as another user, see the root package's test).
	if os.Geteuid() != 0 {
		os.Chmod(socket, 0)
		err := call(t, socket)
		os.Chmod(socket, 0o600)
		if !errors.Is(err, ErrPermission) || errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "as root") {
			t.Errorf("socket mode 000: %v, want ErrPermission", err)
		}
	}
}

func TestDialErrorsAreToldApart(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "control.sock")
	for _, c := range []struct {
		errno      syscall.Errno
		permission bool
	}{
		{syscall.EACCES, true},
		{syscall.EPERM, true},
		{syscall.ENOENT, false},
		{syscall.ECONNREFUSED, false},
		{syscall.ENOTDIR, false},
	} {
		err := dialError(socket, &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", c.errno)})
		if errors.Is(err, ErrPermission) != c.permission || errors.Is(err, ErrNoServer) == c.permission {
			t.Errorf("%v: %v", c.errno, err)
		}
	}
	// Who owns the directory is named, the socket being out of sight.
	err := dialError(socket, os.NewSyscallError("connect", syscall.EACCES))
	if !strings.Contains(err.Error(), "the server's user,") {
		t.Errorf("no owner named: %v", err)
	}
}
