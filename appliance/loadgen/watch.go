package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// pollInterval is how often a watcher on a server without IDLE sends NOOP.
const pollInterval = 10 * time.Millisecond

// announce is one EXISTS: from at on, the INBOX held n messages.
type announce struct {
	n  uint32
	at time.Time
}

// watcher keeps one IMAP connection on a user's INBOX and reports the
// Subject of every new message with the time it was first announced.
type watcher struct {
	r      *runner
	s      *scenarioState
	u      User
	onMail func(subject string, seen time.Time)
	kick   chan struct{}
	ready  chan error

	mu        sync.Mutex
	announces []announce

	uidNext     imap.UID
	uidValidity uint32
	isReady     bool // ready was sent
}

// startWatcher starts a watcher on u's INBOX in a goroutine that wg owns
// and that ends when ctx is done; it returns once the watcher is idling
// (or polling), or with the error that kept it from getting there.
func (r *runner) startWatcher(ctx context.Context, wg *sync.WaitGroup, s *scenarioState, u User,
	onMail func(subject string, seen time.Time)) error {
	w := &watcher{r: r, s: s, u: u, onMail: onMail, kick: make(chan struct{}, 1), ready: make(chan error, 1)}
	wg.Go(func() { w.run(ctx) })
	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *watcher) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages == nil {
				return
			}
			w.mu.Lock()
			w.announces = append(w.announces, announce{*d.NumMessages, time.Now()})
			w.mu.Unlock()
			select {
			case w.kick <- struct{}{}:
			default:
			}
		},
	}
}

// run connects, and reconnects after a failure, until ctx is done.
func (w *watcher) run(ctx context.Context) {
	var bo backoff
	for ctx.Err() == nil {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if !w.isReady {
			w.ready <- err
			return
		}
		w.s.fail(ctx, "watch", err)
		bo.wait(ctx)
	}
}

// readyNow tells startWatcher, once, that the watcher is watching.
func (w *watcher) readyNow() {
	if !w.isReady {
		w.isReady = true
		w.ready <- nil
	}
}

// session is one connection: SELECT, then IDLE (or NOOP polling) and a
// UID FETCH of what is new each time the server announces messages. Only
// an error ends it (ctx done: nil).
func (w *watcher) session(ctx context.Context) error {
	c, stop, err := w.r.dialIMAP(ctx, w.u, w.handler())
	if err != nil {
		return err
	}
	defer closeIMAP(c, stop)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return fmt.Errorf("SELECT INBOX of %s: %w", w.u.Address, err)
	}
	if sel.UIDNext == 0 {
		return errors.New("the server gave no UIDNEXT on SELECT")
	}
	// After a reconnection, what came meanwhile is still looked at (same
	// UIDVALIDITY); at first, only what comes from now on.
	if w.uidNext == 0 || sel.UIDValidity != w.uidValidity {
		w.uidNext, w.uidValidity = sel.UIDNext, sel.UIDValidity
	} else if err := w.fetchNew(c); err != nil {
		return err
	}
	idle := c.Caps().Has(imap.CapIdle) && !w.r.o.Poll
	for {
		if idle {
			cmd, err := c.Idle()
			if err != nil {
				return fmt.Errorf("IDLE: %w", err)
			}
			w.readyNow()
			select {
			case <-w.kick:
			case <-ctx.Done():
			}
			if err := cmd.Close(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("IDLE DONE: %w", err)
			}
			if err := cmd.Wait(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("IDLE: %w", err)
			}
		} else {
			w.readyNow()
			select {
			case <-w.kick:
			case <-time.After(pollInterval):
				if err := c.Noop().Wait(); err != nil {
					return fmt.Errorf("NOOP: %w", err)
				}
				select {
				case <-w.kick:
				default:
					continue
				}
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := w.fetchNew(c); err != nil {
			return err
		}
	}
}

// fetchNew fetches the Subject of the messages from uidNext on and hands
// each to onMail with the time of the EXISTS that first counted it.
func (w *watcher) fetchNew(c *imapclient.Client) error {
	var set imap.UIDSet
	set.AddRange(w.uidNext, 0)
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil {
		return fmt.Errorf("UID FETCH %d:* ENVELOPE: %w", w.uidNext, err)
	}
	fetched := time.Now()
	type mail struct {
		subject string
		seen    time.Time
	}
	var found []mail
	w.mu.Lock()
	var maxSeq uint32
	for _, m := range msgs {
		if m.UID < w.uidNext || m.Envelope == nil {
			continue // n:* names the last message even when it is older than n
		}
		seen := fetched
		for _, a := range w.announces {
			if a.n >= m.SeqNum {
				seen = a.at
				break
			}
		}
		found = append(found, mail{m.Envelope.Subject, seen})
		maxSeq = max(maxSeq, m.SeqNum)
	}
	for _, m := range msgs {
		if m.UID >= w.uidNext {
			w.uidNext = m.UID + 1
		}
	}
	// What announced the messages just seen is no longer needed.
	keep := w.announces[:0]
	for _, a := range w.announces {
		if a.n > maxSeq {
			keep = append(keep, a)
		}
	}
	w.announces = keep
	w.mu.Unlock()
	for _, m := range found {
		w.onMail(m.subject, m.seen)
	}
	return nil
}

// tracker matches what senders got a 250 for with what watchers see.
type tracker struct {
	kinds   []string // what must be seen for a message to be complete
	mu      sync.Mutex
	pending map[string]*pending
}

type pending struct {
	acked  time.Time
	seen   map[string]time.Time
	failed string        // an AVVISO about it: it will never complete
	done   chan struct{} // closed once complete or failed
	closed bool
}

func newTracker(kinds ...string) *tracker {
	return &tracker{kinds: kinds, pending: map[string]*pending{}}
}

// expect registers key before its message is sent (a watcher may see it
// before the sender reads the 250).
func (t *tracker) expect(key string) *pending {
	p := &pending{seen: map[string]time.Time{}, done: make(chan struct{})}
	t.mu.Lock()
	t.pending[key] = p
	t.mu.Unlock()
	return p
}

func (t *tracker) forget(key string) {
	t.mu.Lock()
	delete(t.pending, key)
	t.mu.Unlock()
}

// acked records the 250.
func (t *tracker) acked(p *pending, at time.Time) {
	t.mu.Lock()
	p.acked = at
	t.check(p)
	t.mu.Unlock()
}

// seen records that kind was seen for key at at.
func (t *tracker) seen(key, kind string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending[key]
	if p == nil {
		return // not ours, or given up on
	}
	if _, dup := p.seen[kind]; !dup {
		p.seen[kind] = at
	}
	t.check(p)
}

// failedWith records a notice that key will never complete.
func (t *tracker) failedWith(key, why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.pending[key]; p != nil && !p.closed {
		p.failed = why
		p.closed = true
		close(p.done)
	}
}

func (t *tracker) check(p *pending) {
	if p.closed || p.acked.IsZero() {
		return
	}
	for _, k := range t.kinds {
		if _, ok := p.seen[k]; !ok {
			return
		}
	}
	p.closed = true
	close(p.done)
}

// result is, once p.done is closed, each kind's latency from the 250 (or
// the failure).
func (t *tracker) result(p *pending) (map[string]time.Duration, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p.failed != "" {
		return nil, p.failed
	}
	lat := map[string]time.Duration{}
	for k, at := range p.seen {
		lat[k] = max(at.Sub(p.acked), 0)
	}
	return lat, ""
}

// closedLoop runs Concurrency workers that each send one message, wait
// for what the tracker expects of it, record it, and go on. from and to
// give worker i's sender and recipient; kind names the messages.
func (r *runner) closedLoop(ctx context.Context, s *scenarioState, t *tracker, kind string,
	from func(i int) User, to func(i int) string) {
	var wg sync.WaitGroup
	for i := range r.o.Concurrency {
		wg.Go(func() {
			var p *pending
			r.submitLoop(ctx, s, i, from(i), to(i), kind, submitHooks{
				before: func(subject string) { p = t.expect(subject) },
				failed: func(subject string) { t.forget(subject) },
				sent: func(subject string, acked time.Time) {
					t.acked(p, acked)
					r.await(ctx, s, t, p)
					t.forget(subject)
				},
			})
		})
	}
	wg.Wait()
}

// await waits for p to complete (VisibleTimeout at most) and records
// its latencies, or the failure.
func (r *runner) await(ctx context.Context, s *scenarioState, t *tracker, p *pending) {
	timer := time.NewTimer(r.o.VisibleTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
	case <-ctx.Done():
		return
	}
	t.mu.Lock()
	complete, failed := p.closed, p.failed
	var missing []string
	for _, k := range t.kinds {
		if _, ok := p.seen[k]; !ok {
			missing = append(missing, k)
		}
	}
	t.mu.Unlock()
	switch {
	case failed != "":
		s.fail(ctx, t.kinds[len(t.kinds)-1], errors.New(failed))
	case !complete:
		s.fail(ctx, missing[0], fmt.Errorf("%s not seen %s after the 250", strings.Join(missing, " and "), r.o.VisibleTimeout))
	default:
		lat, _ := t.result(p)
		for _, k := range t.kinds {
			s.record(k, lat[k])
		}
	}
}

// runDeliver: from the 250 to the message in the recipient's INBOX.
func (r *runner) runDeliver(ctx context.Context, s *scenarioState) error {
	wctx, cancel := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer watchers.Wait()
	defer cancel()
	t := newTracker("deliver")
	for _, u := range r.activeUsers() {
		err := r.startWatcher(wctx, &watchers, s, u, func(subject string, seen time.Time) {
			t.seen(subject, "deliver", seen)
		})
		if err != nil {
			return fmt.Errorf("watching the INBOX of %s: %w", u.Address, err)
		}
	}
	s.begin(ctx)
	r.closedLoop(ctx, s, t, "deliver", r.workerUser, func(i int) string { return r.workerUser(i).Address })
	return nil
}

// runPEC: submissions from PECFrom to PECTo, each waiting for its
// ACCETTAZIONE and CONSEGNA in PECFrom's INBOX.
func (r *runner) runPEC(ctx context.Context, s *scenarioState) error {
	wctx, cancel := context.WithCancel(ctx)
	var watchers sync.WaitGroup
	defer watchers.Wait()
	defer cancel()
	t := newTracker("accettazione", "consegna")
	sender := User{Address: r.o.PECFrom, Password: r.o.PECPassword}
	err := r.startWatcher(wctx, &watchers, s, sender, func(subject string, seen time.Time) {
		kind, orig, ok := strings.Cut(subject, ": ")
		if !ok {
			return
		}
		switch {
		case kind == "ACCETTAZIONE":
			t.seen(orig, "accettazione", seen)
		case kind == "CONSEGNA":
			t.seen(orig, "consegna", seen)
		case strings.HasPrefix(kind, "AVVISO DI"):
			t.failedWith(orig, kind)
		}
	})
	if err != nil {
		return fmt.Errorf("watching the INBOX of %s: %w", sender.Address, err)
	}
	s.begin(ctx)
	r.closedLoop(ctx, s, t, "pec", func(int) User { return sender }, func(int) string { return r.o.PECTo })
	return nil
}
