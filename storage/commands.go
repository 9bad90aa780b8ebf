package storage

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// newCommand returns an empty command for op, for Decode; nil for an op
// this binary does not know. (nextVersionCommand adds the op of the test
// build that stands for the next version: see upgradeprobe.go.)
func newCommand(op string) Command {
	switch op {
	case "add-domain":
		return &AddDomain{}
	case "remove-domain":
		return &RemoveDomain{}
	case "add-mailbox":
		return &AddMailbox{}
	case "set-password":
		return &SetPassword{}
	case "set-quota":
		return &SetQuota{}
	case "remove-mailbox":
		return &RemoveMailbox{}
	case "deliver":
		return &Deliver{}
	case "queue-retry":
		return &QueueRetry{}
	case "queue-remove":
		return &QueueRemove{}
	case "create-folder":
		return &CreateFolder{}
	case "delete-folder":
		return &DeleteFolder{}
	case "rename-folder":
		return &RenameFolder{}
	case "subscribe":
		return &Subscribe{}
	case "store-flags":
		return &StoreFlags{}
	case "expunge":
		return &Expunge{}
	case "copy":
		return &Copy{}
	case "put-kv":
		return &PutKV{}
	case "delete-kv":
		return &DeleteKV{}
	case "pec-log-append":
		return &AppendLog{}
	case "pec-log-head":
		return &PutLogHead{}
	case "pec-log-purge":
		return &PurgeLog{}
	case "pec-batch":
		return &Batch{}
	case "pec-track-forget":
		return &ForgetTracking{}
	case "virus-store-purge":
		return &PurgeVirusStore{}
	case "lock-try":
		return &TryLock{}
	case "lock-release":
		return &Unlock{}
	}
	return nextVersionCommand(op)
}

// DefaultFolders are made for every new mailbox, with their special use.
func DefaultFolders() []struct{ Name, SpecialUse string } {
	return []struct{ Name, SpecialUse string }{
		{"INBOX", ""},
		{"Drafts", `\Drafts`},
		{"Sent", `\Sent`},
		{"Archive", `\Archive`},
		{"Junk", `\Junk`},
		{"Trash", `\Trash`},
	}
}

// AddDomain starts hosting a domain.
type AddDomain struct {
	Name string `json:"name"`
	At   int64  `json:"at"` // unix seconds
	// PEC runs the domain as certified mail (the PEC gestore rules).
	PEC bool `json:"pec,omitempty"`
}

// Op implements Command.
func (*AddDomain) Op() string { return "add-domain" }

func (c *AddDomain) apply(t *txn) (any, error) {
	name := NormalizeDomain(c.Name)
	if !validDomain(name) {
		return nil, refuse(ErrInvalid, "invalid domain name %q: use labels of letters, digits and hyphens joined by dots, like example.com", c.Name)
	}
	var id int64
	err := t.row("INSERT INTO domains(name, created_at, pec) VALUES(?, ?, ?) ON CONFLICT(name) DO NOTHING RETURNING id", name, c.At, c.PEC).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrExists, "domain %s already exists", name)
	}
	return id, err
}

// RemoveDomain stops hosting a domain; it must have no mailboxes left.
type RemoveDomain struct {
	Name string `json:"name"`
}

// Op implements Command.
func (*RemoveDomain) Op() string { return "remove-domain" }

func (c *RemoveDomain) apply(t *txn) (any, error) {
	name := NormalizeDomain(c.Name)
	var id int64
	if err := t.row("SELECT id FROM domains WHERE name=?", name).Scan(&id); errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no domain %s", name)
	} else if err != nil {
		return nil, err
	}
	var n int
	if err := t.row("SELECT count(*) FROM mailboxes WHERE domain_id=?", id).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		if n == 1 {
			return nil, refuse(ErrNotEmpty, "domain %s still has 1 mailbox: remove it first", name)
		}
		return nil, refuse(ErrNotEmpty, "domain %s still has %d mailboxes: remove them first", name, n)
	}
	_, err := t.exec("DELETE FROM domains WHERE id=?", id)
	return nil, err
}

// AddMailbox creates an account with its default folders.
type AddMailbox struct {
	Address      string `json:"address"`
	PasswordHash string `json:"password_hash"`
	QuotaBytes   int64  `json:"quota_bytes"`
	At           int64  `json:"at"` // unix seconds; also seeds UIDVALIDITY
}

// Op implements Command.
func (*AddMailbox) Op() string { return "add-mailbox" }

func (c *AddMailbox) apply(t *txn) (any, error) {
	addr := NormalizeAddress(c.Address)
	local, dom, ok := SplitAddress(addr)
	if !ok || !validLocal(local) {
		return nil, refuse(ErrInvalid, "invalid address %q", c.Address)
	}
	if c.PasswordHash == "" {
		return nil, refuse(ErrInvalid, "a mailbox needs a password")
	}
	if c.QuotaBytes < 0 {
		return nil, refuse(ErrInvalid, "negative quota")
	}
	var domID int64
	if err := t.row("SELECT id FROM domains WHERE name=?", dom).Scan(&domID); errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "domain %s is not hosted here: add it first", dom)
	} else if err != nil {
		return nil, err
	}
	var id int64
	err := t.row(`INSERT INTO mailboxes(domain_id, address, password_hash, quota_bytes, created_at)
		VALUES(?, ?, ?, ?, ?) ON CONFLICT(address) DO NOTHING RETURNING id`,
		domID, addr, c.PasswordHash, c.QuotaBytes, c.At).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrExists, "mailbox %s already exists", addr)
	} else if err != nil {
		return nil, err
	}
	for _, f := range DefaultFolders() {
		if _, err := t.createFolder(id, f.Name, f.SpecialUse, c.At); err != nil {
			return nil, err
		}
	}
	return id, nil
}

// SetPassword replaces a mailbox's password hash.
type SetPassword struct {
	Address      string `json:"address"`
	PasswordHash string `json:"password_hash"`
}

// Op implements Command.
func (*SetPassword) Op() string { return "set-password" }

func (c *SetPassword) apply(t *txn) (any, error) {
	if c.PasswordHash == "" {
		return nil, refuse(ErrInvalid, "empty password")
	}
	res, err := t.exec("UPDATE mailboxes SET password_hash=? WHERE address=?", c.PasswordHash, NormalizeAddress(c.Address))
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, refuse(ErrNotFound, "no mailbox %s", NormalizeAddress(c.Address))
	}
	return nil, nil
}

// SetQuota changes a mailbox's quota (0: unlimited).
type SetQuota struct {
	Address    string `json:"address"`
	QuotaBytes int64  `json:"quota_bytes"`
}

// Op implements Command.
func (*SetQuota) Op() string { return "set-quota" }

func (c *SetQuota) apply(t *txn) (any, error) {
	if c.QuotaBytes < 0 {
		return nil, refuse(ErrInvalid, "negative quota")
	}
	res, err := t.exec("UPDATE mailboxes SET quota_bytes=? WHERE address=?", c.QuotaBytes, NormalizeAddress(c.Address))
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, refuse(ErrNotFound, "no mailbox %s", NormalizeAddress(c.Address))
	}
	return nil, nil
}

// RemoveMailbox deletes an account with all its folders and messages.
type RemoveMailbox struct {
	Address string `json:"address"`
}

// Op implements Command.
func (*RemoveMailbox) Op() string { return "remove-mailbox" }

func (c *RemoveMailbox) apply(t *txn) (any, error) {
	addr := NormalizeAddress(c.Address)
	var id int64
	if err := t.row("SELECT id FROM mailboxes WHERE address=?", addr).Scan(&id); errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no mailbox %s", addr)
	} else if err != nil {
		return nil, err
	}
	if err := t.deleteMessagesWhere("folder_id IN (SELECT id FROM folders WHERE mailbox_id=?)", id); err != nil {
		return nil, err
	}
	for _, q := range []string{
		"DELETE FROM folders WHERE mailbox_id=?",
		"DELETE FROM mailboxes WHERE id=?",
		// Its ID may be given again to a new mailbox.
		"DELETE FROM delivered WHERE mailbox_id=?",
	} {
		if _, err := t.exec(q, id); err != nil {
			return nil, err
		}
	}
	t.changed(id, 0)
	return nil, nil
}

// Target is one place a delivered message goes.
type Target struct {
	MailboxID int64    `json:"mailbox_id"`
	Folder    string   `json:"folder"` // "" means INBOX
	Flags     []string `json:"flags,omitempty"`
	// EnforceQuota refuses this target when the mailbox would exceed its
	// quota (SMTP delivery, IMAP APPEND). The refusal is reported in
	// DeliverResult.OverQuota, not as an error, so other targets still get
	// the message.
	EnforceQuota bool `json:"enforce_quota,omitempty"`
}

// Outbound puts the delivered message on the outbound queue for remote
// recipients, in the same transaction as the local copies.
type Outbound struct {
	ID          string   `json:"id"`
	Sender      string   `json:"sender"`
	Recipients  []string `json:"recipients"`
	NextAttempt int64    `json:"next_attempt"` // unix seconds
	// RequireTLS: deliver only over TLS (PEC traffic between gestori);
	// a next hop without STARTTLS is a temporary failure.
	RequireTLS bool `json:"require_tls,omitempty"`
}

// Deliver stores one message, once, in any number of folders and on the
// outbound queue.
type Deliver struct {
	Targets  []Target  `json:"targets"`
	Outbound *Outbound `json:"outbound,omitempty"`
	// Quarantine keeps the message in the virus store instead.
	Quarantine   *Quarantine `json:"quarantine,omitempty"`
	InternalDate int64       `json:"internal_date"` // unix seconds
	// Data is the message. A proposer whose message is in a spool file
	// sets Tail to it and Data to what goes before it (trace header
	// fields), or nil: Encode reads Tail straight into the log entry, and
	// the decoded command has all of it in Data and no Tail.
	Data []byte `json:"-"`
	Tail Source `json:"-"`
	// Dedupe, if set, makes the delivery idempotent for a client's retry
	// (dedupe.go): a recipient that had this message delivered or queued
	// within DuplicateWindow of InternalDate (a mailbox: wherever the copy
	// is now, even expunged) counts as delivered and gets nothing more, and
	// DeliverResult says so. Only the SMTP server sets it: IMAP APPEND of
	// the same message twice is two copies on purpose.
	Dedupe *Dedupe `json:"dedupe,omitempty"`
}

// Op implements Command.
func (*Deliver) Op() string            { return "deliver" }
func (c *Deliver) payload() [][]byte   { return [][]byte{c.Data} }
func (c *Deliver) payloadTail() Source { return c.Tail }
func (c *Deliver) setPayload(p []byte) { c.Data, c.Tail = p, nil }

// Placement tells where a delivered copy landed.
type Placement struct {
	MailboxID   int64
	FolderID    int64
	UIDValidity uint32
	UID         uint32
}

// DeliverResult is the value of a Deliver.
type DeliverResult struct {
	SHA256    string
	Placed    []Placement
	OverQuota []int64 // mailbox IDs refused for quota
	// Duplicate are the mailbox IDs, and DuplicateRemote the remote
	// recipients, that had the message already (Deliver.Dedupe): counted
	// as delivered, neither stored nor queued again.
	Duplicate       []int64
	DuplicateRemote []string
}

func (c *Deliver) apply(t *txn) (any, error) {
	if len(c.Targets) == 0 && c.Outbound == nil && c.Quarantine == nil {
		return nil, refuse(ErrInvalid, "deliver: no target")
	}
	sum := sha256.Sum256(c.Data)
	sha := hex.EncodeToString(sum[:])
	size := int64(len(c.Data))
	res := &DeliverResult{SHA256: sha}
	stored := false
	dd, err := t.newDedupe(c)
	if err != nil {
		return nil, err
	}
	for _, tg := range c.Targets {
		name := tg.Folder
		if name == "" || strings.EqualFold(name, "INBOX") {
			name = "INBOX"
		}
		var folderID int64
		var quota, used int64
		err := t.row(`SELECT f.id, m.quota_bytes, m.used_bytes FROM folders f JOIN mailboxes m ON m.id=f.mailbox_id
			WHERE f.mailbox_id=? AND f.name=?`, tg.MailboxID, name).Scan(&folderID, &quota, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, refuse(ErrNotFound, "no folder %q in mailbox %d", name, tg.MailboxID)
		} else if err != nil {
			return nil, err
		}
		over := tg.EnforceQuota && quota > 0 && used+size > quota
		if dd != nil {
			dup, err := dd.duplicate(t, tg.MailboxID, "", !over)
			if err != nil {
				return nil, err
			}
			if dup {
				res.Duplicate = append(res.Duplicate, tg.MailboxID)
				continue
			}
		}
		if over {
			res.OverQuota = append(res.OverQuota, tg.MailboxID)
			continue
		}
		if err := t.addBlob(sha, c.Data, &stored); err != nil {
			return nil, err
		}
		p, err := t.insertMessage(tg.MailboxID, folderID, sha, size, c.InternalDate, canonicalFlags(tg.Flags))
		if err != nil {
			return nil, err
		}
		res.Placed = append(res.Placed, p)
	}
	if len(res.Placed) > 0 {
		// The text for SEARCH BODY and TEXT (fts.go), once per content,
		// is indexed after the commit by the store's indexer.
		if err := t.pendText(sha); err != nil {
			return nil, err
		}
	}
	if q := c.Quarantine; q != nil {
		if err := t.quarantine(q, sha, c.Data, c.InternalDate, &stored); err != nil {
			return nil, err
		}
	}
	if o := c.Outbound; o != nil {
		if o.ID == "" || len(o.Recipients) == 0 {
			return nil, refuse(ErrInvalid, "deliver: outbound needs an id and recipients")
		}
		recipients := o.Recipients
		if dd != nil {
			recipients = nil
			for _, r := range o.Recipients {
				dup, err := dd.duplicate(t, 0, NormalizeAddress(r), true)
				if err != nil {
					return nil, err
				}
				if dup {
					res.DuplicateRemote = append(res.DuplicateRemote, r)
				} else {
					recipients = append(recipients, r)
				}
			}
		}
		if len(recipients) == 0 {
			return res, nil
		}
		if err := t.addBlob(sha, c.Data, &stored); err != nil {
			return nil, err
		}
		rcpts, _ := json.Marshal(recipients)
		if _, err := t.exec(`INSERT INTO queue(id, sender, recipients, sha256, size, created_at, next_attempt, require_tls)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?)`, o.ID, o.Sender, string(rcpts), sha, size, c.InternalDate, o.NextAttempt, o.RequireTLS); err != nil {
			return nil, fmt.Errorf("enqueue %s: %w", o.ID, err)
		}
		t.changed(queueKey, 0)
	}
	return res, nil
}

// QueueRetry records a failed delivery attempt: the recipients still to do
// and when to try again.
type QueueRetry struct {
	ID          string   `json:"id"`
	Recipients  []string `json:"recipients"`
	NextAttempt int64    `json:"next_attempt"`
	LastError   string   `json:"last_error"`
	// Bounce, if set, is the delivery status notification for the
	// recipients that failed, stored in the same transaction, so that a
	// crash can neither lose it nor send it twice.
	Bounce *Deliver `json:"bounce,omitempty"`
}

// Op implements Command.
func (*QueueRetry) Op() string            { return "queue-retry" }
func (c *QueueRetry) payload() [][]byte   { return bouncePayload(c.Bounce) }
func (c *QueueRetry) setPayload(p []byte) { setBouncePayload(c.Bounce, p) }

func bouncePayload(b *Deliver) [][]byte {
	if b == nil {
		return nil
	}
	return [][]byte{b.Data}
}

func setBouncePayload(b *Deliver, p []byte) {
	if b != nil {
		b.Data = p
	}
}

// deliverBounce applies a bounce carried by a queue command. A bounce the
// store refuses (its sender's mailbox was removed meanwhile) is dropped,
// not allowed to hold the queue item forever; it is undone whole.
func deliverBounce(t *txn, b *Deliver) error {
	if b == nil {
		return nil
	}
	if _, err := t.exec("SAVEPOINT bounce"); err != nil {
		return err
	}
	mark := len(t.changes)
	_, err := b.apply(t)
	var refusal *Error
	if errors.As(err, &refusal) {
		if _, err := t.exec("ROLLBACK TO bounce"); err != nil {
			return err
		}
		t.changes = t.changes[:mark]
	} else if err != nil {
		return fmt.Errorf("bounce: %w", err)
	}
	_, err = t.exec("RELEASE bounce")
	return err
}

func (c *QueueRetry) apply(t *txn) (any, error) {
	rcpts, _ := json.Marshal(c.Recipients)
	res, err := t.exec(`UPDATE queue SET recipients=?, next_attempt=?, last_error=?, attempts=attempts+1 WHERE id=?`,
		string(rcpts), c.NextAttempt, c.LastError, c.ID)
	if err != nil {
		return nil, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil, refuse(ErrNotFound, "no queue item %s", c.ID)
	}
	return nil, deliverBounce(t, c.Bounce)
}

// QueueRemove takes a message off the outbound queue (delivered, or bounced).
type QueueRemove struct {
	ID string `json:"id"`
	// Bounce is as in QueueRetry.
	Bounce *Deliver `json:"bounce,omitempty"`
}

// Op implements Command.
func (*QueueRemove) Op() string            { return "queue-remove" }
func (c *QueueRemove) payload() [][]byte   { return bouncePayload(c.Bounce) }
func (c *QueueRemove) setPayload(p []byte) { setBouncePayload(c.Bounce, p) }

func (c *QueueRemove) apply(t *txn) (any, error) {
	var sha string
	if err := t.row("DELETE FROM queue WHERE id=? RETURNING sha256", c.ID).Scan(&sha); errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no queue item %s", c.ID)
	} else if err != nil {
		return nil, err
	}
	if err := t.releaseBlob(sha); err != nil {
		return nil, err
	}
	return nil, deliverBounce(t, c.Bounce)
}

// PutKV sets a replicated key (certificates, the local CA).
type PutKV struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// Op implements Command.
func (*PutKV) Op() string { return "put-kv" }

func (c *PutKV) apply(t *txn) (any, error) {
	if c.Key == "" {
		return nil, refuse(ErrInvalid, "empty key")
	}
	_, err := t.exec("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", c.Key, c.Value)
	return nil, err
}

// DeleteKV removes a replicated key.
type DeleteKV struct {
	Key string `json:"key"`
}

// Op implements Command.
func (*DeleteKV) Op() string { return "delete-kv" }

func (c *DeleteKV) apply(t *txn) (any, error) {
	_, err := t.exec("DELETE FROM kv WHERE key=?", c.Key)
	return nil, err
}

// ---- helpers shared by commands ----

func (t *txn) folder(id int64) (Folder, error) {
	var f Folder
	var sub int
	err := t.row(`SELECT id, mailbox_id, name, special_use, subscribed, uidvalidity, uidnext, highestmodseq FROM folders WHERE id=?`, id).
		Scan(&f.ID, &f.MailboxID, &f.Name, &f.SpecialUse, &sub, &f.UIDValidity, &f.UIDNext, &f.HighestModSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return f, refuse(ErrNotFound, "no such folder")
	}
	f.Subscribed = sub != 0
	return f, err
}

func (t *txn) createFolder(mailboxID int64, name, specialUse string, at int64) (int64, error) {
	// UIDVALIDITY must never repeat for a name, even when a folder is
	// deleted and made again in the same second: keep a counter that only
	// grows, seeded from the proposer's clock.
	var last int64
	if err := t.row("SELECT coalesce((SELECT value FROM meta WHERE key='uidvalidity'), 0)").Scan(&last); err != nil {
		return 0, err
	}
	v := last + 1
	if at > v {
		v = at
	}
	v = v & 0xffffffff
	if v == 0 {
		v = 1
	}
	if _, err := t.exec("INSERT INTO meta(key, value) VALUES('uidvalidity', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", v); err != nil {
		return 0, err
	}
	var id int64
	err := t.row(`INSERT INTO folders(mailbox_id, name, special_use, uidvalidity) VALUES(?, ?, ?, ?)
		ON CONFLICT(mailbox_id, name) DO NOTHING RETURNING id`, mailboxID, name, specialUse, v).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, refuse(ErrExists, "folder %s already exists", name)
	}
	if err != nil {
		return 0, err
	}
	t.changed(mailboxID, 0)
	return id, nil
}

func (t *txn) bumpModSeq(folderID int64) (uint64, error) {
	var ms uint64
	err := t.row("UPDATE folders SET highestmodseq=highestmodseq+1 WHERE id=? RETURNING highestmodseq", folderID).Scan(&ms)
	return ms, err
}

func (t *txn) insertMessage(mailboxID, folderID int64, sha string, size, date int64, flags string) (Placement, error) {
	var uid, validity uint32
	var modseq uint64
	err := t.row(`UPDATE folders SET uidnext=uidnext+1, highestmodseq=highestmodseq+1 WHERE id=?
		RETURNING uidnext-1, uidvalidity, highestmodseq`, folderID).Scan(&uid, &validity, &modseq)
	if err != nil {
		return Placement{}, err
	}
	if _, err := t.exec(`INSERT INTO messages(folder_id, uid, sha256, size, internal_date, flags, modseq) VALUES(?, ?, ?, ?, ?, ?, ?)`,
		folderID, uid, sha, size, date, flags, modseq); err != nil {
		return Placement{}, err
	}
	if _, err := t.exec("UPDATE mailboxes SET used_bytes=used_bytes+? WHERE id=?", size, mailboxID); err != nil {
		return Placement{}, err
	}
	t.changed(mailboxID, folderID)
	return Placement{MailboxID: mailboxID, FolderID: folderID, UIDValidity: validity, UID: uid}, nil
}

// addBlob takes a reference on the content sha, storing data the first time.
// stored tells whether this command already stored the content (data may
// then be nil).
func (t *txn) addBlob(sha string, data []byte, stored *bool) error {
	res, err := t.exec("UPDATE blobs SET refs=refs+1 WHERE sha256=?", sha)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		*stored = true
		return nil
	}
	if *stored && data == nil {
		return fmt.Errorf("blob %s vanished", sha)
	}
	if data == nil {
		data = []byte{}
	}
	_, err = t.exec("INSERT INTO blobs(sha256, data, refs) VALUES(?, ?, 1)", sha, data)
	*stored = true
	return err
}

func (t *txn) releaseBlob(sha string) error {
	if _, err := t.exec("UPDATE blobs SET refs=refs-1 WHERE sha256=?", sha); err != nil {
		return err
	}
	res, err := t.exec("DELETE FROM blobs WHERE sha256=? AND refs<=0", sha)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return t.dropText(sha) // its text goes with it (fts.go)
	}
	return nil
}

// deleteMessagesWhere deletes the matching messages and drops their
// references on their content.
func (t *txn) deleteMessagesWhere(cond string, args ...any) error {
	rows, err := t.tx.QueryContext(t.ctx, "SELECT sha256 FROM messages WHERE "+cond, args...)
	if err != nil {
		return err
	}
	var shas []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return err
		}
		shas = append(shas, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if _, err := t.exec("DELETE FROM messages WHERE "+cond, args...); err != nil {
		return err
	}
	for _, s := range shas {
		if err := t.releaseBlob(s); err != nil {
			return err
		}
	}
	return nil
}

func (t *txn) uids(q string, args ...any) ([]uint32, error) {
	rows, err := t.tx.QueryContext(t.ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var u uint32
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

func sortedUIDs(in []uint32) []uint32 {
	out := append([]uint32(nil), in...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	j := 0
	for i, u := range out {
		if i > 0 && u == out[j-1] {
			continue
		}
		out[j] = u
		j++
	}
	return out[:j]
}

// ---- flags ----

var systemFlags = []string{`\Answered`, `\Flagged`, `\Deleted`, `\Seen`, `\Draft`}

// canonicalFlag spells system flags the standard way; keywords keep their
// case (IMAP keywords are case-insensitive, so they are matched that way).
func canonicalFlag(f string) string {
	for _, s := range systemFlags {
		if strings.EqualFold(f, s) {
			return s
		}
	}
	return f
}

func canonicalFlags(in []string) string {
	return strings.Join(normalizeFlags(in), " ")
}

func normalizeFlags(in []string) []string {
	var out []string
	for _, f := range in {
		f = canonicalFlag(strings.TrimSpace(f))
		if f == "" || strings.EqualFold(f, `\Recent`) || hasFlag(out, f) {
			continue
		}
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

func splitFlags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

func applyFlags(old []string, mode FlagMode, flags []string) []string {
	switch mode {
	case FlagsSet:
		return normalizeFlags(flags)
	case FlagsAdd:
		return normalizeFlags(append(append([]string(nil), old...), flags...))
	case FlagsRemove:
		var out []string
		for _, f := range old {
			if !hasFlag(flags, f) {
				out = append(out, f)
			}
		}
		return normalizeFlags(out)
	}
	return old
}

// ---- validation ----

func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func validLocal(l string) bool {
	if len(l) == 0 || len(l) > 64 || l[0] == '.' || l[len(l)-1] == '.' || strings.Contains(l, "..") {
		return false
	}
	for _, r := range l {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),:;<>@[\]`, r) {
			return false
		}
	}
	return true
}

func validFolderName(name string) error {
	if name == "" || len(name) > 255 {
		return refuse(ErrInvalid, "folder name must be 1 to 255 bytes")
	}
	if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return refuse(ErrInvalid, "folder name %q has an empty level", name)
	}
	for _, r := range name {
		if r < ' ' || r == 0x7f || r == '*' || r == '%' {
			return refuse(ErrInvalid, "folder name %q has a forbidden character", name)
		}
	}
	if strings.EqualFold(name, "INBOX") {
		return refuse(ErrExists, "INBOX already exists")
	}
	return nil
}
