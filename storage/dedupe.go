package storage

import (
	"crypto/sha256"
	"database/sql"
	"errors"
	"strings"
	"time"
)

// deliveredSchema is migration 11: the deliveries made idempotent
// (Deliver.Dedupe), one row per recipient, so that a client sending again
// a message whose 250 it never saw (the reply lost in a leader's failover,
// a dropped connection) does not get it stored or queued twice. A local
// recipient is its mailbox (and an empty recipient), a remote one its address
// (mailbox_id 0). msg_key is the SHA-256 of the Message-ID and the content
// hash (Dedupe.key); at is the command's time. Rows older than
// DuplicateWindow are purged by later deliveries (newDedupe).
//
// It records that a delivery happened, not where the copy is: a message
// the user has since moved to another folder, or expunged, still counts
// (as Gmail does by Message-ID). A POP3 client that downloads and deletes
// every minute would otherwise get the retry as a second message, exactly
// the case this is for.
const deliveredSchema = `
CREATE TABLE delivered (
	mailbox_id INTEGER NOT NULL,
	recipient  TEXT NOT NULL,
	msg_key    BLOB NOT NULL,
	at         INTEGER NOT NULL,
	PRIMARY KEY (mailbox_id, recipient, msg_key)
) WITHOUT ROWID;
CREATE INDEX delivered_at ON delivered(at);
`

// DuplicateWindow is how long a delivery made with Deliver.Dedupe is
// remembered: the same message for the same recipient within it is
// acknowledged without being stored or queued again.
const DuplicateWindow = 24 * time.Hour

// purgePerDelivery bounds the old rows one delivery deletes, so that the
// first delivery after a long quiet spell does not hold the apply; it is
// more than the rows a delivery adds (the SMTP server takes at most 100
// recipients), so the table never grows past a window's deliveries.
const purgePerDelivery = 256

// Dedupe identifies the message of a Deliver for the duplicate check. It
// is not the stored content's hash: the SMTP server puts a Received: field
// with a new queue ID and time before every copy, so the content hash is of
// the message as the client sent it.
type Dedupe struct {
	// MessageID is the Message-ID: field's identifier (NormalizeMessageID);
	// empty, there is no check (a message without one is never taken for
	// another).
	MessageID string `json:"message_id"`
	// SHA256 is the hex SHA-256 of the message as the client sent it.
	SHA256 string `json:"sha256"`
}

// NormalizeMessageID returns the identifier of a Message-ID: field's value:
// what is between its first angle brackets (or the value, when it has
// none) without folding white space; "" when there is nothing.
func NormalizeMessageID(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return ""
		}
		v = v[i+1 : i+j]
	}
	return strings.Join(strings.Fields(v), "")
}

// key is the key of the message in the delivered table: nil when it has
// no Message-ID.
func (d *Dedupe) key() ([]byte, error) {
	id := NormalizeMessageID(d.MessageID)
	if id == "" {
		return nil, nil
	}
	if len(d.SHA256) != 2*sha256.Size || strings.Trim(d.SHA256, "0123456789abcdef") != "" {
		return nil, refuse(ErrInvalid, "deliver: dedupe needs the content's SHA-256 in lowercase hex, not %q", d.SHA256)
	}
	sum := sha256.Sum256([]byte(id + "\x00" + d.SHA256))
	return sum[:], nil
}

// dedupe is one command's duplicate check.
type dedupe struct {
	key   []byte
	at    int64
	since int64 // a delivery after since is within the window
	// decided holds the answers already given in this command, so that a
	// recipient named twice (two folders of one mailbox) gets both copies
	// and its retry neither.
	decided map[recipientKey]bool
}

type recipientKey struct {
	mailbox int64
	addr    string
}

// newDedupe starts the check for c, and purges what is out of the window;
// nil when c has no Dedupe or its message no Message-ID.
func (t *txn) newDedupe(c *Deliver) (*dedupe, error) {
	if c.Dedupe == nil {
		return nil, nil
	}
	key, err := c.Dedupe.key()
	if key == nil || err != nil {
		return nil, err
	}
	d := &dedupe{key: key, at: c.InternalDate, since: c.InternalDate - int64(DuplicateWindow/time.Second), decided: map[recipientKey]bool{}}
	if _, err := t.exec(`DELETE FROM delivered WHERE (mailbox_id, recipient, msg_key) IN
		(SELECT mailbox_id, recipient, msg_key FROM delivered WHERE at<=? ORDER BY at LIMIT ?)`, d.since, purgePerDelivery); err != nil {
		return nil, err
	}
	return d, nil
}

// duplicate tells whether the message went to the recipient (a mailbox,
// or a remote address with mailbox 0) within the window. When record is
// set and it did not, this delivery is recorded; a delivery that will not
// happen (over quota) is only checked.
func (d *dedupe) duplicate(t *txn, mailbox int64, addr string, record bool) (bool, error) {
	rk := recipientKey{mailbox, addr}
	if dup, ok := d.decided[rk]; ok {
		return dup, nil
	}
	if !record {
		var n int
		err := t.row("SELECT 1 FROM delivered WHERE mailbox_id=? AND recipient=? AND msg_key=? AND at>?", mailbox, addr, d.key, d.since).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	}
	r, err := t.exec(`INSERT INTO delivered(mailbox_id, recipient, msg_key, at) VALUES(?, ?, ?, ?)
		ON CONFLICT(mailbox_id, recipient, msg_key) DO UPDATE SET at=excluded.at WHERE delivered.at<=?`,
		mailbox, addr, d.key, d.at, d.since)
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, err
	}
	d.decided[rk] = n == 0
	return n == 0, nil
}
