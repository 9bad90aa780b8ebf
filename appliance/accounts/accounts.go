// Package accounts checks a mail user's credentials against the store, for
// every protocol front end (SMTP AUTH, IMAP LOGIN, POP3 USER/PASS). It owns
// the auth-failure penalty so that guessing over one protocol counts against
// all, bounds how many argon2id checks run at once (each takes 19 MiB), and
// remembers recent successful logins for a few minutes, as Dovecot's
// auth_cache does, since mail clients log in again and again. It is not
// where accounts are created: that is a storage command.
package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"sigillo/appliance/authlimit"
	"sigillo/appliance/passwd"
	"sigillo/storage"
)

// ErrAuthFailed is a wrong address or password. Any other error from Login
// is temporary (the store could not be read).
var ErrAuthFailed = errors.New("authentication failed")

// Reader is the part of the store Login needs.
type Reader interface {
	MailboxByAddress(ctx context.Context, address string) (storage.Mailbox, error)
}

// Authenticator logs mail users in. The zero value with a Store is usable;
// share one Authenticator between the front ends.
type Authenticator struct {
	Store   Reader
	Limiter *authlimit.Limiter
	// CacheFor is how long a successful login is remembered (default 5
	// minutes; negative: never). Now is the clock (default time.Now).
	CacheFor time.Duration
	Now      func() time.Time
	// Sync, if set, catches this node up with the cluster's leader (a read
	// barrier). A failed login calls it and checks again when the mailbox
	// changed meanwhile: a mailbox made, or a password changed, through
	// another node an instant ago logs in on this one too. Unknown
	// addresses and wrong passwords both pay it, so it tells nothing.
	Sync func(ctx context.Context) error

	once  sync.Once
	slots chan struct{} // bounds concurrent argon2id checks
	key   []byte        // HMAC key of the cache, random per process
	mu    sync.Mutex
	cache map[string]cached
}

// cached is a remembered login: valid while the stored hash is unchanged
// (a new password misses) and until expiry. The password itself is kept
// only as an HMAC under a per-process key.
type cached struct {
	phc     string
	mac     []byte
	expires time.Time
}

const maxCached = 10000

func (a *Authenticator) init() {
	a.once.Do(func() {
		a.slots = make(chan struct{}, runtime.GOMAXPROCS(0))
		a.key = make([]byte, 32)
		rand.Read(a.key)
		a.cache = map[string]cached{}
	})
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authenticator) cacheFor() time.Duration {
	if a.CacheFor == 0 {
		return 5 * time.Minute
	}
	return a.CacheFor
}

func (a *Authenticator) mac(address, password string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(address))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return m.Sum(nil)
}

// verify checks password against phc, from the cache if it can, else with
// argon2id, at most GOMAXPROCS at a time.
func (a *Authenticator) verify(ctx context.Context, address, phc, password string, known bool) (bool, error) {
	a.init()
	mac := a.mac(address, password)
	if known {
		a.mu.Lock()
		c, ok := a.cache[address]
		a.mu.Unlock()
		if ok && c.phc == phc && a.now().Before(c.expires) && hmac.Equal(c.mac, mac) {
			return true, nil
		}
	}
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	ok := passwd.Verify(phc, password)
	<-a.slots
	if ok && known && a.cacheFor() > 0 {
		a.mu.Lock()
		if len(a.cache) >= maxCached {
			clear(a.cache)
		}
		a.cache[address] = cached{phc: phc, mac: mac, expires: a.now().Add(a.cacheFor())}
		a.mu.Unlock()
	}
	return ok && known, nil
}

// dummyHash is checked when the address is unknown, so that a wrong address
// costs the same time as a wrong password.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2lnaWxsb2R1bW15c2FsdA$7Zy4mjfQ3cKpQh3Yx0bQ8mBbYd8N4n0f1c0y2m0Zk6s"

// Login checks username (the full address) and password. A host under
// penalty waits its turn first; on failure Login waits the penalty for
// remote's host before returning ErrAuthFailed.
func (a *Authenticator) Login(ctx context.Context, username, password string, remote net.Addr) (storage.Mailbox, error) {
	host := authlimit.Host(remote)
	if a.Limiter != nil {
		if err := a.Limiter.Admit(ctx, host); err != nil {
			return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
		}
	}
	mb, err := a.Check(ctx, username, password)
	if a.Limiter != nil {
		switch {
		case errors.Is(err, ErrAuthFailed):
			a.Limiter.Failed(ctx, host, a.Limiter.Fingerprint(username, password))
		case err == nil:
			a.Limiter.Succeeded(host)
		}
	}
	return mb, err
}

// Check verifies the credentials without any penalty, for a front end
// that applies the limiter itself (POP3).
func (a *Authenticator) Check(ctx context.Context, username, password string) (storage.Mailbox, error) {
	mb, err := a.Store.MailboxByAddress(ctx, username)
	if err != nil && !storage.IsCode(err, storage.ErrNotFound) {
		return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
	}
	known := err == nil
	hash := mb.PasswordHash
	if !known {
		hash = dummyHash
	}
	ok, err := a.verify(ctx, mb.Address, hash, password, known)
	if err != nil {
		return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
	}
	if !ok && a.Sync != nil && a.Sync(ctx) == nil {
		// Behind the leader? Check again what changed meanwhile.
		if now, err := a.Store.MailboxByAddress(ctx, username); err == nil && now.PasswordHash != mb.PasswordHash {
			mb = now
			if ok, err = a.verify(ctx, mb.Address, mb.PasswordHash, password, true); err != nil {
				return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
			}
		}
	}
	if !ok {
		return storage.Mailbox{}, ErrAuthFailed
	}
	return mb, nil
}
