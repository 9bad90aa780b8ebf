package authlimit

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

func TestGuessesSlowDownButAStaleClientLocksNobodyOut(t *testing.T) {
	l := New(time.Now, 40*time.Millisecond, 400*time.Millisecond, time.Minute)
	ctx := context.Background()
	host := Host(&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000})
	if host != "192.0.2.7" {
		t.Fatalf("host %q", host)
	}
	// Different guesses double the penalty.
	if d := l.Failed(ctx, host, l.Fingerprint("bob", "guess 1")); d != 40*time.Millisecond {
		t.Fatalf("first penalty %v", d)
	}
	if d := l.Failed(ctx, host, l.Fingerprint("bob", "guess 2")); d != 80*time.Millisecond {
		t.Fatalf("second penalty %v", d)
	}
	// A client retrying the same stale password does not raise it.
	for i := 0; i < 5; i++ {
		if d := l.Failed(ctx, host, l.Fingerprint("bob", "guess 2")); d != 80*time.Millisecond {
			t.Fatalf("repeat %d raised the penalty to %v", i, d)
		}
	}
	if n := l.Failures(host); n != 2 {
		t.Fatalf("%d failures counted, want 2", n)
	}
	// Attempts from the host wait out the penalty of the last failure,
	// together: parallel connections are not queued behind each other, so
	// abandoned ones cannot push everyone's turn minutes away.
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Admit(ctx, host)
		}()
	}
	wg.Wait()
	if took := time.Since(start); took > 70*time.Millisecond {
		t.Fatalf("5 parallel attempts admitted after %v; the penalty is 80 ms from the last failure", took)
	}
	time.Sleep(90 * time.Millisecond)
	start = time.Now()
	l.Admit(ctx, host)
	if time.Since(start) > 20*time.Millisecond {
		t.Fatal("an attempt after the penalty still waited")
	}
	// Another host is not affected; a success clears the penalty.
	if err := l.Admit(ctx, "198.51.100.1"); err != nil {
		t.Fatal(err)
	}
	l.Succeeded(host)
	if n := l.Failures(host); n != 0 {
		t.Fatalf("%d failures after a success", n)
	}
	// The penalty is capped.
	for i := 0; i < 10; i++ {
		l.record(host, uint64(i+1))
	}
	if d := l.delay(l.Failures(host)); d != 400*time.Millisecond {
		t.Fatalf("capped delay %v", d)
	}
	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Admit(ctxDone, host); err == nil {
		t.Fatal("Admit ignored a cancelled context")
	}
	v6 := Host(&net.TCPAddr{IP: net.ParseIP("2001:db8::1:2:3:4")})
	if v6 != "2001:db8::" {
		t.Fatalf("IPv6 hosts are counted by /64, got %q", v6)
	}
}
