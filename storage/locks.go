package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Replicated named locks with expiry, so that only one node of a cluster
// does a piece of work at a time (certmagic: talking to the ACME CA). A
// lock is a row of the kv table under lockPrefix, its value the JSON of
// lockValue; no migration needed. There is no clock in apply: the proposer
// carries its time in the command, so a lock expires when a node proposing
// after its Expires says so. Nodes' clocks must roughly agree (by much less
// than the time to live the holders use).

// ErrLocked: the lock is held by another owner and has not expired.
const ErrLocked ErrorCode = "locked"

// lockPrefix is where locks live in the kv table.
const lockPrefix = "lock/"

type lockValue struct {
	Owner   string `json:"owner"`
	Expires int64  `json:"expires"` // unix milliseconds
}

// readLock reads the lock row; ok is false if there is none, or if it is
// not a lock (a value put there by hand): such a row counts as free.
func readLock(row *sql.Row) (v lockValue, ok bool, err error) {
	var b []byte
	if err := row.Scan(&b); errors.Is(err, sql.ErrNoRows) {
		return v, false, nil
	} else if err != nil {
		return v, false, err
	}
	if json.Unmarshal(b, &v) != nil || v.Owner == "" {
		return lockValue{}, false, nil
	}
	return v, true, nil
}

func lockTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// TryLock takes the lock Name for Owner until Expires. It succeeds when the
// lock is free, expired at Now (Expires <= Now), or already held by Owner,
// which then only moves its expiry to Expires; otherwise it is refused with
// ErrLocked.
type TryLock struct {
	Name    string `json:"name"`
	Owner   string `json:"owner"`
	Now     int64  `json:"now"`     // unix milliseconds, the proposer's clock
	Expires int64  `json:"expires"` // unix milliseconds
}

// Op implements Command.
func (*TryLock) Op() string { return "lock-try" }

func (c *TryLock) apply(t *txn) (any, error) {
	if c.Name == "" || c.Owner == "" {
		return nil, refuse(ErrInvalid, "a lock needs a name and an owner")
	}
	if c.Expires <= c.Now {
		return nil, refuse(ErrInvalid, "lock %s: expiry %s is not after now %s", c.Name, lockTime(c.Expires), lockTime(c.Now))
	}
	key := lockPrefix + c.Name
	cur, ok, err := readLock(t.row("SELECT value FROM kv WHERE key=?", key))
	if err != nil {
		return nil, err
	}
	if ok && cur.Owner != c.Owner && cur.Expires > c.Now {
		return nil, refuse(ErrLocked, "lock %s is held by %s until %s", c.Name, cur.Owner, lockTime(cur.Expires))
	}
	val, err := json.Marshal(lockValue{Owner: c.Owner, Expires: c.Expires})
	if err != nil {
		return nil, err
	}
	_, err = t.exec("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", key, val)
	return nil, err
}

// Unlock releases the lock Name if Owner holds it (expired or not). A lock
// that is not there is no error; a lock held by another owner (who took it
// over after it expired) is refused with ErrLocked and left alone.
type Unlock struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
}

// Op implements Command.
func (*Unlock) Op() string { return "lock-release" }

func (c *Unlock) apply(t *txn) (any, error) {
	if c.Name == "" || c.Owner == "" {
		return nil, refuse(ErrInvalid, "a lock needs a name and an owner")
	}
	key := lockPrefix + c.Name
	cur, ok, err := readLock(t.row("SELECT value FROM kv WHERE key=?", key))
	if err != nil {
		return nil, err
	}
	if ok && cur.Owner != c.Owner {
		return nil, refuse(ErrLocked, "lock %s is held by %s, not %s", c.Name, cur.Owner, c.Owner)
	}
	_, err = t.exec("DELETE FROM kv WHERE key=?", key)
	return nil, err
}

// Lock reads the lock name: its owner and expiry, ok false if there is no
// lock. A lock whose expiry has passed is still reported; the caller
// compares expires with its clock.
func (s *Store) Lock(ctx context.Context, name string) (owner string, expires time.Time, ok bool, err error) {
	v, ok, err := readLock(s.db.QueryRowContext(ctx, "SELECT value FROM kv WHERE key=?", lockPrefix+name))
	if err != nil {
		return "", time.Time{}, false, fmt.Errorf("read lock %s: %w", name, err)
	}
	if !ok {
		return "", time.Time{}, false, nil
	}
	return v.Owner, time.UnixMilli(v.Expires).UTC(), true, nil
}
