package inflight

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustAcquire(t *testing.T, b *Budget, n int64) *Reservation {
	t.Helper()
	r, err := b.Acquire(context.Background(), n)
	if err != nil {
		t.Fatalf("Acquire(%d): %v", n, err)
	}
	return r
}

func TestAReservationThatDoesNotFitWaitsForARelease(t *testing.T) {
	b := New(100, time.Minute)
	first := mustAcquire(t, b, 70)
	got := make(chan *Reservation)
	go func() { got <- mustAcquire(t, b, 50) }()
	select {
	case <-got:
		t.Fatal("50 bytes granted while 70 of 100 are held")
	case <-time.After(50 * time.Millisecond):
	}
	if s := b.Stats(); s.Waiting != 1 || s.InUse != 70 {
		t.Fatalf("stats while waiting: %+v", s)
	}
	first.Release()
	second := <-got
	if second.Waited < 40*time.Millisecond {
		t.Errorf("Waited = %v, want the time it waited", second.Waited)
	}
	if n := b.InUse(); n != 50 {
		t.Errorf("in use = %d, want 50", n)
	}
	second.Release()
	second.Release() // a second release gives nothing back twice
	first.Release()
	if n := b.InUse(); n != 0 {
		t.Errorf("in use after every release = %d, want 0", n)
	}
}

func TestAWaitLongerThanMaxWaitIsRefusedWithErrBusy(t *testing.T) {
	b := New(100, 30*time.Millisecond)
	held := mustAcquire(t, b, 100)
	start := time.Now()
	r, err := b.Acquire(context.Background(), 1)
	if !errors.Is(err, ErrBusy) || r != nil {
		t.Fatalf("Acquire on a full budget: %v, %v; want ErrBusy", r, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("refused after %v, want MaxWait (30 ms)", d)
	}
	if s := b.Stats(); s.Waiting != 0 || s.Refused != 1 || s.Waits != 1 || s.InUse != 100 {
		t.Errorf("stats after the refusal: %+v", s)
	}
	held.Release()
	mustAcquire(t, b, 100).Release()
}

func TestAnEndedContextStopsTheWaitAndHoldsNothing(t *testing.T) {
	b := New(10, time.Minute)
	held := mustAcquire(t, b, 10)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := b.Acquire(ctx, 5)
		errc <- err
	}()
	for b.Stats().Waiting == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire after cancel: %v", err)
	}
	held.Release()
	if s := b.Stats(); s.InUse != 0 || s.Waiting != 0 {
		t.Fatalf("after the cancelled wait and the release: %+v", s)
	}
}

func TestWaitersAreServedFirstComeFirstServed(t *testing.T) {
	b := New(100, time.Minute)
	held := mustAcquire(t, b, 60)
	big := make(chan *Reservation, 1)
	go func() { big <- mustAcquire(t, b, 90) }()
	for b.Stats().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	// 10 bytes would fit beside the 60, but the 90 came first.
	small := make(chan *Reservation, 1)
	go func() { small <- mustAcquire(t, b, 10) }()
	for b.Stats().Waiting != 2 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-small:
		t.Fatal("a small reservation overtook a waiting large one")
	case <-time.After(30 * time.Millisecond):
	}
	held.Release()
	r := <-big
	r.Release()
	(<-small).Release()
}

func TestAReservationLargerThanTheBudgetGoesAlone(t *testing.T) {
	b := New(100, time.Minute)
	held := mustAcquire(t, b, 1)
	got := make(chan *Reservation, 1)
	go func() { got <- mustAcquire(t, b, 1000) }()
	select {
	case <-got:
		t.Fatal("an oversized reservation was granted beside another")
	case <-time.After(30 * time.Millisecond):
	}
	held.Release()
	r := <-got
	if n := b.InUse(); n != 100 {
		t.Errorf("in use = %d, want the whole budget", n)
	}
	r.Release()
}

func TestAGiveUpGrantedAtTheSameMomentLeaksNothing(t *testing.T) {
	// Waiters giving up (tiny MaxWait) while releases grant them, many
	// times: whatever the interleaving, the budget ends empty.
	b := New(10, time.Millisecond)
	var wg sync.WaitGroup
	var over atomic.Bool
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				r, err := b.Acquire(context.Background(), 4)
				if err != nil {
					continue
				}
				if b.InUse() > 10 {
					over.Store(true)
				}
				runtime.Gosched()
				r.Release()
			}
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Error("more than the budget was in use at once")
	}
	if s := b.Stats(); s.InUse != 0 || s.Waiting != 0 {
		t.Fatalf("after the storm: %+v", s)
	}
}

func TestANilBudgetGrantsEverything(t *testing.T) {
	var b *Budget
	r, err := b.Acquire(context.Background(), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	r.Release()
	var none *Reservation
	none.Release()
}

func TestTakePeakReportsTheHighestFigureSinceTheLastCall(t *testing.T) {
	b := New(100, time.Minute)
	a := mustAcquire(t, b, 30)
	c := mustAcquire(t, b, 40)
	a.Release()
	c.Release()
	if inUse, peak := b.TakePeak(); inUse != 0 || peak != 70 {
		t.Fatalf("TakePeak = %d, %d; want 0, 70", inUse, peak)
	}
	if _, peak := b.TakePeak(); peak != 0 {
		t.Fatalf("second TakePeak peak = %d, want 0", peak)
	}
}
