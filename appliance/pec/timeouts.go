package pec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"sigillo/appliance/passwd"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// The notice times (RFC 6109 §3.1.6, PEC.md §3.5): the preavviso when
// neither a presa in carico nor a consegna came within 12 hours of sending;
// the final avviso when no consegna came within 24 hours, emitted in the
// window the rules give (not before 22 h, by 24 h): at 23 h 30 m, leaving
// the timer's period to spare.
const (
	After12   = 12 * time.Hour
	AfterLast = 23*time.Hour + 30*time.Minute
	// ForgetAfter is when the tracking of a busta is deleted: every notice
	// is long settled (the legal log keeps what happened).
	ForgetAfter = 30 * 24 * time.Hour
	// VirusStoreMonths is how long infected messages are kept.
	VirusStoreMonths = 30
)

// TrackedStore lists the bustas that may need a notice (storage.Store).
type TrackedStore interface {
	TrackedDue(ctx context.Context, now time.Time, after12, after24 time.Duration) ([]storage.Tracked, error)
}

// Timer is the leader's job for the 12 h / 24 h notices. It works from the
// tracking stored with each busta sent to another gestore, so a restart or a
// new leader resumes it; each notice is applied together with the mark that
// it was sent, and the mark refuses a second one, so none is ever repeated.
type Timer struct {
	Gestore  *Gestore
	Store    TrackedStore
	Proposer storage.Proposer
	Period   time.Duration // default 1 minute

	lastForget time.Time // owned by the goroutine running Run or Tick
}

// Run ticks until ctx ends.
func (t *Timer) Run(ctx context.Context) {
	period := t.Period
	if period <= 0 {
		period = time.Minute
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if err := t.Tick(ctx); err != nil && ctx.Err() == nil {
			t.Gestore.logger().Warn("pec: timeouts", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Tick emits the notices due now, and makes sure the service mailbox exists.
// It returns how many notices it sent through Sent (for tests) and the first
// error.
func (t *Timer) Tick(ctx context.Context) error {
	g := t.Gestore
	if err := t.ensureServiceMailbox(ctx); err != nil {
		g.logger().Warn("pec: service mailbox", "err", err)
	}
	now := g.now()
	due, err := t.Store.TrackedDue(ctx, now, After12, AfterLast)
	if err != nil {
		return err
	}
	if t.lastForget.IsZero() || now.Sub(t.lastForget) >= 24*time.Hour {
		_, err := t.Proposer.Apply(ctx, &storage.ForgetTracking{Before: now.Add(-ForgetAfter).Unix()})
		if err == nil {
			// Infected messages are kept 30 months (DPR 68/2005 art. 12).
			var c int64
			c, err = storage.ApplyAs[int64](ctx, t.Proposer, &storage.PurgeVirusStore{Before: now.AddDate(0, -VirusStoreMonths, 0).Unix()})
			if c > 0 {
				g.logger().Info("pec: virus store purged", "removed", c, "months", VirusStoreMonths)
			}
		}
		if err != nil {
			g.logger().Warn("pec: daily purge", "err", err)
		} else {
			t.lastForget = now
		}
	}
	var first error
	for _, tr := range due {
		elapsed := now.Sub(tr.SentAt)
		if !tr.Presa && !tr.Warned12 && elapsed >= After12 {
			if err := t.notice(ctx, tr, false, now); err != nil && first == nil {
				first = err
			}
		}
		if elapsed >= AfterLast {
			if err := t.notice(ctx, tr, true, now); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func (t *Timer) notice(ctx context.Context, tr storage.Tracked, final bool, at time.Time) error {
	g := t.Gestore
	ds, err := g.domains(ctx)
	if err != nil {
		return err
	}
	rcpts, risposte := fromTrackDetail(tr)
	td := textData{at: at, subject: tr.Subject, sender: tr.Sender, recipient: tr.Recipient, id: tr.MsgID, recipients: rcpts}
	dc := Daticert{Tipo: "preavviso-errore-consegna", Mittente: tr.Sender, Destinatari: rcpts, Risposte: risposte,
		Oggetto: tr.Subject, Gestore: g.Provider, Time: at, ID: tr.MsgID, MsgID: tr.OrigMsgID, Consegna: tr.Recipient}
	op, event := storage.TrackWarned12, peclog.EventPreavvisoMancataConsegna
	if final {
		op, event = storage.TrackWarned24, peclog.EventMancataConsegnaTimeout
		dc.Errore, dc.ErroreEsteso = "altro", "5.4.7 - "+g.Provider+" - mancata consegna entro 24 ore / not delivered within 24 hours"
	}
	msg, err := message{
		header: g.noticeHeader(at, tr.Sender, "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: "+encodeText(tr.Subject), tr.OrigMsgID, "preavviso-errore-consegna"),
		text:   textPreavviso(td, final), daticert: dc.XML(),
	}.build(g.Signer)
	if err != nil {
		return unavailable("signing the avviso per superamento dei tempi massimi", err)
	}
	p := &plan{}
	if err := g.send(ctx, p, ds, g.Service, []string{tr.Sender}, msg, at, false); err != nil {
		return err
	}
	p.batch.Track = append(p.batch.Track, storage.Track{Op: op, MsgID: tr.MsgID, Recipient: tr.Recipient, At: at.Unix()})
	p.log(peclog.Entry{Time: at, Event: event, MsgID: tr.MsgID, RelatedIDs: relatedIDs(tr.OrigMsgID),
		Sender: tr.Sender, Recipients: []string{tr.Recipient}, Subject: tr.Subject, Gestore: g.Provider})
	_, err = t.Proposer.Apply(ctx, &p.batch)
	if storage.IsCode(err, storage.ErrConflict) {
		return nil // resolved or sent meanwhile
	}
	if err != nil {
		return fmt.Errorf("pec: storing the %s notice for %s to %s: %w", op, tr.MsgID, tr.Recipient, err)
	}
	g.logger().Info("pec: timeout notice sent", "id", tr.MsgID, "to", tr.Sender, "recipient", tr.Recipient, "final", final)
	return nil
}

// ensureServiceMailbox creates the service mailbox when its domain is
// hosted and it does not exist yet. Its password is random: an admin who
// wants to read it sets one with `sigillo mailbox passwd`.
func (t *Timer) ensureServiceMailbox(ctx context.Context) error {
	g := t.Gestore
	ds, err := g.domains(ctx)
	if err != nil {
		return err
	}
	if _, hosted := ds.hosted[g.serviceDomain()]; !hosted {
		return nil
	}
	if _, err := g.Store.MailboxByAddress(ctx, g.Service); err == nil || !storage.IsCode(err, storage.ErrNotFound) {
		return err
	}
	var r [24]byte
	rand.Read(r[:])
	hash, err := passwd.Hash(hex.EncodeToString(r[:]), passwd.Default())
	if err != nil {
		return err
	}
	_, err = t.Proposer.Apply(ctx, &storage.AddMailbox{Address: g.Service, PasswordHash: hash, At: g.now().Unix()})
	if err == nil {
		g.logger().Info("pec: service mailbox created", "address", g.Service)
	}
	return err
}

// trackDetail is what the notices need of a busta besides its tracking:
// its recipients (the daticert's destinatari) and its risposte.
func trackDetail(rcpts []Destinatario, risposte string) string {
	type d struct {
		Address     string `json:"a"`
		Certificato bool   `json:"c,omitempty"`
	}
	v := struct {
		Destinatari []d    `json:"d"`
		Risposte    string `json:"r"`
	}{Risposte: risposte}
	for _, r := range rcpts {
		v.Destinatari = append(v.Destinatari, d(r))
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// fromTrackDetail reads trackDetail back; a busta tracked without it (or
// with a detail that does not parse) gets the recipient concerned and the
// sender.
func fromTrackDetail(tr storage.Tracked) ([]Destinatario, string) {
	var v struct {
		Destinatari []struct {
			Address     string `json:"a"`
			Certificato bool   `json:"c"`
		} `json:"d"`
		Risposte string `json:"r"`
	}
	if json.Unmarshal([]byte(tr.Detail), &v) != nil || len(v.Destinatari) == 0 {
		return []Destinatario{{Address: tr.Recipient, Certificato: true}}, tr.Sender
	}
	out := make([]Destinatario, 0, len(v.Destinatari))
	for _, d := range v.Destinatari {
		out = append(out, Destinatario{Address: d.Address, Certificato: d.Certificato})
	}
	if v.Risposte == "" {
		v.Risposte = tr.Sender
	}
	return out, v.Risposte
}
