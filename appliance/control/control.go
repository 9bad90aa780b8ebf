// Package control is the local administration channel between the
// `sigillo` command line and the running server: one JSON request and one
// JSON response per connection over a unix socket in the data directory,
// mode 0600, so only the server's own user (root) can use it. It carries
// requests to the operations of appliance/manage, as the operator, and
// their refusals' codes back; the rules are manage's, not this package's.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"sigillo/appliance/manage"
)

// Request is one command-line call.
type Request struct {
	Op   string            `json:"op"`
	Args map[string]string `json:"args,omitempty"`
}

// Response answers a Request: Error is one line for the user and Code
// its class (manage.Code), or Data the result.
type Response struct {
	Error string          `json:"error,omitempty"`
	Code  manage.Code     `json:"code,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Handler does what a request asks.
type Handler func(ctx context.Context, req Request) (any, error)

// maxRequest bounds what a client may send.
const maxRequest = 40 << 20 // a providers directory can be large

// Server answers requests on a unix socket.
type Server struct {
	Handler Handler
	Logger  *slog.Logger

	mu     sync.Mutex
	ln     net.Listener
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// Listen makes the socket at path with mode 0600, replacing a stale one.
func Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another server is running", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Serve answers requests until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.ln, s.cancel = ln, cancel
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control accept: %w", err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	// The request must come within 2 minutes; the answer takes what the
	// operation takes (a backup, a whole log verified), then 2 minutes to
	// be read.
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	var req Request
	var resp Response
	if err := json.NewDecoder(io.LimitReader(c, maxRequest)).Decode(&req); err != nil {
		resp.Error, resp.Code = "bad request: "+err.Error(), manage.Invalid
	} else {
		c.SetDeadline(time.Time{})
		v, err := s.Handler(ctx, req)
		if err != nil {
			resp.Error, resp.Code = err.Error(), manage.CodeOf(err)
			if s.Logger != nil {
				s.Logger.Info("control request failed", "op", req.Op, "err", err)
			}
		} else if v != nil {
			b, err := json.Marshal(v)
			if err != nil {
				resp.Error, resp.Code = "encode response: "+err.Error(), manage.Unavailable
			}
			resp.Data = b
		}
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	json.NewEncoder(c).Encode(resp)
}

// Shutdown stops accepting, cancels running requests and waits for them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ln, cancel := s.ln, s.cancel
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	cancel()
	ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrNoServer means nothing listens on the socket.
var ErrNoServer = errors.New("no running server")

// ErrPermission means a server may be running, but this user may not use
// its socket.
var ErrPermission = errors.New("permission denied")

// Call sends req to the server at socket and decodes its data into out
// (which may be nil).
func Call(ctx context.Context, socket string, req Request, out any) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return dialError(socket, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.Error != "" {
		// A refusal: the same message, with its code for programs
		// (manage.CodeOf).
		code := resp.Code
		if code == "" {
			code = manage.Unavailable
		}
		return &manage.Error{Code: code, Message: resp.Error}
	}
	if out != nil && len(resp.Data) > 0 {
		if err := json.Unmarshal(resp.Data, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

// dialError says why the socket could not be reached: no server (no
// socket, or nobody accepting on it), or a user without the right to use
// it (the socket is 0600 in a 0700 directory: the server's user only).
func dialError(socket string, err error) error {
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		who := "the server's user"
		if owner := ownerOf(socket); owner != "" {
			who = owner + ", the server's user,"
		}
		return fmt.Errorf("%w on the control socket %s: run this command as %s or as root (sudo)", ErrPermission, socket, who)
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w at %s (is `sigillo serve` running with the same --config?)", ErrNoServer, socket)
	}
	return fmt.Errorf("%w at %s: %v", ErrNoServer, socket, err)
}

// ownerOf names the user owning the socket or, when it cannot be seen,
// its directory; "" if neither can be read.
func ownerOf(socket string) string {
	for _, p := range []string{socket, filepath.Dir(socket)} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return ""
		}
		if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil {
			return u.Username
		}
		return fmt.Sprintf("uid %d", st.Uid)
	}
	return ""
}
