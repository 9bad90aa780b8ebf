// Package certstore keeps certmagic's storage (ACME accounts, certificates,
// their private keys, OCSP staples) in the replicated store, so that every
// node of a cluster shares them, and its locks as replicated locks, so that
// only one node at a time talks to the ACME CA for a name.
//
// Every value is encrypted with AES-256-GCM under a key that is not in the
// replicated store (LoadOrCreateKey): a copy of the database, a raft
// snapshot or a backup gives away no private key. Every node of a cluster
// must use the same key. The keys themselves (which name domains and
// account e-mail addresses) are not encrypted.
package certstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"sigillo/storage"
)

// Reader reads replicated state; *storage.Store is one. KV refuses a
// missing key with storage.ErrNotFound.
type Reader interface {
	KV(ctx context.Context, key string) ([]byte, error)
	KVKeys(ctx context.Context, prefix string) ([]string, error)
}

// Where things live in the replicated store.
const (
	// kvPrefix + a certmagic key is the KV key of its value.
	kvPrefix = "certmagic/"
	// lockPrefix + a certmagic lock name is the name of its storage lock.
	lockPrefix = "certmagic/"
)

// Defaults of the Storage fields.
const (
	DefaultLockTTL = 2 * time.Minute
	DefaultPoll    = time.Second
)

// KeySize is the size of the encryption key: AES-256.
const KeySize = 32

// Storage is a certmagic.Storage (and TryLocker) on the replicated store.
// Set the exported fields before first use and do not change them after;
// use it through a pointer. It is safe for concurrent use.
//
// Locks: Lock proposes storage.TryLock for Owner until Now+LockTTL, every
// Poll until it succeeds or its context ends; while the lock is held a
// goroutine renews it every LockTTL/3, until Unlock. A node that dies
// holding a lock keeps it for at most LockTTL. Expiry compares the clocks
// of different nodes: they must agree to much better than LockTTL.
type Storage struct {
	Reader   Reader
	Proposer storage.Proposer
	// Key is the AES-256 key of the values (KeySize bytes), the same on
	// every node.
	Key []byte
	// Owner names this node in locks; it must be unique in the cluster and
	// should stay the same across restarts (the raft server ID), so that a
	// node taking a lock again after a crash does not wait for its old one
	// to expire.
	Owner string
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// LockTTL is how long a lock lives without renewal; 0: DefaultLockTTL.
	LockTTL time.Duration
	// Poll is how often Lock tries again a lock held elsewhere; 0:
	// DefaultPoll.
	Poll time.Duration

	mu   sync.Mutex
	held map[string]*heldLock // by lock name: held, or being taken, here
}

// heldLock is a lock this Storage holds or is taking. While it is in
// Storage.held, other callers of Lock in this process wait for released.
type heldLock struct {
	acquired  bool          // the replicated lock is ours; a refresher runs
	unlocking bool          // Unlock has begun
	stop      chan struct{} // closed by Unlock: the refresher stops
	done      chan struct{} // closed by the refresher when it has stopped
	released  chan struct{} // closed when the name leaves Storage.held
	lost      error         // set by the refresher before done: taken over
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)

// String implements fmt.Stringer, for logs.
func (s *Storage) String() string {
	return "certstore:replicated(owner=" + s.Owner + ")"
}

func (s *Storage) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Storage) ttl() time.Duration {
	if s.LockTTL > 0 {
		return s.LockTTL
	}
	return DefaultLockTTL
}

func (s *Storage) poll() time.Duration {
	if s.Poll > 0 {
		return s.Poll
	}
	return DefaultPoll
}

// ---- keys and values ----

// clean gives a certmagic key its canonical form: no leading, trailing or
// doubled slashes; "" is the root.
func clean(key string) string {
	return strings.TrimPrefix(path.Clean("/"+key), "/")
}

// dirPrefix is the KV prefix of everything under the certmagic key k.
func dirPrefix(k string) string {
	if k == "" {
		return kvPrefix
	}
	return kvPrefix + k + "/"
}

// An envelope is version(1) | modified (unix ms, big-endian int64) |
// AES-256-GCM(nonce | ciphertext | tag) of the value. The header and the
// KV key are the additional data: neither the time nor the place of a
// value can be changed without its failing to decrypt.
const (
	envVersion   = 1
	envHeaderLen = 1 + 8
)

func (s *Storage) aead() (cipher.AEAD, error) {
	if len(s.Key) != KeySize {
		return nil, fmt.Errorf("certstore: the encryption key is %d bytes, want %d", len(s.Key), KeySize)
	}
	block, err := aes.NewCipher(s.Key)
	if err != nil {
		return nil, fmt.Errorf("certstore: %w", err)
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func additionalData(header []byte, kvKey string) []byte {
	ad := make([]byte, 0, len(header)+len(kvKey))
	return append(append(ad, header...), kvKey...)
}

func (s *Storage) seal(kvKey string, modified int64, value []byte) ([]byte, error) {
	aead, err := s.aead()
	if err != nil {
		return nil, err
	}
	env := make([]byte, envHeaderLen, envHeaderLen+len(value)+aead.Overhead())
	env[0] = envVersion
	binary.BigEndian.PutUint64(env[1:], uint64(modified))
	return aead.Seal(env, nil, value, additionalData(env[:envHeaderLen], kvKey)), nil
}

// open decrypts the envelope stored at kvKey (certmagic key k).
func (s *Storage) open(k, kvKey string, env []byte) (modified time.Time, value []byte, err error) {
	aead, err := s.aead()
	if err != nil {
		return time.Time{}, nil, err
	}
	if len(env) < envHeaderLen+aead.Overhead() || env[0] != envVersion {
		return time.Time{}, nil, fmt.Errorf("certstore: %s: not a value this store wrote", k)
	}
	header := env[:envHeaderLen]
	value, err = aead.Open(nil, nil, env[envHeaderLen:], additionalData(header, kvKey))
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("certstore: %s does not decrypt (another encryption key, or a value moved or damaged): %w", k, err)
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(header[1:]))), value, nil
}

// get reads and decrypts the value of k; ok is false if k has no value.
func (s *Storage) get(ctx context.Context, k string) (modified time.Time, value []byte, ok bool, err error) {
	if k == "" {
		return time.Time{}, nil, false, nil
	}
	env, err := s.Reader.KV(ctx, kvPrefix+k)
	if storage.IsCode(err, storage.ErrNotFound) {
		return time.Time{}, nil, false, nil
	}
	if err != nil {
		return time.Time{}, nil, false, fmt.Errorf("certstore: %s: %w", k, err)
	}
	modified, value, err = s.open(k, kvPrefix+k, env)
	return modified, value, err == nil, err
}

// has reports whether k has a value, without decrypting it.
func (s *Storage) has(ctx context.Context, k string) (bool, error) {
	if k == "" {
		return false, nil
	}
	_, err := s.Reader.KV(ctx, kvPrefix+k)
	if storage.IsCode(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("certstore: %s: %w", k, err)
	}
	return true, nil
}

// under lists the KV keys of the values under the directory k.
func (s *Storage) under(ctx context.Context, k string) ([]string, error) {
	keys, err := s.Reader.KVKeys(ctx, dirPrefix(k))
	if err != nil {
		return nil, fmt.Errorf("certstore: list %s: %w", k, err)
	}
	return keys, nil
}

func notExist(op, key string) error {
	return fmt.Errorf("certstore: %s %s: %w", op, key, fs.ErrNotExist)
}

// ---- certmagic.Storage ----

// Store implements certmagic.Storage. As in a file system, a key cannot be
// both a value and a directory: storing at a directory, or below a value,
// is an error (checked before the write, not in it: two nodes racing to
// make both could still).
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := clean(key)
	if k == "" {
		return errors.New("certstore: store: empty key")
	}
	below, err := s.under(ctx, k)
	if err != nil {
		return err
	}
	if len(below) > 0 {
		return fmt.Errorf("certstore: store %s: it is a directory", key)
	}
	for dir := path.Dir(k); dir != "."; dir = path.Dir(dir) {
		if ok, err := s.has(ctx, dir); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("certstore: store %s: %s is not a directory", key, dir)
		}
	}
	env, err := s.seal(kvPrefix+k, s.now().UnixMilli(), value)
	if err != nil {
		return err
	}
	if _, err := s.Proposer.Apply(ctx, &storage.PutKV{Key: kvPrefix + k, Value: env}); err != nil {
		return fmt.Errorf("certstore: store %s: %w", key, err)
	}
	return nil
}

// Load implements certmagic.Storage: an error wrapping fs.ErrNotExist if
// there is nothing at key, an error naming key if its value does not
// decrypt.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	k := clean(key)
	_, value, ok, err := s.get(ctx, k)
	if err != nil {
		return nil, err
	}
	if ok {
		return value, nil
	}
	if dir, err := s.isDir(ctx, k); err != nil {
		return nil, err
	} else if dir {
		return nil, fmt.Errorf("certstore: load %s: it is a directory", key)
	}
	return nil, notExist("load", key)
}

func (s *Storage) isDir(ctx context.Context, k string) (bool, error) {
	if k == "" {
		return true, nil // the root is always there
	}
	below, err := s.under(ctx, k)
	return len(below) > 0, err
}

// Exists implements certmagic.Storage: key is a value or a directory.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	k := clean(key)
	if ok, err := s.has(ctx, k); err != nil {
		return false
	} else if ok {
		return true
	}
	dir, err := s.isDir(ctx, k)
	return err == nil && dir
}

// Delete implements certmagic.Storage: the value at key, or everything
// under it if it is a directory. Nothing there is no error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := clean(key)
	kvKeys, err := s.under(ctx, k)
	if err != nil {
		return err
	}
	if ok, err := s.has(ctx, k); err != nil {
		return err
	} else if ok {
		kvKeys = append(kvKeys, kvPrefix+k)
	}
	for _, kk := range kvKeys {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("certstore: delete %s: %w", key, err)
		}
		if _, err := s.Proposer.Apply(ctx, &storage.DeleteKV{Key: kk}); err != nil {
			return fmt.Errorf("certstore: delete %s: %s: %w", key, strings.TrimPrefix(kk, kvPrefix), err)
		}
	}
	return nil
}

// List implements certmagic.Storage as certmagic.FileStorage does: the
// keys directly under dir (values and directories) or, recursive, every
// key below it, in the order of a walk of the tree; an error wrapping
// fs.ErrNotExist if dir does not exist. A value has nothing under it.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	k := clean(dir)
	kvKeys, err := s.under(ctx, k)
	if err != nil {
		return nil, err
	}
	if len(kvKeys) == 0 {
		if k == "" {
			return nil, nil
		}
		if ok, err := s.has(ctx, k); err != nil {
			return nil, err
		} else if ok {
			return nil, nil
		}
		return nil, notExist("list", dir)
	}
	p := dirPrefix(k)
	seen := make(map[string]bool)
	var out []string
	add := func(rel string) {
		if !seen[rel] {
			seen[rel] = true
			out = append(out, path.Join(dir, rel)) // as FileStorage: dir as given
		}
	}
	for _, kk := range kvKeys {
		rel := strings.TrimPrefix(kk, p)
		if !recursive {
			first, _, _ := strings.Cut(rel, "/")
			add(first)
			continue
		}
		for i := 0; i < len(rel); i++ {
			if rel[i] == '/' {
				add(rel[:i])
			}
		}
		add(rel)
	}
	slices.SortFunc(out, compareKeys)
	return out, nil
}

// compareKeys orders keys as a walk of their tree visits them: component
// by component, a directory before what is in it.
func compareKeys(a, b string) int {
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/"))
}

// Stat implements certmagic.Storage. A value's Size is the size of the
// value (not of its encryption) and Modified the time of its Store; a
// directory's Modified is that of the newest value under it.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	k := clean(key)
	modified, value, ok, err := s.get(ctx, k)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if ok {
		return certmagic.KeyInfo{Key: key, Modified: modified, Size: int64(len(value)), IsTerminal: true}, nil
	}
	kvKeys, err := s.under(ctx, k)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(kvKeys) == 0 && k != "" {
		return certmagic.KeyInfo{}, notExist("stat", key)
	}
	info := certmagic.KeyInfo{Key: key}
	for _, kk := range kvKeys {
		env, err := s.Reader.KV(ctx, kk)
		if storage.IsCode(err, storage.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %s: %w", key, err)
		}
		m, _, err := s.open(strings.TrimPrefix(kk, kvPrefix), kk, env)
		if err != nil {
			return certmagic.KeyInfo{}, err
		}
		if m.After(info.Modified) {
			info.Modified = m
		}
	}
	return info, nil
}

// ---- locks ----

// Lock implements certmagic.Locker: it returns when this node holds the
// lock, or with ctx.Err() when ctx ends first. Within the process, Lock
// for a name this Storage holds waits for its Unlock, as across nodes.
func (s *Storage) Lock(ctx context.Context, name string) error {
	h, err := s.reserve(ctx, name, true)
	if err != nil {
		return err
	}
	var timer *time.Timer
	for {
		if err := ctx.Err(); err != nil {
			s.unreserve(name, h)
			return err
		}
		ok, err := s.tryLock(ctx, name)
		if ok {
			s.acquired(name, h)
			return nil
		}
		if err != nil && ctx.Err() != nil {
			// A proposal cut short by ctx may still be applied: the lock
			// then expires after its time to live.
			err = ctx.Err()
		}
		if err == nil {
			if timer == nil {
				timer = time.NewTimer(s.poll())
				defer timer.Stop()
			} else {
				timer.Reset(s.poll())
			}
			select {
			case <-timer.C:
				continue
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		s.unreserve(name, h)
		return err
	}
}

// TryLock implements certmagic.TryLocker: Lock without waiting. It
// reports false, with no error, if the lock is held by another node or by
// another caller in this process.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	h, err := s.reserve(ctx, name, false)
	if err != nil || h == nil {
		return false, err
	}
	ok, err := s.tryLock(ctx, name)
	if !ok {
		s.unreserve(name, h)
		return false, err
	}
	s.acquired(name, h)
	return true, nil
}

// Unlock implements certmagic.Locker: it stops renewing the lock and
// releases it. If another node took the lock over meanwhile (this one
// could not renew it in time), the error says so.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	if err := s.ready(); err != nil {
		return err
	}
	s.mu.Lock()
	h := s.held[name]
	if h != nil && (!h.acquired || h.unlocking) {
		s.mu.Unlock()
		return fmt.Errorf("certstore: unlock %s: not locked by this caller", name)
	}
	if h != nil {
		h.unlocking = true
	}
	s.mu.Unlock()

	var lost error
	if h != nil {
		close(h.stop)
		<-h.done
		lost = h.lost
		// Local waiters are let in only after the release: they would
		// renew this node's row, and the release would then drop it.
		defer s.unreserve(name, h)
	}
	_, err := s.Proposer.Apply(ctx, &storage.Unlock{Name: lockPrefix + name, Owner: s.Owner})
	switch {
	case storage.IsCode(err, storage.ErrLocked):
		return fmt.Errorf("certstore: lock %s was taken over by another node while held here: %w", name, err)
	case err != nil:
		return fmt.Errorf("certstore: unlock %s: %w", name, err)
	case lost != nil:
		return fmt.Errorf("certstore: lock %s was taken over by another node while held here: %w", name, lost)
	}
	return nil
}

func (s *Storage) ready() error {
	switch {
	case s.Owner == "":
		return errors.New("certstore: no Owner set for locks")
	case s.Proposer == nil || s.Reader == nil:
		return errors.New("certstore: no Reader or Proposer set")
	}
	return nil
}

// reserve makes this caller the only one in the process taking or holding
// name. If another has it, reserve waits for it to be released, or with
// wait false returns nil.
func (s *Storage) reserve(ctx context.Context, name string, wait bool) (*heldLock, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		other := s.held[name]
		if other == nil {
			if s.held == nil {
				s.held = make(map[string]*heldLock)
			}
			h := &heldLock{stop: make(chan struct{}), done: make(chan struct{}), released: make(chan struct{})}
			s.held[name] = h
			s.mu.Unlock()
			return h, nil
		}
		s.mu.Unlock()
		if !wait {
			return nil, nil
		}
		select {
		case <-other.released:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Storage) unreserve(name string, h *heldLock) {
	s.mu.Lock()
	delete(s.held, name)
	s.mu.Unlock()
	close(h.released)
}

// acquired starts renewing the lock h, now held, until Unlock.
func (s *Storage) acquired(name string, h *heldLock) {
	s.mu.Lock()
	h.acquired = true
	s.mu.Unlock()
	go s.renew(name, h)
}

// tryLock proposes the lock once: true if it is this node's now, false
// with no error if another holds it.
func (s *Storage) tryLock(ctx context.Context, name string) (bool, error) {
	now := s.now()
	_, err := s.Proposer.Apply(ctx, &storage.TryLock{
		Name:    lockPrefix + name,
		Owner:   s.Owner,
		Now:     now.UnixMilli(),
		Expires: now.Add(s.ttl()).UnixMilli(),
	})
	switch {
	case err == nil:
		return true, nil
	case storage.IsCode(err, storage.ErrLocked):
		return false, nil
	}
	return false, fmt.Errorf("certstore: lock %s: %w", name, err)
}

// renew keeps the lock h alive every third of its time to live, until
// Unlock stops it or another node has taken it over. A renewal that fails
// otherwise (no quorum) is tried again at the next tick.
func (s *Storage) renew(name string, h *heldLock) {
	defer close(h.done)
	ttl := s.ttl()
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		// Not cancelled by stop: Unlock waits for a renewal under way,
		// so that it cannot land after the release.
		ctx, cancel := context.WithTimeout(context.Background(), ttl)
		ok, err := s.tryLock(ctx, name)
		cancel()
		if !ok && err == nil {
			h.lost = fmt.Errorf("lock %s: another node holds it", name)
			return
		}
	}
}

// ---- the key ----

// LoadOrCreateKey reads the encryption key from the file at path, making
// it (KeySize random bytes, mode 0600) the first time. The new file is
// written whole under a temporary name and then linked into place, so a
// crash leaves no partial key and two processes racing to make it end up
// with the same one. Every node of a cluster needs the same key: copy the
// file to the others before they first start certmagic.
func LoadOrCreateKey(path string) ([]byte, error) {
	if key, err := readKey(path); !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("certstore: make key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(key)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("certstore: make key: %w", err)
	}
	// Link, unlike rename, does not replace a key another process has
	// just made.
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		return readKey(path)
	} else if err != nil {
		return nil, fmt.Errorf("certstore: make key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certstore: read key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("certstore: key file %s has %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}
