// Package legallog keeps the PEC legal log (PEC.md §7) held in the
// replicated store: the leader-only Keeper signs the chain head at least
// daily and purges entries past the 30-month retention, and Verify and
// Search are what `sigillo log verify|search` run, on a running server's
// store or on a stopped server's database file opened read-only.
//
// It does not write log entries (the PEC components add them with storage
// commands as they act), nor define the chain, its signatures or its
// verification (storage/peclog), nor choose the signing key (the caller
// gives a crypto.Signer: the gestore key in its token in production).
package legallog

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"sigillo/storage"
	"sigillo/storage/peclog"
)

const (
	// Interval is how often the Keeper looks at the log.
	Interval = time.Hour
	// SignAfter is how old the newest signed head must be before the
	// Keeper signs a new one over newer entries. Run every Interval, an
	// entry is covered within SignAfter+Interval of its time, inside
	// peclog's SignInterval+SignTolerance.
	SignAfter = 24 * time.Hour
	// PurgeEvery is how often the Keeper purges the entries past the
	// retention.
	PurgeEvery = 24 * time.Hour
	// maxPurgeRounds bounds the PurgeLog commands of one purge (each
	// removes at most a window of the log).
	maxPurgeRounds = 1000
)

// Keeper signs the legal log's chain head and purges the expired entries.
// It runs on the leader only. The fields must be set before Run or Tick;
// Poll and Logger may be left zero.
type Keeper struct {
	Store    *storage.Store
	Proposer storage.Proposer
	// Signer is the gestore key; Chain is its certificate, then any
	// intermediate CA certificates, all carried in every signed head.
	Signer crypto.Signer
	Chain  []*x509.Certificate
	// Now is the clock: the times of heads and the retention cutoff, and
	// when Run's next step is due.
	Now    func() time.Time
	Logger *slog.Logger
	// Poll is how often Run reads Now to see whether a step is due
	// (default one minute), so that a clock moved forward, by a test or
	// after a suspend, is noticed soon.
	Poll time.Duration

	mu        sync.Mutex
	lastPurge time.Time
}

func (k *Keeper) logger() *slog.Logger {
	if k.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Logger
}

func (k *Keeper) check() error {
	switch {
	case k.Store == nil || k.Proposer == nil:
		return errors.New("legal log keeper: no store or proposer")
	case k.Signer == nil || len(k.Chain) == 0 || k.Chain[0] == nil:
		return errors.New("legal log keeper: no signing key or certificate")
	case k.Now == nil:
		return errors.New("legal log keeper: no clock")
	}
	return nil
}

// Run steps (Tick) at once and then every Interval by Now, until ctx is
// done. A failed step is logged and tried again at the next one; Run
// returns an error only when the Keeper is not set up.
func (k *Keeper) Run(ctx context.Context) error {
	if err := k.check(); err != nil {
		return err
	}
	poll := k.Poll
	if poll <= 0 {
		poll = time.Minute
	}
	step := func() time.Time {
		if err := k.Tick(ctx); err != nil && ctx.Err() == nil {
			k.logger().Error("legal log upkeep failed; trying again later", "err", err)
		}
		return k.Now().Add(Interval)
	}
	next := step()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		now := k.Now()
		if now.Before(next.Add(-Interval)) {
			next = now.Add(Interval) // the clock went back: count from now
		}
		if !now.Before(next) {
			next = step()
		}
	}
}

// Tick is one step of the Keeper: it signs a new head over the newest entry
// if the log has grown since the newest signed head and that head is at
// least SignAfter old (or there is none), and, if it has not done so in
// the last PurgeEvery, purges the entries older than the retention cutoff.
func (k *Keeper) Tick(ctx context.Context) error {
	if err := k.check(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.Now()
	signErr := k.sign(ctx, now)
	var purgeErr error
	if k.lastPurge.IsZero() || now.Sub(k.lastPurge) >= PurgeEvery || now.Before(k.lastPurge) {
		if purgeErr = k.purge(ctx, now); purgeErr == nil {
			k.lastPurge = now
		}
	}
	return errors.Join(signErr, purgeErr)
}

func (k *Keeper) sign(ctx context.Context, now time.Time) error {
	last, ok, err := k.Store.LogLast(ctx)
	if err != nil {
		return fmt.Errorf("sign the legal log: %w", err)
	}
	if !ok {
		return nil
	}
	heads, err := k.Store.LogHeads(ctx)
	if err != nil {
		return fmt.Errorf("sign the legal log: %w", err)
	}
	if n := len(heads); n > 0 {
		newest := heads[n-1]
		if newest.Seq >= last.Seq || now.Sub(newest.Time) < SignAfter {
			return nil
		}
	}
	h, err := peclog.SignHead(last, now, k.Signer, k.Chain[0])
	if err != nil {
		return fmt.Errorf("sign the legal log at entry %d: %w", last.Seq, err)
	}
	for _, c := range k.Chain[1:] {
		h.Certificate = append(h.Certificate, c.Raw...)
	}
	_, err = k.Proposer.Apply(ctx, &storage.PutLogHead{Head: h})
	if storage.IsCode(err, storage.ErrExists) {
		return nil // signed meanwhile by another leader
	}
	if err != nil {
		return fmt.Errorf("store the legal log head for entry %d: %w", last.Seq, err)
	}
	k.logger().Info("legal log head signed", "seq", last.Seq, "at", h.Time)
	return nil
}

func (k *Keeper) purge(ctx context.Context, now time.Time) error {
	cutoff := peclog.RetentionCutoff(now)
	var removed int64
	var keepFrom uint64
	for range maxPurgeRounds {
		r, err := storage.ApplyAs[storage.PurgeResult](ctx, k.Proposer, &storage.PurgeLog{Before: cutoff.UnixMilli()})
		if err != nil {
			return fmt.Errorf("purge the legal log before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
		}
		removed, keepFrom = removed+r.Removed, r.KeepFrom
		if r.Removed == 0 {
			break
		}
	}
	if removed > 0 {
		k.logger().Info("legal log entries past the retention purged", "removed", removed, "before", cutoff, "log_starts_at", keepFrom)
	}
	return nil
}

// Verify checks the whole legal log in store, read entry by entry: the hash
// chain, the signed heads and the daily signing (peclog.VerifyChain). With
// roots nil each head's signature is checked against the certificate it
// carries, which proves the log unaltered since it was signed but not who
// signed it; with roots the certificates must also chain to them at their
// signing time.
func Verify(ctx context.Context, store *storage.Store, roots *x509.CertPool) (peclog.Report, error) {
	// The heads first: a head stored after them covers entries this
	// reading may see unsigned (at worst an unsigned tail), while heads
	// read after the entries could cover entries never read, and a purge
	// in between leaves the anchor among the heads read.
	heads, err := store.LogHeads(ctx)
	if err != nil {
		return peclog.Report{}, fmt.Errorf("verify the legal log: %w", err)
	}
	v := peclog.NewVerifier(heads, roots)
	err = store.LogEach(ctx, func(e peclog.Entry) error {
		v.Add(e)
		return ctx.Err()
	})
	if err != nil {
		return peclog.Report{}, fmt.Errorf("verify the legal log: %w", err)
	}
	return v.Report(), nil
}

// Record is a legal log entry as `sigillo log search` shows it, hashes in
// hex.
type Record struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Event      string    `json:"event"`
	MsgID      string    `json:"msgid"`
	RelatedIDs []string  `json:"related_ids,omitempty"`
	Sender     string    `json:"sender"`
	Recipients []string  `json:"recipients"`
	Subject    string    `json:"subject"`
	Gestore    string    `json:"gestore"`
	Detail     string    `json:"detail,omitempty"`
	PrevHash   string    `json:"prev_hash"`
	Hash       string    `json:"hash"`
}

// RecordOf is e as a Record.
func RecordOf(e peclog.Entry) Record {
	rcpts := e.Recipients
	if rcpts == nil {
		rcpts = []string{}
	}
	return Record{Seq: e.Seq, Time: e.Time.UTC(), Event: string(e.Event), MsgID: e.MsgID, RelatedIDs: e.RelatedIDs,
		Sender: e.Sender, Recipients: rcpts, Subject: e.Subject, Gestore: e.Gestore, Detail: e.Detail,
		PrevHash: hex.EncodeToString(e.PrevHash), Hash: hex.EncodeToString(e.Hash)}
}

// Search returns the entries f selects, oldest first (see
// storage.LogFilter).
func Search(ctx context.Context, store *storage.Store, f storage.LogFilter) ([]Record, error) {
	entries, err := store.LogEntries(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(entries))
	for _, e := range entries {
		out = append(out, RecordOf(e))
	}
	return out, nil
}

// FilterArgs is f as the arguments of a "log.search" control request;
// FilterFromArgs reads them back.
func FilterArgs(f storage.LogFilter) map[string]string {
	a := map[string]string{}
	if f.MsgID != "" {
		a["msgid"] = f.MsgID
	}
	if f.Sender != "" {
		a["from"] = f.Sender
	}
	if !f.Since.IsZero() {
		a["since"] = f.Since.Format(time.RFC3339Nano)
	}
	if !f.Until.IsZero() {
		a["until"] = f.Until.Format(time.RFC3339Nano)
	}
	if f.Limit != 0 {
		a["limit"] = strconv.Itoa(f.Limit)
	}
	return a
}

// FilterFromArgs reads what FilterArgs wrote.
func FilterFromArgs(a map[string]string) (storage.LogFilter, error) {
	f := storage.LogFilter{MsgID: a["msgid"], Sender: a["from"]}
	for k, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := a[k]; v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fmt.Errorf("log search: %s %q is not an RFC 3339 time", k, v)
			}
			*dst = t
		}
	}
	if v := a["limit"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, fmt.Errorf("log search: limit %q is not a count", v)
		}
		f.Limit = n
	}
	return f, nil
}

// RootsFromPEM reads trusted root certificates for Verify; an empty text
// gives nil (no trust check: each head against its own certificate).
func RootsFromPEM(text string) (*x509.CertPool, error) {
	if text == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	rest := []byte(text)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("trusted roots: certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("trusted roots: no PEM certificate found")
	}
	return pool, nil
}
