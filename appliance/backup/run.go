package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"sigillo/appliance/backup/archive"
)

// firstBackoff is the wait after a target's first failure; it doubles
// with each further one, up to Config.Interval.
const firstBackoff = time.Second

// Run is the leader job: it works until ctx ends (leadership or the
// process ends), then returns nil. Each target has its own schedule: it
// first reads what the target holds (so a new leader knows), then every
// Interval takes a snapshot unless the applied index is the one of the
// target's newest snapshot, and every LogInterval ships the log entries
// committed since. A target that fails is retried with backoff, and the
// others go on.
func (b *Backuper) Run(ctx context.Context) error {
	if len(b.targets) == 0 {
		return errors.New("backup: no target configured")
	}
	var wg sync.WaitGroup
	for _, ts := range b.targets {
		wg.Go(func() { b.runTarget(ctx, ts) })
	}
	wg.Wait()
	for _, ts := range b.targets {
		b.setNext(ts, time.Time{})
	}
	return nil
}

// runTarget is one target's schedule. Times here are the process's own
// (timers); Config.Now is only for what is recorded.
func (b *Backuper) runTarget(ctx context.Context, ts *targetState) {
	var (
		learned         bool
		snapDue, logDue time.Time // when the next snapshot and log shipment are due
		retryAt         time.Time // while failing: when to try again
		failing         bool
	)
	for {
		wake := retryAt
		if !failing && learned {
			wake = minTime(snapDue, logDue)
		}
		b.setNext(ts, b.cfg.Now().Add(time.Until(wake)))
		if !sleepUntil(ctx, wake) {
			return
		}
		now := time.Now()
		var err error
		switch {
		case !learned:
			var delay time.Duration
			if delay, err = b.learn(ctx, ts); err == nil {
				learned = true
				snapDue, logDue = now.Add(delay), now.Add(b.cfg.LogInterval)
			}
		case !now.Before(snapDue):
			if err = b.scheduledSnapshot(ctx, ts); err == nil {
				snapDue, logDue = now.Add(b.cfg.Interval), now.Add(b.cfg.LogInterval)
			}
		case !now.Before(logDue):
			var gone bool
			if gone, err = b.shipLog(ctx, ts); err == nil {
				logDue = now.Add(b.cfg.LogInterval)
				if gone {
					snapDue = now
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failing = false
			continue
		}
		n := b.failed(ts, err)
		backoff := min(firstBackoff<<min(n-1, 30), b.cfg.Interval)
		failing, retryAt = true, time.Now().Add(backoff)
		b.log.Error("backup target failed", "target", ts.name, "failures", n, "retry_in", backoff, "err", err)
	}
}

// learn reads the newest snapshot and log set on the target, and returns
// how long until its next snapshot is due: Interval after the newest
// snapshot's time, now when it has none.
func (b *Backuper) learn(ctx context.Context, ts *targetState) (time.Duration, error) {
	snaps, err := b.sets(ctx, ts.t.Store, archive.KindSnapshot)
	if err != nil {
		return 0, err
	}
	logs, err := b.sets(ctx, ts.t.Store, archive.KindLog)
	if err != nil {
		return 0, err
	}
	if len(snaps) == 0 {
		b.learned(ts, nil, 0)
		b.log.Info("backup target holds no snapshot yet", "target", ts.name)
		return 0, nil
	}
	newest := snaps[len(snaps)-1]
	shipped := newest.Index
	for _, m := range logs {
		if m.FirstIndex <= shipped+1 && m.Index > shipped {
			shipped = m.Index
		}
	}
	b.learned(ts, &newest, shipped)
	delay := newest.Time.Add(b.cfg.Interval).Sub(b.cfg.Now())
	delay = max(0, min(delay, b.cfg.Interval))
	b.log.Info("backup target read", "target", ts.name, "snapshot", newest.ID, "shipped", shipped, "next_snapshot_in", delay)
	return delay, nil
}

// scheduledSnapshot writes a snapshot to ts unless the applied index is
// the one of the target's newest snapshot.
func (b *Backuper) scheduledSnapshot(ctx context.Context, ts *targetState) error {
	snapIndex, _, _ := b.position(ts)
	applied, err := b.src.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("snapshot to %s: applied index: %w", ts.name, err)
	}
	if snapIndex > 0 && applied == snapIndex {
		b.log.Debug("backup snapshot skipped: nothing changed", "target", ts.name, "index", applied)
		return nil
	}
	s, err := b.sharedSnapshot(ctx, snapIndex)
	if err != nil {
		return err
	}
	defer b.release(s)
	return b.writeSnapshot(ctx, ts, s, nil).Err
}

// sleepUntil waits for t (returns at once when it has passed); false when
// ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
