package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// virusStoreSchema is migration 5: infected messages kept apart from every
// mailbox (PEC: 30 months, DPR 68/2005 art. 12), content in blobs.
const virusStoreSchema = `
CREATE TABLE virus_store (
	id          INTEGER PRIMARY KEY,
	sha256      TEXT NOT NULL REFERENCES blobs(sha256),
	size        INTEGER NOT NULL,
	detected_at INTEGER NOT NULL,
	virus       TEXT NOT NULL,
	sender      TEXT NOT NULL,
	recipients  TEXT NOT NULL,
	context     TEXT NOT NULL,
	msgid       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX virus_store_at ON virus_store(detected_at);
`

// Quarantine keeps a Deliver's message in the virus store.
type Quarantine struct {
	Virus      string   `json:"virus"`
	Sender     string   `json:"sender"`
	Recipients []string `json:"recipients"`
	// Context says where it was found ("access point", "reception point").
	Context string `json:"context"`
	MsgID   string `json:"msgid,omitempty"` // the PEC identificativo or Message-ID
}

func (t *txn) quarantine(q *Quarantine, sha string, data []byte, at int64, stored *bool) error {
	if q.Virus == "" {
		return refuse(ErrInvalid, "quarantine: no virus name")
	}
	if err := t.addBlob(sha, data, stored); err != nil {
		return err
	}
	rcpts, _ := json.Marshal(q.Recipients)
	_, err := t.exec(`INSERT INTO virus_store(sha256, size, detected_at, virus, sender, recipients, context, msgid)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?)`, sha, len(data), at, q.Virus, q.Sender, string(rcpts), q.Context, q.MsgID)
	return err
}

// PurgeVirusStore deletes the infected messages detected before Before
// (unix seconds).
type PurgeVirusStore struct {
	Before int64 `json:"before"`
}

// Op implements Command.
func (*PurgeVirusStore) Op() string { return "virus-store-purge" }

func (c *PurgeVirusStore) apply(t *txn) (any, error) {
	rows, err := t.tx.QueryContext(t.ctx, "DELETE FROM virus_store WHERE detected_at<? RETURNING sha256", c.Before)
	if err != nil {
		return nil, err
	}
	var shas []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, err
		}
		shas = append(shas, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, s := range shas {
		if err := t.releaseBlob(s); err != nil {
			return nil, err
		}
	}
	return int64(len(shas)), nil
}

// Infected is one message in the virus store.
type Infected struct {
	ID         int64     `json:"id"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	DetectedAt time.Time `json:"detected_at"`
	Virus      string    `json:"virus"`
	Sender     string    `json:"sender"`
	Recipients []string  `json:"recipients"`
	Context    string    `json:"context"`
	MsgID      string    `json:"msgid,omitempty"`
}

// VirusStore lists the virus store, newest first (at most limit).
func (s *Store) VirusStore(ctx context.Context, limit int) ([]Infected, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, sha256, size, detected_at, virus, sender, recipients, context, msgid
		FROM virus_store ORDER BY detected_at DESC, id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("virus store: %w", err)
	}
	defer rows.Close()
	var out []Infected
	for rows.Next() {
		var v Infected
		var at int64
		var rcpts string
		if err := rows.Scan(&v.ID, &v.SHA256, &v.Size, &at, &v.Virus, &v.Sender, &rcpts, &v.Context, &v.MsgID); err != nil {
			return nil, fmt.Errorf("virus store: %w", err)
		}
		json.Unmarshal([]byte(rcpts), &v.Recipients)
		v.DetectedAt = time.Unix(at, 0).UTC()
		out = append(out, v)
	}
	return out, rows.Err()
}

// VirusStoreCount is how many messages the virus store holds.
func (s *Store) VirusStoreCount(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM virus_store").Scan(&n); err != nil {
		return 0, fmt.Errorf("virus store: %w", err)
	}
	return n, nil
}
