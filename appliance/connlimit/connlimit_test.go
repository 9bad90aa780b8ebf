package connlimit

import (
	"bufio"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

func TestAHostOverItsLimitIsToldAndOthersStillGetIn(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &Listener{Listener: inner, PerHost: 2, Total: 10, Refusal: "421 4.7.0 Too many connections\r\n"}
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	first, second := <-accepted, <-accepted
	third := dial()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(third).ReadString('\n')
	if err != nil || line != "421 4.7.0 Too many connections\r\n" {
		t.Fatalf("third connection got %q, %v", line, err)
	}
	third.Close()
	if total, host := ln.Open("127.0.0.1"); total != 2 || host != 2 {
		t.Fatalf("open %d/%d", total, host)
	}
	// Closing one frees a slot.
	first.Close()
	first.Close() // twice is harmless
	fourth := dial()
	defer fourth.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	second.Close()
}

func TestIdleSocketsNotLoggedInGiveWayToANewConnection(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &Listener{Listener: inner, PerHost: 10, Unauthenticated: 3}
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() (client, server net.Conn) {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		select {
		case s := <-accepted:
			t.Cleanup(func() { s.Close() })
			return c, s
		case <-time.After(5 * time.Second):
			t.Fatal("not accepted")
		}
		return nil, nil
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !isTimeout(err)
	}
	// a: talks, then is quiet; b: never sends a byte; c: talks last.
	aClient, aServer := dial()
	bClient, _ := dial()
	cClient, cServer := dial()
	aClient.Write([]byte("x"))
	aServer.Read(make([]byte, 1))
	time.Sleep(20 * time.Millisecond)
	cClient.Write([]byte("x"))
	cServer.Read(make([]byte, 1))
	if n := ln.Waiting("127.0.0.1"); n != 3 {
		t.Fatalf("%d waiting, want 3", n)
	}
	// A fourth takes the place of b, which never sent anything, though a
	// has been quiet longer.
	dClient, dServer := dial()
	if !closed(bClient) {
		t.Fatal("the socket that never sent a byte was not closed")
	}
	dClient.Write([]byte("x"))
	dServer.Read(make([]byte, 1))
	// A fifth: now a, the quietest of those that talked.
	eClient, _ := dial()
	if !closed(aClient) {
		t.Fatal("the quietest socket was not closed")
	}
	if n := ln.Waiting("127.0.0.1"); n != 3 {
		t.Fatalf("%d waiting, want 3", n)
	}
	// c logs in: it no longer counts, and is never closed to make room.
	Authenticated(tlsOver(cServer))
	if n := ln.Waiting("127.0.0.1"); n != 2 {
		t.Fatalf("%d waiting after a login, want 2", n)
	}
	dial()
	dial() // closes e, the oldest of those that never sent anything
	if !closed(eClient) {
		t.Fatal("e was not closed")
	}
	for name, c := range map[string]net.Conn{"c (logged in)": cClient, "d": dClient} {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("%s was closed: %v", name, err)
		}
	}
	if total, host := ln.Open("127.0.0.1"); total != 4 || host != 4 {
		t.Fatalf("open %d/%d, want 4 (c and three not logged in)", total, host)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// tlsOver is how a server holds a connection: under TLS.
func tlsOver(c net.Conn) net.Conn { return tls.Server(c, &tls.Config{}) }
