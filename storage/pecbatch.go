package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"sigillo/storage/peclog"
)

// pecTrackSchema is migration 4: outbound items that must go over TLS (PEC
// traffic between gestori) and the tracking of every busta sent to another
// gestore, recipient by recipient, for the 12 h and 24 h notices.
const pecTrackSchema = `
ALTER TABLE queue ADD COLUMN require_tls INTEGER NOT NULL DEFAULT 0;
CREATE TABLE pec_track (
	msgid       TEXT NOT NULL,
	recipient   TEXT NOT NULL,
	sender      TEXT NOT NULL,
	subject     TEXT NOT NULL DEFAULT '',
	orig_msgid  TEXT NOT NULL DEFAULT '',
	sent_at     INTEGER NOT NULL,
	presa_at    INTEGER,
	consegna_at INTEGER,
	warned12_at INTEGER,
	warned24_at INTEGER,
	PRIMARY KEY (msgid, recipient)
);
CREATE INDEX pec_track_open ON pec_track(sent_at) WHERE consegna_at IS NULL AND warned24_at IS NULL;
`

// pecReceivedSchema is migration 6: the bustas the reception point took in
// charge, per recipient, so that one sent again (a sending gestore retrying
// after a lost reply) is not delivered, nor receipted, twice.
const pecReceivedSchema = `
CREATE TABLE pec_received (
	msgid     TEXT NOT NULL,
	recipient TEXT NOT NULL,
	at        INTEGER NOT NULL,
	PRIMARY KEY (msgid, recipient)
);
CREATE INDEX pec_received_at ON pec_received(at);
`

// pecTrackDetailSchema is migration 8: what the 12 h / 24 h notices need
// from the busta besides its tracking (recipients, Reply-To).
const pecTrackDetailSchema = `ALTER TABLE pec_track ADD COLUMN detail TEXT NOT NULL DEFAULT '';`

// Batch applies what one PEC transaction produces as a single unit: the
// messages it stores or queues, the events it adds to the legal log, and
// the changes to the tracking of sent bustas. Either all of it is applied
// or, on any refusal, none of it.
type Batch struct {
	Deliveries []*Deliver     `json:"deliveries"`
	Log        []peclog.Entry `json:"log,omitempty"`
	Track      []Track        `json:"track,omitempty"`
	// sizes carries the length of each delivery's Data in the encoded
	// command; the contents follow the JSON body, one after the other.
	Sizes []int `json:"sizes"`
}

// Op implements Command.
func (*Batch) Op() string { return "pec-batch" }

// MarshalJSON records the size of each delivery's content.
func (c *Batch) MarshalJSON() ([]byte, error) {
	type plain Batch
	p := plain(*c)
	p.Sizes = make([]int, len(c.Deliveries))
	for i, d := range c.Deliveries {
		if d == nil {
			return nil, errors.New("batch: nil delivery")
		}
		if d.Tail != nil {
			return nil, errors.New("batch: a delivery's content must be in Data")
		}
		p.Sizes[i] = len(d.Data)
	}
	return json.Marshal(p)
}

func (c *Batch) payload() [][]byte {
	out := make([][]byte, len(c.Deliveries))
	for i, d := range c.Deliveries {
		out[i] = d.Data
	}
	return out
}

func (c *Batch) setPayload(p []byte) {
	for i, d := range c.Deliveries {
		if d == nil || i >= len(c.Sizes) || c.Sizes[i] < 0 || c.Sizes[i] > len(p) {
			c.Sizes = nil // apply refuses the command
			return
		}
		d.Data, p = p[:c.Sizes[i]:c.Sizes[i]], p[c.Sizes[i]:]
	}
	if len(p) != 0 {
		c.Sizes = nil
	}
}

// BatchResult is the value of a Batch: one DeliverResult per delivery.
type BatchResult struct {
	Deliveries []*DeliverResult
	Log        []peclog.Entry // the entries as chained and stored
}

func (c *Batch) apply(t *txn) (any, error) {
	if len(c.Sizes) != len(c.Deliveries) {
		return nil, refuse(ErrInvalid, "pec-batch: contents do not match their sizes")
	}
	if len(c.Deliveries) == 0 && len(c.Log) == 0 && len(c.Track) == 0 {
		return nil, refuse(ErrInvalid, "pec-batch: empty")
	}
	res := &BatchResult{}
	for i, d := range c.Deliveries {
		v, err := d.apply(t)
		if err != nil {
			return nil, fmt.Errorf("delivery %d: %w", i+1, err)
		}
		r, _ := v.(*DeliverResult)
		if r != nil && len(r.OverQuota) > 0 {
			return nil, refuse(ErrOverQuota, "pec-batch: delivery %d: mailbox %d over quota", i+1, r.OverQuota[0])
		}
		res.Deliveries = append(res.Deliveries, r)
	}
	for _, tr := range c.Track {
		if err := tr.apply(t); err != nil {
			return nil, err
		}
	}
	if len(c.Log) > 0 {
		stored, err := t.appendLog(c.Log)
		if err != nil {
			return nil, err
		}
		res.Log = stored
	}
	return res, nil
}

// TrackOp is what happened to a sent busta for one recipient.
type TrackOp string

// Tracking operations.
const (
	// TrackSent starts tracking: the busta left for another gestore.
	TrackSent TrackOp = "sent"
	// TrackPresa: its presa in carico arrived.
	TrackPresa TrackOp = "presa"
	// TrackConsegna: its ricevuta di avvenuta consegna or avviso di
	// mancata consegna arrived; tracking ends.
	TrackConsegna TrackOp = "consegna"
	// TrackWarned12 and TrackWarned24: the 12 h preavviso and the final 24 h
	// avviso were emitted. Each is refused with ErrConflict when it is no
	// longer due (already emitted, or resolved meanwhile), which undoes
	// the whole batch that carries the notice: it is never emitted twice.
	TrackWarned12 TrackOp = "warned12"
	TrackWarned24 TrackOp = "warned24"
	// TrackReceived records a busta taken in charge for a recipient of
	// ours; a second one for the same recipient is refused with
	// ErrConflict, undoing the batch that would deliver it again.
	TrackReceived TrackOp = "received"
)

// Track is one change to the tracking of a sent busta.
type Track struct {
	Op        TrackOp `json:"op"`
	MsgID     string  `json:"msgid"`
	Recipient string  `json:"recipient"`
	At        int64   `json:"at"` // unix seconds
	// For TrackSent:
	Sender    string `json:"sender,omitempty"`
	Subject   string `json:"subject,omitempty"`
	OrigMsgID string `json:"orig_msgid,omitempty"`
	// Detail is what else the notices need from the busta (its
	// recipients and Reply-To, for their daticert), opaque here.
	Detail string `json:"detail,omitempty"`
}

func (tr Track) apply(t *txn) error {
	rcpt := NormalizeAddress(tr.Recipient)
	if tr.MsgID == "" || rcpt == "" {
		return refuse(ErrInvalid, "pec-batch: tracking needs a msgid and a recipient")
	}
	var q string
	args := []any{tr.At, tr.MsgID, rcpt}
	switch tr.Op {
	case TrackReceived:
		r, err := t.exec(`INSERT INTO pec_received(msgid, recipient, at) VALUES(?, ?, ?) ON CONFLICT DO NOTHING`, tr.MsgID, rcpt, tr.At)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return refuse(ErrConflict, "pec-batch: busta %s for %s already taken in charge", tr.MsgID, rcpt)
		}
		return nil
	case TrackSent:
		_, err := t.exec(`INSERT INTO pec_track(msgid, recipient, sender, subject, orig_msgid, sent_at, detail) VALUES(?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(msgid, recipient) DO NOTHING`, tr.MsgID, rcpt, tr.Sender, tr.Subject, tr.OrigMsgID, tr.At, tr.Detail)
		return err
	case TrackPresa:
		q = "UPDATE pec_track SET presa_at=? WHERE msgid=? AND recipient=? AND presa_at IS NULL"
	case TrackConsegna:
		q = "UPDATE pec_track SET consegna_at=? WHERE msgid=? AND recipient=? AND consegna_at IS NULL"
	case TrackWarned12:
		q = `UPDATE pec_track SET warned12_at=? WHERE msgid=? AND recipient=? AND warned12_at IS NULL
			AND presa_at IS NULL AND consegna_at IS NULL`
	case TrackWarned24:
		q = `UPDATE pec_track SET warned24_at=? WHERE msgid=? AND recipient=? AND warned24_at IS NULL
			AND consegna_at IS NULL`
	default:
		return refuse(ErrInvalid, "pec-batch: unknown tracking operation %q", tr.Op)
	}
	r, err := t.exec(q, args...)
	if err != nil {
		return err
	}
	n, _ := r.RowsAffected()
	if n == 0 && (tr.Op == TrackWarned12 || tr.Op == TrackWarned24) {
		return refuse(ErrConflict, "pec-batch: %s for %s to %s is no longer due", tr.Op, tr.MsgID, rcpt)
	}
	return nil
}

// ForgetTracking deletes the tracking of bustas sent before Before (unix
// seconds): long after their notices were due, it only takes room. The
// legal log keeps what happened.
type ForgetTracking struct {
	Before int64 `json:"before"`
}

// Op implements Command.
func (*ForgetTracking) Op() string { return "pec-track-forget" }

func (c *ForgetTracking) apply(t *txn) (any, error) {
	r, err := t.exec("DELETE FROM pec_track WHERE sent_at<?", c.Before)
	if err != nil {
		return nil, err
	}
	n, _ := r.RowsAffected()
	r, err = t.exec("DELETE FROM pec_received WHERE at<?", c.Before)
	if err != nil {
		return nil, err
	}
	m, _ := r.RowsAffected()
	return n + m, nil
}

// Tracked is the state of one sent busta for one recipient.
type Tracked struct {
	MsgID, Recipient, Sender, Subject, OrigMsgID string
	Detail                                       string
	SentAt                                       time.Time
	Presa, Consegna, Warned12, Warned24          bool
}

// TrackedDue lists the tracked recipients that may need a notice at now:
// sent at least after12 ago with neither presa in carico, consegna nor 12 h
// notice, or at least after24 ago with neither consegna nor final notice.
func (s *Store) TrackedDue(ctx context.Context, now time.Time, after12, after24 time.Duration) ([]Tracked, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT msgid, recipient, sender, subject, orig_msgid, detail, sent_at,
		presa_at IS NOT NULL, consegna_at IS NOT NULL, warned12_at IS NOT NULL, warned24_at IS NOT NULL
		FROM pec_track WHERE consegna_at IS NULL AND warned24_at IS NULL AND (
			(sent_at<=? AND presa_at IS NULL AND warned12_at IS NULL) OR sent_at<=?)
		ORDER BY sent_at, msgid, recipient`, now.Add(-after12).Unix(), now.Add(-after24).Unix())
	if err != nil {
		return nil, fmt.Errorf("tracked bustas: %w", err)
	}
	defer rows.Close()
	var out []Tracked
	for rows.Next() {
		var tr Tracked
		var sent int64
		if err := rows.Scan(&tr.MsgID, &tr.Recipient, &tr.Sender, &tr.Subject, &tr.OrigMsgID, &tr.Detail, &sent,
			&tr.Presa, &tr.Consegna, &tr.Warned12, &tr.Warned24); err != nil {
			return nil, fmt.Errorf("tracked bustas: %w", err)
		}
		tr.SentAt = time.Unix(sent, 0).UTC()
		out = append(out, tr)
	}
	return out, rows.Err()
}

// TrackedMessage returns the tracking of one busta, every recipient.
func (s *Store) TrackedMessage(ctx context.Context, msgid string) ([]Tracked, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT msgid, recipient, sender, subject, orig_msgid, detail, sent_at,
		presa_at IS NOT NULL, consegna_at IS NOT NULL, warned12_at IS NOT NULL, warned24_at IS NOT NULL
		FROM pec_track WHERE msgid=? ORDER BY recipient`, msgid)
	if err != nil {
		return nil, fmt.Errorf("tracked busta %s: %w", msgid, err)
	}
	defer rows.Close()
	var out []Tracked
	for rows.Next() {
		var tr Tracked
		var sent int64
		if err := rows.Scan(&tr.MsgID, &tr.Recipient, &tr.Sender, &tr.Subject, &tr.OrigMsgID, &tr.Detail, &sent,
			&tr.Presa, &tr.Consegna, &tr.Warned12, &tr.Warned24); err != nil {
			return nil, fmt.Errorf("tracked busta %s: %w", msgid, err)
		}
		tr.SentAt = time.Unix(sent, 0).UTC()
		out = append(out, tr)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// AlreadyReceived reports whether the busta msgid was taken in charge for
// recipient before.
func (s *Store) AlreadyReceived(ctx context.Context, msgid, recipient string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM pec_received WHERE msgid=? AND recipient=?", msgid, NormalizeAddress(recipient)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("received bustas: %w", err)
	}
	return n > 0, nil
}
