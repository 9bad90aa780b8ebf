package deadline

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pair is a real TCP connection on loopback: the server's side under a
// Policy, and the client's.
func pair(t *testing.T, p Policy) (server *Conn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server = New(raw, p)
	t.Cleanup(func() { client.Close(); server.Close() })
	return server, client
}

// readUntilError reads until an error and says when it came.
func readUntilError(c net.Conn) (time.Duration, error) {
	start := time.Now()
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return time.Since(start), err
		}
	}
}

func TestAClientThatSaysNothingBeforeLoginIsCutAfterLogin(t *testing.T) {
	s, _ := pair(t, Policy{Login: 150 * time.Millisecond, Session: time.Hour})
	// The library waits for a command with its own, longer deadline.
	s.SetReadDeadline(time.Now().Add(time.Hour))
	took, err := readUntilError(s)
	var de *Error
	if !errors.As(err, &de) || de.Transfer {
		t.Fatalf("got %v, want a deadline.Error outside a transfer", err)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("%v is not a net.Error timeout", err)
	}
	if took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("cut after %v, want about 150 ms", took)
	}
	if timedOut, inTransfer := s.TimedOut(); !timedOut || inTransfer {
		t.Fatalf("TimedOut() = %v, %v", timedOut, inTransfer)
	}
	// Afterwards: end of input at once, whatever deadline is asked for.
	s.SetReadDeadline(time.Now().Add(time.Hour))
	if n, err := s.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the timeout: %d, %v", n, err)
	}
}

func TestEachCommandBeforeLoginHasItsOwnWait(t *testing.T) {
	s, c := pair(t, Policy{Login: 300 * time.Millisecond, Session: time.Hour})
	buf := make([]byte, 16)
	for i := 0; i < 4; i++ { // 4 × 200 ms: longer than one Login, never idle for one
		s.SetReadDeadline(time.Now().Add(time.Hour))
		time.Sleep(200 * time.Millisecond)
		c.Write([]byte("NOOP\r\n"))
		if _, err := s.Read(buf); err != nil {
			t.Fatalf("command %d: %v", i+1, err)
		}
	}
}

func TestAnEstablishedSessionWaitsLonger(t *testing.T) {
	s, c := pair(t, Policy{Login: 100 * time.Millisecond, Session: time.Second})
	s.Established()
	s.SetReadDeadline(time.Now().Add(time.Hour))
	go func() {
		time.Sleep(400 * time.Millisecond)
		c.Write([]byte("a1 NOOP\r\n"))
	}()
	if _, err := s.Read(make([]byte, 16)); err != nil {
		t.Fatalf("established session cut before its timeout: %v", err)
	}
	s.SetReadDeadline(time.Time{}) // "no deadline" from a library is a wait too
	took, err := readUntilError(s)
	if !errors.As(err, new(*Error)) || took < 700*time.Millisecond || took > 4*time.Second {
		t.Fatalf("established session cut after %v with %v, want about 1 s", took, err)
	}
}

func TestAWakeUpFromOutsideIsKept(t *testing.T) {
	s, _ := pair(t, Policy{Login: time.Hour, Session: time.Hour})
	go func() {
		time.Sleep(50 * time.Millisecond)
		s.SetReadDeadline(time.Now()) // a server shutting down
	}()
	took, err := readUntilError(s)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() || errors.As(err, new(*Error)) {
		t.Fatalf("woken read returned %v, want the plain timeout", err)
	}
	if took > 2*time.Second {
		t.Fatalf("woken after %v", took)
	}
	if timedOut, _ := s.TimedOut(); timedOut {
		t.Fatal("a wake-up counted as the client's timeout")
	}
}

func TestATransferSlowerThanTheMinimumRateIsCut(t *testing.T) {
	s, c := pair(t, Policy{Login: time.Hour, Session: time.Hour, Data: 300 * time.Millisecond, MinRate: 1000})
	s.BeginTransfer()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // 10 bytes every 50 ms: 200 bytes/s
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				c.Write([]byte("0123456789"))
			}
		}
	}()
	s.SetReadDeadline(time.Now().Add(time.Hour)) // ignored during a transfer
	took, err := readUntilError(s)
	var de *Error
	if !errors.As(err, &de) || !de.Transfer {
		t.Fatalf("got %v, want a transfer deadline.Error", err)
	}
	// 300 ms / (1 - 200/1000) = 375 ms.
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("cut after %v, want about 375 ms", took)
	}
	if timedOut, inTransfer := s.TimedOut(); !timedOut || !inTransfer {
		t.Fatalf("TimedOut() = %v, %v", timedOut, inTransfer)
	}
}

func TestAFastTransferMayPauseButNotForLong(t *testing.T) {
	s, c := pair(t, Policy{Login: time.Hour, Session: time.Hour, Data: 400 * time.Millisecond, MinRate: 1000})
	s.BeginTransfer()
	errc := make(chan error, 1)
	go func() {
		// 1 MB at once (1,000 s of credit at 1,000 bytes/s), a 250 ms
		// pause, more, then silence.
		chunk := make([]byte, 64<<10)
		for i := 0; i < 16; i++ {
			if _, err := c.Write(chunk); err != nil {
				errc <- err
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
		_, err := c.Write(chunk)
		errc <- err
	}()
	start := time.Now()
	var got int
	buf := make([]byte, 64<<10)
	var err error
	for {
		var n int
		n, err = s.Read(buf)
		got += n
		if err != nil {
			break
		}
	}
	if werr := <-errc; werr != nil {
		t.Fatal(werr)
	}
	if got != 17*64<<10 {
		t.Fatalf("received %d bytes before %v, want all %d", got, err, 17*64<<10)
	}
	// The bytes' credit never puts the deadline more than Data ahead:
	// the final silence is cut after 400 ms, not 1,000 s.
	if took := time.Since(start); !errors.As(err, new(*Error)) || took > 3*time.Second {
		t.Fatalf("silence after the data: %v after %v", err, took)
	}
	s.EndTransfer()
}

func TestFindLooksUnderTLSAndWrappers(t *testing.T) {
	s, _ := pair(t, Policy{Login: time.Hour})
	type wrapper struct{ net.Conn }
	if Find(tls.Server(s, &tls.Config{})) != s {
		t.Fatal("not found under TLS")
	}
	if Find(unwrapper{s}) != s {
		t.Fatal("not found under a wrapper with Unwrap")
	}
	if Find(wrapper{s}) != nil {
		t.Fatal("found through a wrapper that hides it")
	}
}

type unwrapper struct{ net.Conn }

func (u unwrapper) Unwrap() net.Conn { return u.Conn }
