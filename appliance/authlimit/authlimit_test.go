package authlimit

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

func TestFailuresSlowDownAndParallelConnectionsDoNotHelp(t *testing.T) {
	l := New(time.Now, 40*time.Millisecond, 400*time.Millisecond, time.Minute)
	ctx := context.Background()
	host := Host(&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000})
	if host != "192.0.2.7" {
		t.Fatalf("host %q", host)
	}
	if d := l.Failed(ctx, host); d != 40*time.Millisecond {
		t.Fatalf("first penalty %v", d)
	}
	if d := l.Failed(ctx, host); d != 80*time.Millisecond {
		t.Fatalf("second penalty %v", d)
	}
	// Five guesses in parallel from the penalised host are spaced by the
	// penalty (80 ms after two failures), not answered together.
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
	if took := time.Since(start); took < 4*80*time.Millisecond {
		t.Fatalf("5 parallel attempts admitted in %v; want them spaced by 80 ms", took)
	}
	// Another host is not affected; a success clears the penalty.
	if err := l.Admit(ctx, "198.51.100.1"); err != nil {
		t.Fatal(err)
	}
	l.Succeeded(host)
	start = time.Now()
	l.Admit(ctx, host)
	if time.Since(start) > 20*time.Millisecond {
		t.Fatal("penalty kept after a success")
	}
	v6 := Host(&net.TCPAddr{IP: net.ParseIP("2001:db8::1:2:3:4")})
	if v6 != "2001:db8::" {
		t.Fatalf("IPv6 hosts are counted by /64, got %q", v6)
	}
}
