// Package accounts checks a mail user's credentials against the store, for
// every protocol front end (SMTP AUTH, IMAP LOGIN, POP3 USER/PASS). It owns
// the auth-failure penalty so that guessing over one protocol counts against
// all. It is not where accounts are created: that is a storage command.
package accounts

import (
	"context"
	"errors"
	"fmt"
	"net"

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

// Authenticator logs mail users in.
type Authenticator struct {
	Store   Reader
	Limiter *authlimit.Limiter
}

// dummyHash is checked when the address is unknown, so that a wrong address
// costs the same time as a wrong password.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2lnaWxsb2R1bW15c2FsdA$7Zy4mjfQ3cKpQh3Yx0bQ8mBbYd8N4n0f1c0y2m0Zk6s"

// Login checks username (the full address) and password. On failure it
// waits the penalty for remote's host before returning ErrAuthFailed.
func (a *Authenticator) Login(ctx context.Context, username, password string, remote net.Addr) (storage.Mailbox, error) {
	host := authlimit.Host(remote)
	if a.Limiter != nil {
		if err := a.Limiter.Admit(ctx, host); err != nil {
			return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
		}
	}
	mb, err := a.Store.MailboxByAddress(ctx, username)
	if err != nil && !storage.IsCode(err, storage.ErrNotFound) {
		return storage.Mailbox{}, fmt.Errorf("login %s: %w", username, err)
	}
	hash := mb.PasswordHash
	if err != nil {
		hash = dummyHash
	}
	if !passwd.Verify(hash, password) || err != nil {
		if a.Limiter != nil {
			a.Limiter.Failed(ctx, host)
		}
		return storage.Mailbox{}, ErrAuthFailed
	}
	if a.Limiter != nil {
		a.Limiter.Succeeded(host)
	}
	return mb, nil
}
