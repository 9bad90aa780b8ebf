package certstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

func newStore(t *testing.T) (*storage.Store, *apptest.Proposer) {
	t.Helper()
	st, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, apptest.NewProposer(st)
}

// switchProposer is a node's way to the raft leader, which can go down.
type switchProposer struct {
	p    storage.Proposer
	down atomic.Bool
}

func (s *switchProposer) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	if s.down.Load() {
		return storage.Applied{}, errors.New("no quorum")
	}
	return s.p.Apply(ctx, cmd)
}

func TestAValueRoundTrips(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	clk := apptest.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	s := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1", Now: clk.Now}

	value := []byte("-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n")
	key := "certificates/acme-v02.example-directory/mail.example.test/mail.example.test.crt"
	if err := s.Store(ctx, key, value); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, key)
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("load: %q %v", got, err)
	}
	if !s.Exists(ctx, key) || !s.Exists(ctx, "certificates/acme-v02.example-directory") {
		t.Fatal("stored key or its directory does not exist")
	}
	info, err := s.Stat(ctx, key)
	want := certmagic.KeyInfo{Key: key, Modified: clk.Now(), Size: int64(len(value)), IsTerminal: true}
	if err != nil || !info.Modified.Equal(want.Modified) || info.Key != want.Key || info.Size != want.Size || !info.IsTerminal {
		t.Fatalf("stat: %+v %v, want %+v", info, err, want)
	}

	// Overwrite, later.
	clk.Set(clk.Now().Add(time.Hour))
	if err := s.Store(ctx, key, []byte("short")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(ctx, key); err != nil || string(got) != "short" {
		t.Fatalf("load after overwrite: %q %v", got, err)
	}
	if info, err := s.Stat(ctx, key); err != nil || info.Size != 5 || !info.Modified.Equal(clk.Now()) {
		t.Fatalf("stat after overwrite: %+v %v", info, err)
	}
	// An empty value is a value.
	if err := s.Store(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(ctx, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("load empty: %q %v", got, err)
	}

	// Another node (same key, other owner) reads the same.
	other := &Storage{Reader: st, Proposer: p, Key: bytes.Clone(testKey), Owner: "n2"}
	if got, err := other.Load(ctx, key); err != nil || string(got) != "short" {
		t.Fatalf("load on another node: %q %v", got, err)
	}

	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load after delete: %v", err)
	}
	if s.Exists(ctx, "certificates") {
		t.Fatal("a directory with nothing left in it still exists")
	}
}

func TestAMissingKeyIsErrNotExist(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	s := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1"}
	if err := s.Store(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"nope", "a/nope", "a/b/c/d", "ab"} {
		if _, err := s.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), key) {
			t.Errorf("load %s: %v", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s: %v", key, err)
		}
		if _, err := s.List(ctx, key, false); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("list %s: %v", key, err)
		}
		if s.Exists(ctx, key) {
			t.Errorf("%s exists", key)
		}
		if err := s.Delete(ctx, key); err != nil {
			t.Errorf("delete %s: %v", key, err)
		}
	}
	// "a" is a directory, not a missing file.
	if _, err := s.Load(ctx, "a"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("load of a directory: %v", err)
	}
}

// pruneEmptyDirs removes the directories a FileStorage delete left empty
// from dir up to root, and makes root again if it was deleted: a
// replicated key-value store has no empty directories, and its root is
// always there. These are the differences from a file system by design.
func pruneEmptyDirs(root, dir string) {
	for dir != root && strings.HasPrefix(dir, root) {
		if os.Remove(dir) != nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	_ = os.MkdirAll(root, 0o700)
}

// TestListAndStatBehaveAsFileStorage runs one sequence of operations on a
// certmagic.FileStorage and on a Storage and compares what every query
// says after each step.
func TestListAndStatBehaveAsFileStorage(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	clk := apptest.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	ours := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1", Now: clk.Now}
	root := t.TempDir()
	fileStore := &certmagic.FileStorage{Path: root}
	stored := map[string]time.Time{} // when each value was stored, ours

	queries := []string{
		"", "a", "a/b", "a/b/c.crt", "a/b/c.key", "a/b2", "a/b2/x", "a.txt", "a/d", "ab",
		"users", "users/ca", "users/ca/e1", "users/ca/e1/key", "z", "nope", "a/nope", "a/b/", "/a/b", "a//b2",
	}
	type op struct {
		name string
		do   func(s certmagic.Storage) error
	}
	store := func(key, value string) op {
		return op{"store " + key, func(s certmagic.Storage) error { return s.Store(ctx, key, []byte(value)) }}
	}
	del := func(key string) op {
		return op{"delete " + key, func(s certmagic.Storage) error {
			err := s.Delete(ctx, key)
			if _, ok := s.(*certmagic.FileStorage); ok {
				pruneEmptyDirs(root, filepath.Dir(fileStore.Filename(key)))
			}
			return err
		}}
	}
	ops := []op{
		store("a/b/c.crt", "certificate"),
		store("a/b/c.key", "private key"),
		store("a/b2/x", "x"),
		store("a.txt", "text"),
		store("a/d", "dee"),
		store("ab", "ab"),
		store("users/ca/e1/key", "account key 1"),
		store("users/ca/e2/key", "account key 2"),
		store("z", ""),
		store("a/b", "a file where a directory is"),
		store("a.txt/x", "a file below a file"),
		store("a/d", "a longer value for dee"),
		del("a/b/c.crt"),
		del("nope"),
		del("a/b"),
		del("a/b2/x"),
		del("users"),
		store("users/ca/e3/key", "account key 3"),
		del(""),
		store("a/b/c.crt", "certificate again"),
	}

	compare := func(step string) {
		t.Helper()
		for _, q := range queries {
			for _, rec := range []bool{false, true} {
				want, werr := fileStore.List(ctx, q, rec)
				got, gerr := ours.List(ctx, q, rec)
				if (werr == nil) != (gerr == nil) || errors.Is(werr, fs.ErrNotExist) != errors.Is(gerr, fs.ErrNotExist) {
					t.Errorf("%s: list %q %v: error %v, FileStorage %v", step, q, rec, gerr, werr)
				} else if len(want)+len(got) > 0 && !reflect.DeepEqual(got, want) {
					t.Errorf("%s: list %q %v: %q, FileStorage %q", step, q, rec, got, want)
				}
			}
			wi, werr := fileStore.Stat(ctx, q)
			gi, gerr := ours.Stat(ctx, q)
			if (werr == nil) != (gerr == nil) || errors.Is(werr, fs.ErrNotExist) != errors.Is(gerr, fs.ErrNotExist) {
				t.Errorf("%s: stat %q: error %v, FileStorage %v", step, q, gerr, werr)
			} else if werr == nil {
				if gi.Key != wi.Key || gi.IsTerminal != wi.IsTerminal || (wi.IsTerminal && gi.Size != wi.Size) {
					t.Errorf("%s: stat %q: %+v, FileStorage %+v", step, q, gi, wi)
				}
				if at, ok := stored[clean(q)]; gi.IsTerminal && (!ok || !gi.Modified.Equal(at)) {
					t.Errorf("%s: stat %q: modified %v, stored at %v", step, q, gi.Modified, at)
				}
			}
			if g, w := ours.Exists(ctx, q), fileStore.Exists(ctx, q); g != w {
				t.Errorf("%s: exists %q: %v, FileStorage %v", step, q, g, w)
			}
			wv, werr := fileStore.Load(ctx, q)
			gv, gerr := ours.Load(ctx, q)
			if (werr == nil) != (gerr == nil) || errors.Is(werr, fs.ErrNotExist) != errors.Is(gerr, fs.ErrNotExist) || !bytes.Equal(gv, wv) {
				t.Errorf("%s: load %q: %q %v, FileStorage %q %v", step, q, gv, gerr, wv, werr)
			}
		}
	}
	compare("start")
	for i, o := range ops {
		clk.Set(clk.Now().Add(time.Minute))
		werr := o.do(fileStore)
		gerr := o.do(ours)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s: error %v, FileStorage %v", o.name, gerr, werr)
		}
		if gerr == nil && strings.HasPrefix(o.name, "store ") {
			stored[clean(strings.TrimPrefix(o.name, "store "))] = clk.Now()
		}
		compare(fmt.Sprintf("step %d (%s)", i, o.name))
	}
}

func TestADirectoryIsAsNewAsItsNewestValue(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	clk := apptest.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	s := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1", Now: clk.Now}
	for i, k := range []string{"users/ca/old@x/reg.json", "users/ca/new@x/reg.json", "users/ca/old@x/key"} {
		clk.Set(time.Date(2026, 3, 1+i, 10, 0, 0, 0, time.UTC))
		if err := s.Store(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// certmagic picks the most recent account by the Modified of its
	// directory.
	for dir, want := range map[string]time.Time{
		"users/ca/new@x": time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC),
		"users/ca/old@x": time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC),
		"users":          time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC),
	} {
		info, err := s.Stat(ctx, dir)
		if err != nil || info.IsTerminal || info.Key != dir || !info.Modified.Equal(want) {
			t.Errorf("stat %s: %+v %v, want modified %v", dir, info, err, want)
		}
	}
}

func TestNothingIsStoredInClear(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	s := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1"}
	secrets := map[string]string{
		"certificates/ca/a.test/a.test.key":  "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIO2secretsecretsecret\n-----END EC PRIVATE KEY-----\n",
		"certificates/ca/a.test/a.test.crt":  "-----BEGIN CERTIFICATE-----\nMIIBpublicbutstillencrypted\n-----END CERTIFICATE-----\n",
		"certificates/ca/a.test/a.test.json": `{"sans":["a.test"],"issuer_data":{"url":"https://ca/cert/1"}}`,
		"acme/ca/users/me@a.test/me.json":    `{"status":"valid","contact":["mailto:me@a.test"]}`,
	}
	for k, v := range secrets {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := st.KVKeys(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(secrets) {
		t.Fatalf("kv keys %q", keys)
	}
	for _, kk := range keys {
		raw, err := st.KV(ctx, kk)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range secrets {
			// Any 8 bytes in a row of a value would be a leak.
			for i := 0; i+8 <= len(v); i++ {
				if bytes.Contains(raw, []byte(v[i:i+8])) {
					t.Fatalf("%s holds %q in clear", kk, v[i:i+8])
				}
			}
		}
	}
	// Nor does the same value stored twice look the same (random nonce).
	if err := s.Store(ctx, "twin1", []byte("same")); err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "twin2", []byte("same")); err != nil {
		t.Fatal(err)
	}
	r1, _ := st.KV(ctx, kvPrefix+"twin1")
	r2, _ := st.KV(ctx, kvPrefix+"twin2")
	if bytes.Equal(r1[envHeaderLen:], r2[envHeaderLen:]) {
		t.Fatal("equal values encrypt alike")
	}
}

func TestAValueThatDoesNotDecryptIsAnError(t *testing.T) {
	ctx := context.Background()
	st, p := newStore(t)
	s := &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "n1"}
	if err := s.Store(ctx, "sites/a.test/a.test.key", []byte("private")); err != nil {
		t.Fatal(err)
	}
	raw, err := st.KV(ctx, kvPrefix+"sites/a.test/a.test.key")
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, value []byte) {
		t.Helper()
		p.Must(t, &storage.PutKV{Key: kvPrefix + key, Value: value})
	}
	expectBroken := func(s *Storage, key string) {
		t.Helper()
		v, err := s.Load(ctx, key)
		if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), key) || v != nil {
			t.Errorf("load %s: %q %v, want an error naming it", key, v, err)
		}
		if _, err := s.Stat(ctx, key); err == nil {
			t.Errorf("stat %s: no error", key)
		}
	}

	// Moved to another key.
	put("sites/b.test/b.test.key", raw)
	expectBroken(s, "sites/b.test/b.test.key")
	// A changed modification time.
	changed := bytes.Clone(raw)
	changed[envHeaderLen-1] ^= 1
	put("sites/a.test/changed", changed)
	expectBroken(s, "sites/a.test/changed")
	// A flipped bit of ciphertext, a truncated value, not an envelope.
	changed = bytes.Clone(raw)
	changed[len(changed)-1] ^= 1
	put("flipped", changed)
	expectBroken(s, "flipped")
	put("short", raw[:envHeaderLen+5])
	expectBroken(s, "short")
	put("plain", []byte("-----BEGIN CERTIFICATE-----"))
	expectBroken(s, "plain")
	// The directory holding a broken value cannot be dated either.
	if _, err := s.Stat(ctx, "sites"); err == nil {
		t.Error("stat of a directory with a broken value: no error")
	}
	// Another encryption key.
	wrong := &Storage{Reader: st, Proposer: p, Key: bytes.Repeat([]byte{7}, KeySize), Owner: "n1"}
	expectBroken(wrong, "sites/a.test/a.test.key")
	// A key of the wrong size is refused, for writing too.
	bad := &Storage{Reader: st, Proposer: p, Key: []byte("short"), Owner: "n1"}
	if err := bad.Store(ctx, "x", []byte("v")); err == nil {
		t.Error("store with a 5-byte key")
	}
	// The original still reads.
	if v, err := s.Load(ctx, "sites/a.test/a.test.key"); err != nil || string(v) != "private" {
		t.Fatalf("original: %q %v", v, err)
	}
}

// lockStorages returns two nodes' Storages on one store with short lock
// times.
func lockStorages(t *testing.T, ttl time.Duration) (st *storage.Store, a, b *Storage, pa *switchProposer) {
	st, p := newStore(t)
	pa = &switchProposer{p: p}
	a = &Storage{Reader: st, Proposer: pa, Key: testKey, Owner: "node-a", LockTTL: ttl, Poll: 10 * time.Millisecond}
	b = &Storage{Reader: st, Proposer: p, Key: testKey, Owner: "node-b", LockTTL: ttl, Poll: 10 * time.Millisecond}
	return st, a, b, pa
}

// lockAsync runs s.Lock in a goroutine; the channel gives its result.
func lockAsync(ctx context.Context, s *Storage, name string) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Lock(ctx, name) }()
	return ch
}

func checkOwner(t *testing.T, st *storage.Store, name, want string) {
	t.Helper()
	owner, _, ok, err := st.Lock(context.Background(), lockPrefix+name)
	if err != nil || (want == "") == ok || owner != want {
		t.Fatalf("lock %s: owner %q %v %v, want %q", name, owner, ok, err, want)
	}
}

// checkStopped verifies s holds nothing and no renewal runs.
func checkStopped(t *testing.T, s *Storage, hs ...*heldLock) {
	t.Helper()
	s.mu.Lock()
	n := len(s.held)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%s still holds %d locks", s, n)
	}
	for _, h := range hs {
		select {
		case <-h.done:
		default:
			t.Fatal("renewal still running")
		}
	}
}

func heldBy(s *Storage, name string) *heldLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[name]
}

func TestASecondLockWaitsForTheUnlock(t *testing.T) {
	ctx := context.Background()
	st, a, b, _ := lockStorages(t, 10*time.Second)
	if err := a.Lock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	h := heldBy(a, "issue_cert_a.test")
	checkOwner(t, st, "issue_cert_a.test", "node-a")
	got := lockAsync(ctx, b, "issue_cert_a.test")
	// Another name is another lock.
	if err := b.Lock(ctx, "issue_cert_b.test"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		t.Fatalf("second Lock returned while the first is held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := a.Unlock(ctx, "issue_cert_a.test"); err != nil {
		t.Fatal(err)
	}
	checkStopped(t, a, h)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock still waiting after Unlock")
	}
	checkOwner(t, st, "issue_cert_a.test", "node-b")
	for _, n := range []string{"issue_cert_a.test", "issue_cert_b.test"} {
		if err := b.Unlock(ctx, n); err != nil {
			t.Fatal(err)
		}
		checkOwner(t, st, n, "")
	}
	checkStopped(t, b)
}

func TestALockWhoseHolderStoppedRenewingIsTakenAfterItsTTL(t *testing.T) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	st, a, b, pa := lockStorages(t, ttl)
	if err := a.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	h := heldBy(a, "acme")
	// Node a loses the cluster: it cannot renew its lock.
	pa.down.Store(true)
	start := time.Now()
	if err := b.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < ttl/2 {
		t.Fatalf("took a lock that was not stale after %v", waited)
	}
	checkOwner(t, st, "acme", "node-b")
	// Back, node a learns that it lost the lock, and does not release b's.
	pa.down.Store(false)
	if err := a.Unlock(ctx, "acme"); err == nil || !strings.Contains(err.Error(), "taken over") {
		t.Fatalf("unlock of a lost lock: %v", err)
	}
	checkStopped(t, a, h)
	checkOwner(t, st, "acme", "node-b")
	if err := b.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	checkStopped(t, b)
}

func TestALockWhoseHolderDiedIsTakenAfterItsTTL(t *testing.T) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	st, _, b, _ := lockStorages(t, ttl)
	// A node took the lock and died: nobody renews it.
	now := time.Now()
	if _, err := b.Proposer.Apply(ctx, &storage.TryLock{Name: lockPrefix + "acme", Owner: "dead",
		Now: now.UnixMilli(), Expires: now.Add(ttl).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if err := b.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if !time.Now().After(now.Add(ttl)) {
		t.Fatal("took a lock before it expired")
	}
	checkOwner(t, st, "acme", "node-b")
	if err := b.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
}

func TestALockRenewedDuringALongHoldIsNotTaken(t *testing.T) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	st, a, b, _ := lockStorages(t, ttl)
	if err := a.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Hold it for five times its time to live.
	wctx, cancel := context.WithTimeout(ctx, 5*ttl)
	defer cancel()
	if err := b.Lock(wctx, "acme"); err != wctx.Err() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock of a renewed lock: %v", err)
	}
	_, expires, _, err := st.Lock(ctx, lockPrefix+"acme")
	if err != nil || !expires.After(time.Now()) {
		t.Fatalf("lock expires %v (%v), not in the future", expires, err)
	}
	checkOwner(t, st, "acme", "node-a")
	checkStopped(t, b)
	if err := a.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	checkOwner(t, st, "acme", "")
	checkStopped(t, a)
}

func TestLockReturnsTheContextErrorWhenCancelled(t *testing.T) {
	ctx := context.Background()
	_, a, b, _ := lockStorages(t, 10*time.Second)
	if err := a.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	got := lockAsync(cctx, b, "acme")
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-got:
		if err != context.Canceled {
			t.Fatalf("cancelled Lock: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Lock still waiting")
	}
	// Already cancelled: not even a try, on a free lock too.
	if err := b.Lock(cctx, "free"); err != context.Canceled {
		t.Fatalf("Lock with a cancelled context: %v", err)
	}
	// Waiting for a lock held in the same process.
	cctx2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := a.Lock(cctx2, "acme"); err != context.DeadlineExceeded {
		t.Fatalf("second local Lock: %v", err)
	}
	checkStopped(t, b)
	if err := a.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	checkStopped(t, a)
}

func TestTryLockDoesNotWait(t *testing.T) {
	ctx := context.Background()
	st, a, b, _ := lockStorages(t, 10*time.Second)
	if ok, err := a.TryLock(ctx, "ari_x"); !ok || err != nil {
		t.Fatalf("trylock of a free lock: %v %v", ok, err)
	}
	if ok, err := b.TryLock(ctx, "ari_x"); ok || err != nil {
		t.Fatalf("trylock of another node's lock: %v %v", ok, err)
	}
	if ok, err := a.TryLock(ctx, "ari_x"); ok || err != nil {
		t.Fatalf("trylock of a lock held in this process: %v %v", ok, err)
	}
	if err := a.Unlock(ctx, "ari_x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "ari_x"); !ok || err != nil {
		t.Fatalf("trylock after unlock: %v %v", ok, err)
	}
	checkOwner(t, st, "ari_x", "node-b")
	if err := b.Unlock(ctx, "ari_x"); err != nil {
		t.Fatal(err)
	}
	checkStopped(t, a)
	checkStopped(t, b)
}

func TestUnlockOfALockNotHeld(t *testing.T) {
	ctx := context.Background()
	st, a, b, _ := lockStorages(t, 10*time.Second)
	// Nothing there: nothing to do.
	if err := a.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// A lock this node held before a restart is released.
	now := time.Now()
	if _, err := b.Proposer.Apply(ctx, &storage.TryLock{Name: lockPrefix + "acme", Owner: "node-a",
		Now: now.UnixMilli(), Expires: now.Add(time.Hour).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	checkOwner(t, st, "acme", "")
	// Another node's lock is not.
	if err := b.Lock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx, "acme"); err == nil {
		t.Fatal("released another node's lock")
	}
	checkOwner(t, st, "acme", "node-b")
	if err := b.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	// Without an owner there are no locks.
	noOwner := &Storage{Reader: st, Proposer: b.Proposer, Key: testKey}
	if err := noOwner.Lock(ctx, "acme"); err == nil {
		t.Fatal("lock without an owner")
	}
}

// TestLocksExcludeEveryOtherHolder has goroutines on two nodes take the
// same lock over and over: never two inside at once.
func TestLocksExcludeEveryOtherHolder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, a, b, _ := lockStorages(t, 10*time.Second)
	a.Poll, b.Poll = time.Millisecond, time.Millisecond
	var inside, entries atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if err := s.Lock(ctx, "acme"); err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n != 1 {
					errs <- fmt.Errorf("%d holders at once", n)
				}
				entries.Add(1)
				time.Sleep(time.Millisecond)
				inside.Add(-1)
				if err := s.Unlock(ctx, "acme"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := entries.Load(); n != 40 {
		t.Fatalf("%d entries, want 40", n)
	}
	checkStopped(t, a)
	checkStopped(t, b)
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "certmagic.key")
	k1, err := LoadOrCreateKey(file)
	if err != nil || len(k1) != KeySize {
		t.Fatalf("create: %d bytes, %v", len(k1), err)
	}
	if bytes.Equal(k1, make([]byte, KeySize)) {
		t.Fatal("a zero key")
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	k2, err := LoadOrCreateKey(file)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second call: another key (%v)", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
	// Concurrent first calls agree.
	file2 := filepath.Join(dir, "race.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys[i], _ = LoadOrCreateKey(file2)
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if len(k) != KeySize || !bytes.Equal(k, keys[0]) {
			t.Fatal("concurrent first calls made different keys")
		}
	}
	// A damaged key file is an error, not a new key.
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Fatal("a 5-byte key file accepted")
	}
	if _, err := LoadOrCreateKey(filepath.Join(dir, "no", "such", "dir", "k")); err == nil {
		t.Fatal("key made in a missing directory")
	}
}

func TestKeysAreCleaned(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "/": "", "a": "a", "/a/": "a", "a//b": "a/b", "a/./b": "a/b", "../a": "a", "a/../../b": "b",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}
