package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Domains lists the hosted domains with their mailbox counts.
func (s *Store) Domains(ctx context.Context) ([]Domain, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.id, d.name, d.created_at,
		(SELECT count(*) FROM mailboxes m WHERE m.domain_id=d.id), d.pec FROM domains d ORDER BY d.name`)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	var out []Domain
	for rows.Next() {
		var d Domain
		var at int64
		if err := rows.Scan(&d.ID, &d.Name, &at, &d.Mailboxes, &d.PEC); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		d.CreatedAt = time.Unix(at, 0).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// DomainKinds maps every hosted domain to whether it is a PEC domain: what
// the PEC gestore asks at every RCPT, without Domains' mailbox counts.
func (s *Store) DomainKinds(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name, pec FROM domains")
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		var pec bool
		if err := rows.Scan(&name, &pec); err != nil {
			return nil, fmt.Errorf("list domains: %w", err)
		}
		out[name] = pec
	}
	return out, rows.Err()
}

// IsLocalDomain reports whether domain is hosted here.
func (s *Store) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM domains WHERE name=?", NormalizeDomain(domain)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up domain %s: %w", domain, err)
	}
	return n > 0, nil
}

const mailboxCols = "id, domain_id, address, password_hash, quota_bytes, used_bytes, created_at"

func scanMailbox(sc interface{ Scan(...any) error }) (Mailbox, error) {
	var m Mailbox
	var at int64
	err := sc.Scan(&m.ID, &m.DomainID, &m.Address, &m.PasswordHash, &m.QuotaBytes, &m.UsedBytes, &at)
	m.CreatedAt = time.Unix(at, 0).UTC()
	return m, err
}

// MailboxByAddress finds an account; a refusal with ErrNotFound if none.
func (s *Store) MailboxByAddress(ctx context.Context, address string) (Mailbox, error) {
	addr := NormalizeAddress(address)
	m, err := scanMailbox(s.db.QueryRowContext(ctx, "SELECT "+mailboxCols+" FROM mailboxes WHERE address=?", addr))
	if errors.Is(err, sql.ErrNoRows) {
		return m, refuse(ErrNotFound, "no mailbox %s", addr)
	}
	if err != nil {
		return m, fmt.Errorf("look up mailbox %s: %w", addr, err)
	}
	return m, nil
}

// MailboxByID finds an account by ID.
func (s *Store) MailboxByID(ctx context.Context, id int64) (Mailbox, error) {
	m, err := scanMailbox(s.db.QueryRowContext(ctx, "SELECT "+mailboxCols+" FROM mailboxes WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, refuse(ErrNotFound, "no mailbox %d", id)
	}
	if err != nil {
		return m, fmt.Errorf("look up mailbox %d: %w", id, err)
	}
	return m, nil
}

// Mailboxes lists the accounts of a domain, or of every domain if domain is "".
func (s *Store) Mailboxes(ctx context.Context, domain string) ([]Mailbox, error) {
	q := "SELECT " + mailboxCols + " FROM mailboxes ORDER BY address"
	var args []any
	if domain != "" {
		q = "SELECT " + mailboxCols + " FROM mailboxes WHERE domain_id=(SELECT id FROM domains WHERE name=?) ORDER BY address"
		args = append(args, NormalizeDomain(domain))
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list mailboxes: %w", err)
	}
	defer rows.Close()
	var out []Mailbox
	for rows.Next() {
		m, err := scanMailbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list mailboxes: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

const folderCols = "id, mailbox_id, name, special_use, subscribed, uidvalidity, uidnext, highestmodseq"

func scanFolder(sc interface{ Scan(...any) error }) (Folder, error) {
	var f Folder
	var sub int
	err := sc.Scan(&f.ID, &f.MailboxID, &f.Name, &f.SpecialUse, &sub, &f.UIDValidity, &f.UIDNext, &f.HighestModSeq)
	f.Subscribed = sub != 0
	return f, err
}

// Folders lists a mailbox's folders by name.
func (s *Store) Folders(ctx context.Context, mailboxID int64) ([]Folder, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+folderCols+" FROM folders WHERE mailbox_id=? ORDER BY name", mailboxID)
	if err != nil {
		return nil, fmt.Errorf("list folders: %w", err)
	}
	defer rows.Close()
	var out []Folder
	for rows.Next() {
		f, err := scanFolder(rows)
		if err != nil {
			return nil, fmt.Errorf("list folders: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// FolderByName finds a folder; INBOX is matched case-insensitively.
func (s *Store) FolderByName(ctx context.Context, mailboxID int64, name string) (Folder, error) {
	if strings.EqualFold(name, "INBOX") {
		name = "INBOX"
	}
	f, err := scanFolder(s.db.QueryRowContext(ctx, "SELECT "+folderCols+" FROM folders WHERE mailbox_id=? AND name=?", mailboxID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return f, refuse(ErrNotFound, "no folder %s", name)
	}
	if err != nil {
		return f, fmt.Errorf("look up folder %s: %w", name, err)
	}
	return f, nil
}

// FolderByID finds a folder by ID.
func (s *Store) FolderByID(ctx context.Context, id int64) (Folder, error) {
	f, err := scanFolder(s.db.QueryRowContext(ctx, "SELECT "+folderCols+" FROM folders WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return f, refuse(ErrNotFound, "no folder %d", id)
	}
	if err != nil {
		return f, fmt.Errorf("look up folder %d: %w", id, err)
	}
	return f, nil
}

// FolderStats counts a folder's messages, unseen messages and bytes.
type FolderStats struct {
	Messages int
	Unseen   int
	Deleted  int
	Size     int64
}

// Stats returns the FolderStats of a folder.
func (s *Store) Stats(ctx context.Context, folderID int64) (FolderStats, error) {
	var st FolderStats
	err := s.db.QueryRowContext(ctx, `SELECT count(*),
		coalesce(sum(CASE WHEN (' '||flags||' ') LIKE '% \Seen %' THEN 0 ELSE 1 END), 0),
		coalesce(sum(CASE WHEN (' '||flags||' ') LIKE '% \Deleted %' THEN 1 ELSE 0 END), 0),
		coalesce(sum(size), 0) FROM messages WHERE folder_id=?`, folderID).Scan(&st.Messages, &st.Unseen, &st.Deleted, &st.Size)
	if err != nil {
		return st, fmt.Errorf("folder stats %d: %w", folderID, err)
	}
	return st, nil
}

const messageCols = "id, folder_id, uid, sha256, size, internal_date, flags, modseq"

func scanMessage(sc interface{ Scan(...any) error }) (Message, error) {
	var m Message
	var date int64
	var flags string
	err := sc.Scan(&m.ID, &m.FolderID, &m.UID, &m.SHA256, &m.Size, &date, &flags, &m.ModSeq)
	m.InternalDate = time.Unix(date, 0).UTC()
	m.Flags = splitFlags(flags)
	return m, err
}

// Messages lists a folder's messages in UID order.
func (s *Store) Messages(ctx context.Context, folderID int64) ([]Message, error) {
	return s.queryMessages(ctx, "SELECT "+messageCols+" FROM messages WHERE folder_id=? ORDER BY uid", folderID)
}

// MessagesByUID returns the messages of a folder among uids, in UID order.
// UIDs that do not exist (any more) are left out.
func (s *Store) MessagesByUID(ctx context.Context, folderID int64, uids []uint32) ([]Message, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	list, _ := json.Marshal(uids)
	return s.queryMessages(ctx, "SELECT "+messageCols+` FROM messages WHERE folder_id=?
		AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid`, folderID, string(list))
}

// ChangedSince lists the messages of a folder whose modseq is above modseq.
func (s *Store) ChangedSince(ctx context.Context, folderID int64, modseq uint64) ([]Message, error) {
	return s.queryMessages(ctx, "SELECT "+messageCols+" FROM messages WHERE folder_id=? AND modseq>? ORDER BY uid", folderID, modseq)
}

func (s *Store) queryMessages(ctx context.Context, q string, args ...any) ([]Message, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Content returns the bytes stored under a SHA-256.
func (s *Store) Content(ctx context.Context, sha string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, "SELECT data FROM blobs WHERE sha256=?", sha).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no content %s", sha)
	}
	if err != nil {
		return nil, fmt.Errorf("read content %s: %w", sha, err)
	}
	return b, nil
}

// QueueItems lists the outbound queue, due first. With due non-zero, only
// the items whose next attempt is at or before it.
func (s *Store) QueueItems(ctx context.Context, due time.Time) ([]QueueItem, error) {
	q := "SELECT id, sender, recipients, sha256, size, created_at, next_attempt, attempts, last_error, require_tls FROM queue"
	var args []any
	if !due.IsZero() {
		q += " WHERE next_attempt<=?"
		args = append(args, due.Unix())
	}
	q += " ORDER BY next_attempt, id"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list queue: %w", err)
	}
	defer rows.Close()
	var out []QueueItem
	for rows.Next() {
		var it QueueItem
		var rcpts string
		var created, next int64
		if err := rows.Scan(&it.ID, &it.Sender, &rcpts, &it.SHA256, &it.Size, &created, &next, &it.Attempts, &it.LastError, &it.RequireTLS); err != nil {
			return nil, fmt.Errorf("list queue: %w", err)
		}
		if err := json.Unmarshal([]byte(rcpts), &it.Recipients); err != nil {
			return nil, fmt.Errorf("queue item %s: %w", it.ID, err)
		}
		it.CreatedAt = time.Unix(created, 0).UTC()
		it.NextAttempt = time.Unix(next, 0).UTC()
		out = append(out, it)
	}
	return out, rows.Err()
}

// KV reads a replicated key; a refusal with ErrNotFound if it is not set.
func (s *Store) KV(ctx context.Context, key string) ([]byte, error) {
	var b []byte
	err := s.db.QueryRowContext(ctx, "SELECT value FROM kv WHERE key=?", key).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "no key %s", key)
	}
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", key, err)
	}
	return b, nil
}

// KVKeys lists the keys under a prefix.
func (s *Store) KVKeys(ctx context.Context, prefix string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key", len(prefix), prefix)
	if err != nil {
		return nil, fmt.Errorf("list keys %s: %w", prefix, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
