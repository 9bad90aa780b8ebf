// Package inflight is the global budget of message bytes held in memory at
// once (max_inflight_bytes). Whatever path a message takes into the store
// (SMTP inbound or submission, PEC, IMAP APPEND), it reserves its size here
// before it is read into memory and releases it once the store has it, so
// that however many clients finish a message at the same moment, the bytes
// in memory stay bounded. A reservation that does not fit waits, first come
// first served, for at most MaxWait; then the caller answers with a
// temporary failure (SMTP 452 4.3.1, IMAP NO [UNAVAILABLE]) and the client
// retries.
//
// It counts bytes, not memory: the callers decide how many bytes a message
// costs (its size, or a multiple for paths that copy it several times), and
// package memlimit sizes the budget and the Go memory limit from the
// machine. It is not a rate limiter or a per-client limit: a message being
// received is on disk (package spool) and costs nothing here.
package inflight

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBusy is the refusal of a reservation that waited MaxWait in vain.
var ErrBusy = errors.New("in-flight message budget exhausted")

// DefaultMaxWait is how long a reservation waits by default.
const DefaultMaxWait = 60 * time.Second

// Budget is a counting semaphore of bytes with a FIFO queue of waiters. The
// zero value is not usable; make one with New. A nil *Budget grants every
// reservation at once (no limit).
type Budget struct {
	capacity int64
	maxWait  time.Duration

	mu      sync.Mutex
	inUse   int64
	waiters []*waiter // FIFO
	peak    int64     // highest inUse since TakePeak
	waits   int64     // reservations that had to wait
	refused int64     // reservations that gave up (MaxWait or ctx)
}

type waiter struct {
	n     int64
	ready chan struct{} // closed when granted
}

// New returns a budget of capacity bytes whose reservations wait at most
// maxWait (0: DefaultMaxWait).
func New(capacity int64, maxWait time.Duration) *Budget {
	if capacity < 1 {
		capacity = 1
	}
	if maxWait <= 0 {
		maxWait = DefaultMaxWait
	}
	return &Budget{capacity: capacity, maxWait: maxWait}
}

// Capacity is the budget's size in bytes.
func (b *Budget) Capacity() int64 {
	if b == nil {
		return 0
	}
	return b.capacity
}

// Reservation is bytes held in the budget until Release.
type Reservation struct {
	b    *Budget
	n    int64
	once sync.Once
	// Waited is how long the reservation waited to be granted.
	Waited time.Duration
}

// Release gives the bytes back. It may be called any number of times (a
// deferred Release after an early one is harmless), and on a nil
// Reservation.
func (r *Reservation) Release() {
	if r == nil || r.b == nil {
		return
	}
	r.once.Do(func() { r.b.release(r.n) })
}

// Acquire reserves n bytes, waiting while they do not fit. A reservation
// larger than the whole budget is cut to the budget: it waits until nothing
// else is in flight, and then goes alone. It fails with an error wrapping
// ErrBusy after MaxWait, or with ctx's error when ctx ends first; either
// way nothing is held.
func (b *Budget) Acquire(ctx context.Context, n int64) (*Reservation, error) {
	if b == nil {
		return &Reservation{}, nil
	}
	if n < 0 {
		n = 0
	}
	if n > b.capacity {
		n = b.capacity
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.inUse+n <= b.capacity {
		b.take(n)
		b.mu.Unlock()
		return &Reservation{b: b, n: n}, nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.waits++
	b.mu.Unlock()

	start := time.Now()
	timer := time.NewTimer(b.maxWait)
	defer timer.Stop()
	var cause error
	select {
	case <-w.ready:
		return &Reservation{b: b, n: n, Waited: time.Since(start)}, nil
	case <-timer.C:
		cause = fmt.Errorf("%w: %d bytes waited %v (%d of %d in flight)", ErrBusy, n, b.maxWait, b.InUse(), b.capacity)
	case <-ctx.Done():
		cause = fmt.Errorf("waiting for %d bytes of the in-flight budget: %w", n, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while giving up: hand the bytes on.
		b.inUse -= n
	default:
		b.remove(w)
	}
	b.refused++
	b.grant()
	return nil, cause
}

// take counts n more bytes in use; b.mu is held.
func (b *Budget) take(n int64) {
	b.inUse += n
	if b.inUse > b.peak {
		b.peak = b.inUse
	}
}

func (b *Budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inUse -= n
	b.grant()
}

// grant wakes the waiters at the head of the queue that now fit; b.mu is
// held. The head blocks those behind it, so a large reservation is not
// starved by a stream of small ones.
func (b *Budget) grant() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.inUse+w.n > b.capacity {
			return
		}
		b.take(w.n)
		b.waiters = b.waiters[1:]
		close(w.ready)
	}
}

func (b *Budget) remove(w *waiter) {
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			return
		}
	}
}

// InUse is the number of bytes reserved now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inUse
}

// Stats is a view of the budget, for logs and status pages.
type Stats struct {
	Capacity int64 `json:"capacity"`
	InUse    int64 `json:"in_use"`
	Waiting  int   `json:"waiting"`
	Waits    int64 `json:"waits"`   // reservations that waited, since start
	Refused  int64 `json:"refused"` // reservations that gave up, since start
}

// Stats reports the budget's state.
func (b *Budget) Stats() Stats {
	if b == nil {
		return Stats{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{Capacity: b.capacity, InUse: b.inUse, Waiting: len(b.waiters), Waits: b.waits, Refused: b.refused}
}

// TakePeak returns the bytes in use now and the highest figure since the
// previous TakePeak, and starts a new peak from now.
func (b *Budget) TakePeak() (inUse, peak int64) {
	if b == nil {
		return 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	inUse, peak = b.inUse, b.peak
	b.peak = b.inUse
	return inUse, peak
}
