package storage

import (
	"context"
	"encoding/json"
	"testing"
	"time"
)

func checkLock(t *testing.T, s *Store, name, wantOwner string, wantExpires int64) {
	t.Helper()
	owner, expires, ok, err := s.Lock(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if wantOwner == "" {
		if ok {
			t.Fatalf("lock %s: held by %s until %v, want free", name, owner, expires)
		}
		return
	}
	if !ok || owner != wantOwner || !expires.Equal(time.UnixMilli(wantExpires)) {
		t.Fatalf("lock %s: %q %v %v, want %q %v", name, owner, expires, ok, wantOwner, time.UnixMilli(wantExpires))
	}
}

func TestLockIsExclusiveUntilItExpires(t *testing.T) {
	s, a := newStore(t)
	checkLock(t, s, "acme", "", 0)
	a.must(&TryLock{Name: "acme", Owner: "n1", Now: 1000, Expires: 2000})
	checkLock(t, s, "acme", "n1", 2000)

	if _, err := a.do(&TryLock{Name: "acme", Owner: "n2", Now: 1999, Expires: 3000}); !IsCode(err, ErrLocked) {
		t.Fatalf("second owner before expiry: %v, want %s", err, ErrLocked)
	}
	checkLock(t, s, "acme", "n1", 2000)
	// Other names are other locks.
	a.must(&TryLock{Name: "acme2", Owner: "n2", Now: 1500, Expires: 3000})
	checkLock(t, s, "acme2", "n2", 3000)

	// At its expiry the lock is free for anyone.
	a.must(&TryLock{Name: "acme", Owner: "n2", Now: 2000, Expires: 4000})
	checkLock(t, s, "acme", "n2", 4000)
	if _, err := a.do(&TryLock{Name: "acme", Owner: "n1", Now: 2500, Expires: 5000}); !IsCode(err, ErrLocked) {
		t.Fatalf("former owner after takeover: %v, want %s", err, ErrLocked)
	}
}

func TestLockHolderRefreshesItsLock(t *testing.T) {
	s, a := newStore(t)
	a.must(&TryLock{Name: "acme", Owner: "n1", Now: 1000, Expires: 2000})
	a.must(&TryLock{Name: "acme", Owner: "n1", Now: 1500, Expires: 2500})
	checkLock(t, s, "acme", "n1", 2500)
	if _, err := a.do(&TryLock{Name: "acme", Owner: "n2", Now: 2200, Expires: 3000}); !IsCode(err, ErrLocked) {
		t.Fatalf("refreshed lock taken: %v", err)
	}
	// The holder may also take its own lock back after it expired.
	a.must(&TryLock{Name: "acme", Owner: "n1", Now: 9000, Expires: 9500})
	checkLock(t, s, "acme", "n1", 9500)
}

func TestUnlockReleasesOnlyTheOwnersLock(t *testing.T) {
	s, a := newStore(t)
	a.must(&Unlock{Name: "acme", Owner: "n1"}) // absent: no error
	a.must(&TryLock{Name: "acme", Owner: "n1", Now: 1000, Expires: 2000})
	if _, err := a.do(&Unlock{Name: "acme", Owner: "n2"}); !IsCode(err, ErrLocked) {
		t.Fatalf("unlock by another owner: %v, want %s", err, ErrLocked)
	}
	checkLock(t, s, "acme", "n1", 2000)
	a.must(&Unlock{Name: "acme", Owner: "n1"})
	checkLock(t, s, "acme", "", 0)
	a.must(&Unlock{Name: "acme", Owner: "n1"})
	a.must(&TryLock{Name: "acme", Owner: "n2", Now: 1001, Expires: 2000})
	checkLock(t, s, "acme", "n2", 2000)
}

func TestLockRefusesBadCommands(t *testing.T) {
	_, a := newStore(t)
	for _, c := range []Command{
		&TryLock{Owner: "n1", Now: 1, Expires: 2},
		&TryLock{Name: "x", Now: 1, Expires: 2},
		&TryLock{Name: "x", Owner: "n1", Now: 2, Expires: 2},
		&TryLock{Name: "x", Owner: "n1", Now: 3, Expires: 2},
		&Unlock{Owner: "n1"},
		&Unlock{Name: "x"},
	} {
		if _, err := a.do(c); !IsCode(err, ErrInvalid) {
			t.Errorf("%s %+v: %v, want %s", c.Op(), c, err, ErrInvalid)
		}
	}
}

func TestLocksAreKVRowsUnderLockPrefix(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&TryLock{Name: "certmagic/issue_cert_a.test", Owner: "n1", Now: 1000, Expires: 2000})
	keys, err := s.KVKeys(ctx, "lock/")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "lock/certmagic/issue_cert_a.test" {
		t.Fatalf("keys %q", keys)
	}
	raw, err := s.KV(ctx, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Owner   string `json:"owner"`
		Expires int64  `json:"expires"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.Owner != "n1" || v.Expires != 2000 {
		t.Fatalf("value %s: %+v %v", raw, v, err)
	}

	// Something that is not a lock under the prefix does not block anyone.
	a.must(&PutKV{Key: "lock/junk", Value: []byte("not json")})
	checkLock(t, s, "junk", "", 0)
	a.must(&TryLock{Name: "junk", Owner: "n2", Now: 1, Expires: 2})
	checkLock(t, s, "junk", "n2", 2)
}

func TestLockCommandsSurviveEncoding(t *testing.T) {
	for _, c := range []Command{
		&TryLock{Name: "a/b", Owner: "n1", Now: 1700000000123, Expires: 1700000120123},
		&Unlock{Name: "a/b", Owner: "n1"},
	} {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(d)
		want, _ := json.Marshal(c)
		if d.Op() != c.Op() || string(got) != string(want) {
			t.Fatalf("%s: decoded %s %s, want %s", c.Op(), d.Op(), got, want)
		}
	}
}
