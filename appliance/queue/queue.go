// Package queue delivers the outbound queue: the messages that Sigillo's
// SMTP front end accepted for recipients in other domains. A Runner, run on
// the raft leader only, picks the items that are due, sends them to the
// next hop over SMTP (static route, MX, or the domain's own address),
// using STARTTLS whenever the peer offers it, and records every outcome as a
// storage command: delivered recipients leave the item, temporary failures
// are retried with backoff, permanent failures and items older than MaxAge
// are bounced to the sender with an RFC 3464 delivery status notification.
//
// TLS to the next hop is opportunistic, like Postfix's "may" level: the
// certificate is checked against TLSConfig.RootCAs (or the system roots) and
// the result logged, but an unverified certificate does not stop delivery,
// and a peer whose TLS handshake fails gets the message in plaintext. Items
// marked RequireTLS (PEC traffic between gestori) are the exception: they
// go over TLS or wait, like Postfix's "encrypt" level (and "verify" with
// VerifyPeerTLS).
//
// The package is not an SMTP server, does not deliver to local mailboxes
// (smtpd does, in the same command that queues the remote copy), does not
// authenticate to the next hop, and does not implement DANE, MTA-STS,
// PIPELINING, CHUNKING, or DSN extension parameters (NOTIFY, RET, ENVID).
// Delivery is at least once: a leader change or a failure to record an
// outcome may send a message twice, never lose it.
package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"sigillo/storage"
)

// Resolver finds the mail exchangers of a domain; net.DefaultResolver in
// production. If it also has LookupHost(ctx, host) ([]string, error) (as
// *net.Resolver does) host names are resolved with it, otherwise when
// dialling.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
}

// Defaults of the Runner's optional fields.
const (
	DefaultMaxAge  = 24 * time.Hour
	DefaultPort    = "25"
	DefaultWorkers = 4
	DefaultTimeout = 10 * time.Minute
)

// maxSleep bounds how long the loop sleeps without looking at the queue,
// so an item made due by another node's clock, or a missed Kick, waits at
// most this long.
const maxSleep = time.Minute

// holdOff is how long an item whose outcome could not be recorded (or
// whose content could not be read) is left alone.
const holdOff = time.Minute

// Backoff returns how long to wait after the attempts-th failed attempt:
// 1m, 5m, 15m, 30m, 1h, 2h, then 4h for every later one.
func Backoff(attempts int) time.Duration {
	switch {
	case attempts <= 1:
		return time.Minute
	case attempts == 2:
		return 5 * time.Minute
	case attempts == 3:
		return 15 * time.Minute
	case attempts == 4:
		return 30 * time.Minute
	case attempts == 5:
		return time.Hour
	case attempts == 6:
		return 2 * time.Hour
	}
	return 4 * time.Hour
}

// Runner delivers the outbound queue. Set its fields, then call Run. Run
// wakes by itself when a committed command queues an item (the store's
// WatchQueue); Kick may be called at any time, from any goroutine.
type Runner struct {
	Hostname string // EHLO name and the DSN's reporting MTA
	Store    *storage.Store
	Proposer storage.Proposer
	Resolver Resolver
	// Routes maps a domain to a static next hop "host:port", instead of
	// its MX (config [routes]).
	Routes map[string]string
	// RoutesNow, if set, is read at each delivery instead of Routes: the
	// cluster's [routes] (appliance/settings), which change while the
	// runner runs.
	RoutesNow func() map[string]string
	// TLSConfig is the base for STARTTLS to the next hop (RootCAs, client
	// certificate); nil means the system roots. See the package comment:
	// verification is logged, not enforced.
	TLSConfig *tls.Config
	// VerifyPeerTLS enforces the check for items that require TLS (PEC
	// traffic between gestori; [pec] verify_peer_tls).
	VerifyPeerTLS bool
	Now           func() time.Time // default time.Now
	Logger        *slog.Logger     // default slog.Default()
	MaxAge        time.Duration    // default 24h: older items are bounced
	Port          string           // port of MX hosts; default "25"
	Workers       int              // items delivered in parallel; default 4
	Timeout       time.Duration    // bound on one delivery attempt; default 10m

	mu   sync.Mutex
	kick chan struct{}
}

// Kick wakes the loop now, to look at the queue again.
func (r *Runner) Kick() {
	select {
	case r.kickChan() <- struct{}{}:
	default:
	}
}

func (r *Runner) kickChan() chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kick == nil {
		r.kick = make(chan struct{}, 1)
	}
	return r.kick
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *Runner) hostname() string {
	if r.Hostname != "" {
		return r.Hostname
	}
	return "localhost"
}

func (r *Runner) port() string {
	if r.Port != "" {
		return r.Port
	}
	return DefaultPort
}

func (r *Runner) maxAge() time.Duration {
	if r.MaxAge > 0 {
		return r.MaxAge
	}
	return DefaultMaxAge
}

// Run delivers due items until ctx ends, then waits for the attempts in
// progress to stop (they are cancelled with ctx) and returns nil. It
// returns an error at once only if the Runner is not configured.
func (r *Runner) Run(ctx context.Context) error {
	if r.Store == nil || r.Proposer == nil || r.Resolver == nil {
		return errors.New("queue: Runner needs Store, Proposer and Resolver")
	}
	workers := r.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	kick := r.kickChan()
	// Every committed command that queues an item wakes the loop, on
	// whichever node it was accepted.
	queued, stopWatching := r.Store.WatchQueue()
	defer stopWatching()
	log := r.logger()

	var wg sync.WaitGroup
	defer wg.Wait()
	// Each worker sends exactly once and there are at most workers of
	// them, so these sends never block, even after Run stopped reading.
	type finished struct {
		id string
		ok bool // the outcome was recorded
	}
	done := make(chan finished, workers)
	inflight := map[string]bool{}
	held := map[string]time.Time{} // item → real time before which it is left alone

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := r.now()
		for id, until := range held {
			if time.Now().After(until) {
				delete(held, id)
			}
		}
		if len(inflight) < workers {
			items, err := r.Store.QueueItems(ctx, now)
			if err != nil && ctx.Err() == nil {
				log.Error("cannot read the queue", "err", err)
			}
			for _, it := range items {
				if len(inflight) >= workers {
					break
				}
				if inflight[it.ID] {
					continue
				}
				if _, ok := held[it.ID]; ok {
					continue
				}
				inflight[it.ID] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					done <- finished{it.ID, r.process(ctx, it)}
				}()
			}
		}

		sleep := maxSleep
		if next, ok, err := r.Store.QueueNextAttempt(ctx); err == nil && ok {
			if d := next.Sub(now); d > 0 && d < sleep {
				sleep = d + 10*time.Millisecond
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-queued:
		case <-timer.C:
		case f := <-done:
			if !f.ok {
				held[f.id] = time.Now().Add(holdOff)
			}
			delete(inflight, f.id)
		}
	}
}

// process makes one delivery attempt for an item and records the outcome.
// It returns false if the outcome could not be recorded (the item should be
// left alone for a while).
func (r *Runner) process(ctx context.Context, it storage.QueueItem) bool {
	log := r.logger().With("queue_id", it.ID)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	data, err := r.Store.Content(actx, it.SHA256)
	if err != nil {
		log.Error("cannot read queued message", "err", err)
		return false
	}
	msg := stripReturnPath(data)

	byDomain := map[string][]string{}
	for _, rc := range it.Recipients {
		_, d, ok := storage.SplitAddress(rc)
		if !ok {
			d = ""
		}
		d = storage.NormalizeDomain(d)
		byDomain[d] = append(byDomain[d], rc)
	}
	domains := make([]string, 0, len(byDomain))
	for d := range byDomain {
		domains = append(domains, d)
	}
	sort.Strings(domains)

	var outcomes []outcome
	for _, d := range domains {
		if d == "" {
			outcomes = append(outcomes, all(byDomain[d], failed, "5.1.3", "bad recipient address syntax", "")...)
			continue
		}
		outcomes = append(outcomes, r.deliverDomain(actx, d, it.Sender, byDomain[d], msg, it.RequireTLS)...)
	}
	if ctx.Err() != nil {
		// Shutting down or no longer leader: the attempt was cut short.
		// Record nothing; the next leader tries again.
		return true
	}

	now := r.now()
	expired := now.Sub(it.CreatedAt) >= r.maxAge()
	var failures []Failure
	var remaining []string
	lastErr := ""
	for _, o := range outcomes {
		log.Info("delivery", "to", o.rcpt, "status", o.state.String(), "relay", o.remote, "dsn", o.status,
			"reply", o.reply, "tls", o.tls, "attempt", it.Attempts+1)
		switch o.state {
		case failed:
			failures = append(failures, Failure{Recipient: o.rcpt, Status: o.status, Diagnostic: o.reply, RemoteMTA: o.remote})
		case deferred:
			lastErr = o.reply
			if expired {
				failures = append(failures, Failure{Recipient: o.rcpt, Status: "4.4.7", RemoteMTA: o.remote,
					Diagnostic: fmt.Sprintf("delivery time expired (%s); last error: %s", r.maxAge(), o.reply)})
				continue
			}
			remaining = append(remaining, o.rcpt)
		}
	}

	var bounce *storage.Deliver
	bounceQueued := false
	if len(failures) > 0 {
		var err error
		bounce, bounceQueued, err = r.bounce(ctx, it, msg, failures)
		if err != nil {
			// Keep the failed recipients so the bounce is not lost: they
			// are tried (and refused) again, and bounced then.
			log.Error("cannot make the bounce; keeping the recipients to retry", "err", err)
			for _, f := range failures {
				remaining = append(remaining, f.Recipient)
				if lastErr == "" {
					lastErr = f.Diagnostic
				}
			}
		}
	}

	// The bounce and the queue update are one command: a crash between
	// them can neither lose the bounce nor send it twice.
	var cmd storage.Command
	if len(remaining) == 0 {
		cmd = &storage.QueueRemove{ID: it.ID, Bounce: bounce}
	} else {
		next := now.Add(Backoff(it.Attempts + 1))
		// The last attempt is at expiry, and bounces if it fails.
		if end := it.CreatedAt.Add(r.maxAge()); next.After(end) && now.Before(end) {
			next = end
		}
		cmd = &storage.QueueRetry{ID: it.ID, Recipients: remaining, NextAttempt: next.Unix(), LastError: lastErr, Bounce: bounce}
	}
	if _, err := r.Proposer.Apply(ctx, cmd); err != nil {
		if storage.IsCode(err, storage.ErrNotFound) {
			return true // removed meanwhile (by another leader)
		}
		log.Error("cannot record the delivery attempt", "op", cmd.Op(), "err", err)
		return false
	}
	if bounce != nil {
		log.Info("bounced", "sender", it.Sender, "recipients", len(failures))
		if bounceQueued {
			r.Kick()
		}
	}
	return true
}

// bounce makes the DSN for failures to the item's sender, to be applied
// with the queue update; a message with the null sender is never bounced
// (nil command). queued tells whether the DSN goes on the outbound queue.
func (r *Runner) bounce(ctx context.Context, it storage.QueueItem, msg []byte, failures []Failure) (cmd *storage.Deliver, queued bool, err error) {
	log := r.logger().With("queue_id", it.ID)
	if it.Sender == "" {
		for _, f := range failures {
			log.Warn("undeliverable message with null sender dropped (never bounce a bounce)",
				"to", f.Recipient, "dsn", f.Status, "reason", f.Diagnostic)
		}
		return nil, false, nil
	}
	now := r.now()
	cmd, queued, err = BounceCommand(ctx, r.Store, Bounce{
		Hostname: r.hostname(),
		Sender:   it.Sender,
		QueueID:  it.ID,
		Arrival:  it.CreatedAt,
		Failures: failures,
		Original: msg,
	}, now)
	if err != nil {
		return nil, false, fmt.Errorf("bounce to %s: %w", it.Sender, err)
	}
	if cmd == nil {
		log.Warn("no mailbox for the sender of a bounced message", "sender", it.Sender)
	}
	return cmd, queued, nil
}
