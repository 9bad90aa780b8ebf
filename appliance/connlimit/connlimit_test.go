package connlimit

import (
	"bufio"
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
