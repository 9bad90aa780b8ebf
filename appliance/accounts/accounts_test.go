package accounts

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/passwd"
	"sigillo/storage"
)

// directory is an in-memory account list: the part of the store Login reads.
type directory struct {
	mu  sync.Mutex
	mbs map[string]storage.Mailbox
}

func (d *directory) MailboxByAddress(_ context.Context, a string) (storage.Mailbox, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mb, ok := d.mbs[storage.NormalizeAddress(a)]
	if !ok {
		return mb, &storage.Error{Code: storage.ErrNotFound, Msg: "no mailbox"}
	}
	return mb, nil
}

func (d *directory) setPassword(t *testing.T, addr, pw string) {
	h, err := passwd.Hash(pw, passwd.Default())
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.mbs[addr] = storage.Mailbox{ID: 1, Address: addr, PasswordHash: h}
	d.mu.Unlock()
}

func TestARepeatedLoginIsRememberedUntilThePasswordChanges(t *testing.T) {
	ctx := context.Background()
	dir := &directory{mbs: map[string]storage.Mailbox{}}
	dir.setPassword(t, "u@a.test", "first password")
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	a := &Authenticator{Store: dir, Now: func() time.Time { return now }}

	timed := func(pw string) (time.Duration, error) {
		start := time.Now()
		_, err := a.Check(ctx, "U@a.test", pw)
		return time.Since(start), err
	}
	cold, err := timed("first password")
	if err != nil {
		t.Fatal(err)
	}
	warm, err := timed("first password")
	if err != nil {
		t.Fatal(err)
	}
	if warm*5 > cold {
		t.Fatalf("second login took %v, the first %v: not remembered", warm, cold)
	}
	if _, err := timed("wrong password"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password after a cached login: %v", err)
	}
	// A new password: the old one no longer works, cached or not.
	dir.setPassword(t, "u@a.test", "second password")
	if _, err := timed("first password"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("old password after a change: %v", err)
	}
	if _, err := timed("second password"); err != nil {
		t.Fatal(err)
	}
	// Past the cache time argon2id runs again.
	now = now.Add(6 * time.Minute)
	if d, err := timed("second password"); err != nil || d*5 < cold {
		t.Fatalf("after expiry: %v in %v (cold %v)", err, d, cold)
	}
	if _, err := a.Check(ctx, "nobody@a.test", "x"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("unknown user: %v", err)
	}
}

func TestManyLoginsAtOnceAllSucceed(t *testing.T) {
	dir := &directory{mbs: map[string]storage.Mailbox{}}
	dir.setPassword(t, "u@a.test", "pw pw pw pw")
	a := &Authenticator{Store: dir, CacheFor: -1}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Check(context.Background(), "u@a.test", "pw pw pw pw")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// On a node a little behind its leader, a mailbox just made or a password
// just changed elsewhere logs in: the failed check catches the node up
// (Sync) and looks again. A wrong password stays wrong.
func TestALoginOnANodeBehindItsLeaderCatchesUpFirst(t *testing.T) {
	ctx := context.Background()
	dir := &directory{mbs: map[string]storage.Mailbox{}}
	var pending func()
	syncs := 0
	a := &Authenticator{Store: dir, Sync: func(context.Context) error {
		syncs++
		if pending != nil {
			pending()
			pending = nil
		}
		return nil
	}}
	pending = func() { dir.setPassword(t, "new@a.test", "made elsewhere") }
	if _, err := a.Check(ctx, "new@a.test", "made elsewhere"); err != nil {
		t.Fatalf("a mailbox made through another node an instant ago: %v", err)
	}
	pending = func() { dir.setPassword(t, "new@a.test", "changed elsewhere") }
	if _, err := a.Check(ctx, "new@a.test", "changed elsewhere"); err != nil {
		t.Fatalf("a password changed through another node an instant ago: %v", err)
	}
	if _, err := a.Check(ctx, "new@a.test", "wrong"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := a.Check(ctx, "nobody@a.test", "x"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("unknown address: %v", err)
	}
	if syncs != 4 {
		t.Errorf("%d catch-ups, want one per failed first check (4)", syncs)
	}
}
