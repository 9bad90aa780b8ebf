// Package authlimit slows down repeated authentication failures from one
// remote address, the way Postfix's anvil and Dovecot's auth penalty do.
//
// It is shared by the SMTP, IMAP and POP3 front ends so that guessing a
// password over one protocol counts against the others too. It is not a
// firewall: it never refuses a connection, it only makes attempts from a
// host with recent failures wait (at most the maximum delay), so a guesser
// gets a few tries a minute instead of thousands. As in Dovecot, the same
// wrong credentials tried again (a client with a stale password retrying)
// do not raise the penalty, so one such client cannot lock out the other
// users behind the same address.
package authlimit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// Limiter counts recent failures per remote host. The zero value is not
// usable; call New.
type Limiter struct {
	now    func() time.Time
	base   time.Duration
	max    time.Duration
	window time.Duration

	key []byte // for Fingerprint

	mu    sync.Mutex
	hosts map[string]*record
}

type record struct {
	failures int
	last     time.Time
	seen     []uint64 // fingerprints of the failed credentials counted
}

// maxSeen bounds the fingerprints kept per host.
const maxSeen = 16

// New returns a Limiter that doubles the delay from base with each failure
// in a row from one host, up to max, and forgets a host after window without
// failures. now is the clock (time.Now in production).
func New(now func() time.Time, base, max, window time.Duration) *Limiter {
	if now == nil {
		now = time.Now
	}
	key := make([]byte, 32)
	rand.Read(key)
	return &Limiter{now: now, base: base, max: max, window: window, key: key, hosts: map[string]*record{}}
}

// Default returns the production settings: 500 ms after the first failure,
// doubling to 15 s, forgotten after 15 minutes.
func Default() *Limiter {
	return New(time.Now, 500*time.Millisecond, 15*time.Second, 15*time.Minute)
}

// Host reduces a remote address ("1.2.3.4:5678") to the key failures are
// counted under: the IP for IPv4, the /64 for IPv6.
func Host(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		host = addr.String()
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return ip.String()
}

// Failed records a failed attempt from host with the credentials of
// fingerprint (0: unknown, always counted) and waits the penalty that
// follows it, or until ctx is done. It returns the penalty it applied.
func (l *Limiter) Failed(ctx context.Context, host string, fingerprint uint64) time.Duration {
	d := l.record(host, fingerprint)
	if d <= 0 {
		return 0
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return d
}

// Fingerprint identifies a pair of credentials without keeping them: an
// HMAC under a key of this Limiter's own, cut to 64 bits.
func (l *Limiter) Fingerprint(username, password string) uint64 {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return binary.BigEndian.Uint64(m.Sum(nil))
}

// Admit waits, before a password is checked, until the penalty of host's
// last failure has passed: at once for a host without recent failures, at
// most the maximum delay otherwise. It returns early with ctx's error.
func (l *Limiter) Admit(ctx context.Context, host string) error {
	l.mu.Lock()
	now := l.now()
	r := l.hosts[host]
	var wait time.Duration
	if r != nil && r.failures > 0 && now.Sub(r.last) <= l.window {
		wait = r.last.Add(l.delay(r.failures)).Sub(now)
	}
	l.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Succeeded forgets the failures of host.
func (l *Limiter) Succeeded(host string) {
	l.mu.Lock()
	delete(l.hosts, host)
	l.mu.Unlock()
}

// Failures reports the failures counted for host in the current window.
func (l *Limiter) Failures(host string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.hosts[host]
	if r == nil || l.now().Sub(r.last) > l.window {
		return 0
	}
	return r.failures
}

func (l *Limiter) record(host string, fingerprint uint64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	// Drop stale hosts lazily so the map cannot grow without bound.
	if len(l.hosts) > 10000 {
		for h, r := range l.hosts {
			if now.Sub(r.last) > l.window {
				delete(l.hosts, h)
			}
		}
	}
	r := l.hosts[host]
	if r == nil || now.Sub(r.last) > l.window {
		r = &record{}
		l.hosts[host] = r
	}
	r.last = now
	if fingerprint != 0 {
		for _, f := range r.seen {
			if f == fingerprint {
				// The same wrong credentials again: no new guess.
				return l.delay(r.failures)
			}
		}
		if len(r.seen) < maxSeen {
			r.seen = append(r.seen, fingerprint)
		}
	}
	r.failures++
	return l.delay(r.failures)
}

// delay is the penalty after n failures in a row.
func (l *Limiter) delay(n int) time.Duration {
	d := l.base
	for i := 1; i < n && d < l.max; i++ {
		d *= 2
	}
	if d > l.max {
		d = l.max
	}
	return d
}
