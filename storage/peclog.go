package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"sigillo/storage/peclog"
)

// pecLogSchema is migration 3: the PEC legal log (PEC.md §7), one row per
// entry of the hash chain of storage/peclog, and the signed chain heads.
// related and recipients are JSON arrays of strings. Times are Unix
// milliseconds, the precision the chain hashes.
const pecLogSchema = `
CREATE TABLE pec_log (
	seq        INTEGER PRIMARY KEY,
	time_ms    INTEGER NOT NULL,
	event      TEXT NOT NULL,
	msgid      TEXT NOT NULL DEFAULT '',
	related    TEXT NOT NULL DEFAULT '[]',
	sender     TEXT NOT NULL DEFAULT '',
	recipients TEXT NOT NULL DEFAULT '[]',
	subject    TEXT NOT NULL DEFAULT '',
	gestore    TEXT NOT NULL DEFAULT '',
	detail     TEXT NOT NULL DEFAULT '',
	prev_hash  BLOB NOT NULL,
	hash       BLOB NOT NULL
);
CREATE INDEX pec_log_msgid ON pec_log(msgid);
CREATE INDEX pec_log_sender ON pec_log(sender COLLATE NOCASE);
CREATE INDEX pec_log_time ON pec_log(time_ms);
CREATE TABLE pec_log_heads (
	seq         INTEGER PRIMARY KEY,
	hash        BLOB NOT NULL,
	time_ms     INTEGER NOT NULL,
	signature   BLOB NOT NULL,
	certificate BLOB NOT NULL
);
`

// AppendLog adds entries to the legal log, in order, after the newest
// stored one. Only the content fields of each entry are taken: Seq,
// PrevHash and Hash are computed here (peclog.Next), and Time is kept to
// the millisecond. The value is the entries as stored ([]peclog.Entry).
type AppendLog struct {
	Entries []peclog.Entry `json:"entries"`
}

// Op implements Command.
func (*AppendLog) Op() string { return "pec-log-append" }

func (c *AppendLog) apply(t *txn) (any, error) {
	if len(c.Entries) == 0 {
		return nil, refuse(ErrInvalid, "append to the legal log: no entries")
	}
	return t.appendLog(c.Entries)
}

// appendLog chains entries after the newest stored entry and stores them;
// it returns them as stored. An entry without a time or an event is
// refused, and with it the whole command.
func (t *txn) appendLog(entries []peclog.Entry) ([]peclog.Entry, error) {
	prev, err := scanLogEntry(t.row("SELECT " + logCols + " FROM pec_log ORDER BY seq DESC LIMIT 1"))
	ok := err == nil
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("legal log: newest entry: %w", err)
	}
	out := make([]peclog.Entry, 0, len(entries))
	for i, e := range entries {
		if err := checkLogEntry(e); err != nil {
			return nil, refuse(ErrInvalid, "legal log entry %d of %d: %v", i+1, len(entries), err)
		}
		var p *peclog.Entry
		if ok {
			p = &prev
		}
		e = peclog.Next(p, e)
		related, err := json.Marshal(nonNil(e.RelatedIDs))
		if err != nil {
			return nil, fmt.Errorf("legal log entry %d: %w", e.Seq, err)
		}
		rcpts, err := json.Marshal(nonNil(e.Recipients))
		if err != nil {
			return nil, fmt.Errorf("legal log entry %d: %w", e.Seq, err)
		}
		if _, err := t.exec(`INSERT INTO pec_log(seq, time_ms, event, msgid, related, sender, recipients, subject, gestore, detail, prev_hash, hash)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			int64(e.Seq), e.Time.UnixMilli(), string(e.Event), e.MsgID, string(related), e.Sender, string(rcpts),
			e.Subject, e.Gestore, e.Detail, e.PrevHash, e.Hash); err != nil {
			return nil, fmt.Errorf("legal log: store entry %d: %w", e.Seq, err)
		}
		prev, ok = e, true
		out = append(out, e)
	}
	return out, nil
}

// checkLogEntry refuses what the log cannot store faithfully or what makes
// no sense as an event. Lists are stored as JSON, which would replace
// invalid UTF-8 and so change what was hashed.
func checkLogEntry(e peclog.Entry) error {
	if e.Time.IsZero() {
		return errors.New("no time")
	}
	if e.Event == "" {
		return errors.New("no event")
	}
	for _, l := range [][]string{e.RelatedIDs, e.Recipients} {
		for _, s := range l {
			if !utf8.ValidString(s) {
				return fmt.Errorf("%q is not valid UTF-8", s)
			}
		}
	}
	return nil
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// PutLogHead stores a signed chain head (made by peclog.SignHead). It is
// refused unless it covers a stored entry with that entry's hash, its
// signature verifies against the certificate it carries, and it comes
// after the newest stored head (a greater Seq, a time not earlier), so
// that the stored heads always verify.
type PutLogHead struct {
	Head peclog.Head `json:"head"`
}

// Op implements Command.
func (*PutLogHead) Op() string { return "pec-log-head" }

func (c *PutLogHead) apply(t *txn) (any, error) {
	h := c.Head
	if h.Seq == 0 || h.Seq > 1<<62 {
		return nil, refuse(ErrInvalid, "signed head: Seq %d out of range", h.Seq)
	}
	var hash []byte
	err := t.row("SELECT hash FROM pec_log WHERE seq=?", int64(h.Seq)).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, refuse(ErrNotFound, "signed head: no legal log entry %d", h.Seq)
	}
	if err != nil {
		return nil, fmt.Errorf("signed head: entry %d: %w", h.Seq, err)
	}
	if !bytes.Equal(hash, h.Hash) {
		return nil, refuse(ErrInvalid, "signed head: it does not match the hash of entry %d", h.Seq)
	}
	var lastSeq, lastMs int64
	err = t.row("SELECT seq, time_ms FROM pec_log_heads ORDER BY seq DESC LIMIT 1").Scan(&lastSeq, &lastMs)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("signed head: newest head: %w", err)
	case int64(h.Seq) == lastSeq:
		return nil, refuse(ErrExists, "signed head: entry %d is already covered by a signed head", h.Seq)
	case int64(h.Seq) < lastSeq:
		return nil, refuse(ErrInvalid, "signed head: entry %d is before the newest signed head (entry %d)", h.Seq, lastSeq)
	case h.Time.UnixMilli() < lastMs:
		return nil, refuse(ErrInvalid, "signed head: signed at %s, before the newest signed head (%s)",
			h.Time.UTC().Format(time.RFC3339), time.UnixMilli(lastMs).UTC().Format(time.RFC3339))
	}
	if err := peclog.VerifyHead(h, nil); err != nil {
		return nil, refuse(ErrInvalid, "signed head for entry %d: %v", h.Seq, err)
	}
	if _, err := t.exec("INSERT INTO pec_log_heads(seq, hash, time_ms, signature, certificate) VALUES(?, ?, ?, ?, ?)",
		int64(h.Seq), h.Hash, h.Time.UnixMilli(), h.Signature, h.Certificate); err != nil {
		return nil, fmt.Errorf("signed head %d: %w", h.Seq, err)
	}
	return nil, nil
}

// PurgeLog drops the legal log entries older than Before (the 30-month
// retention: Before is peclog.RetentionCutoff of the proposer's clock) as
// far as peclog.Purge allows: up to a signed head, which stays as the anchor
// of the first entry kept (peclog.KeepHeads), so the rest still verifies.
// Older heads go too. The value is a PurgeResult.
//
// One command looks at no more than purgeScanMax entries from the start of
// the log, so it never loads the whole log: a backlog takes several.
type PurgeLog struct {
	Before int64 `json:"before"` // Unix milliseconds
}

// PurgeResult is what a PurgeLog removed: the log now starts at KeepFrom
// (0: the log is empty).
type PurgeResult struct {
	Removed  int64
	KeepFrom uint64
}

// purgeScanMax bounds the entries one PurgeLog reads. It is part of what
// the command means (every node must purge the same entries when replaying
// it): change it only together with a new op.
const purgeScanMax = 100_000

// Op implements Command.
func (*PurgeLog) Op() string { return "pec-log-purge" }

func (c *PurgeLog) apply(t *txn) (any, error) {
	before := time.UnixMilli(c.Before).UTC()
	rows, err := t.tx.QueryContext(t.ctx, "SELECT "+logCols+" FROM pec_log ORDER BY seq LIMIT ?", purgeScanMax)
	if err != nil {
		return nil, fmt.Errorf("purge legal log: %w", err)
	}
	// The entries older than before, and the first one that is not (it may
	// be the first one kept): Purge never looks further.
	var entries []peclog.Entry
	var newest time.Time
	for rows.Next() {
		e, err := scanLogEntry(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("purge legal log: %w", err)
		}
		entries = append(entries, e)
		if e.Time.After(newest) {
			newest = e.Time
		}
		if !newest.Before(before) {
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("purge legal log: %w", err)
	}
	if len(entries) == 0 {
		return PurgeResult{}, nil
	}
	first, last := entries[0].Seq, entries[len(entries)-1].Seq
	heads, err := queryHeads(t.ctx, t.tx, "WHERE seq>=? AND seq<=?", int64(first), int64(last))
	if err != nil {
		return nil, fmt.Errorf("purge legal log: %w", err)
	}
	keep := peclog.Purge(entries, heads, before)
	res := PurgeResult{KeepFrom: keep}
	if keep <= first {
		return res, nil
	}
	r, err := t.exec("DELETE FROM pec_log WHERE seq<?", int64(keep))
	if err != nil {
		return nil, fmt.Errorf("purge legal log: %w", err)
	}
	if res.Removed, err = r.RowsAffected(); err != nil {
		return nil, fmt.Errorf("purge legal log: %w", err)
	}
	if _, err := t.exec("DELETE FROM pec_log_heads WHERE seq<?", int64(keep-1)); err != nil {
		return nil, fmt.Errorf("purge legal log heads: %w", err)
	}
	return res, nil
}

const logCols = "seq, time_ms, event, msgid, related, sender, recipients, subject, gestore, detail, prev_hash, hash"

func scanLogEntry(sc interface{ Scan(...any) error }) (peclog.Entry, error) {
	var e peclog.Entry
	var seq, ms int64
	var event, related, rcpts string
	if err := sc.Scan(&seq, &ms, &event, &e.MsgID, &related, &e.Sender, &rcpts, &e.Subject, &e.Gestore, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
		return e, err
	}
	e.Seq, e.Time, e.Event = uint64(seq), time.UnixMilli(ms).UTC(), peclog.Event(event)
	// A list that no longer parses is kept as its raw text, so that the
	// entry fails verification instead of stopping it.
	if err := json.Unmarshal([]byte(related), &e.RelatedIDs); err != nil {
		e.RelatedIDs = []string{related}
	}
	if err := json.Unmarshal([]byte(rcpts), &e.Recipients); err != nil {
		e.Recipients = []string{rcpts}
	}
	return e, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryHeads(ctx context.Context, q querier, where string, args ...any) ([]peclog.Head, error) {
	rows, err := q.QueryContext(ctx, "SELECT seq, hash, time_ms, signature, certificate FROM pec_log_heads "+where+" ORDER BY seq", args...)
	if err != nil {
		return nil, fmt.Errorf("signed heads: %w", err)
	}
	defer rows.Close()
	var out []peclog.Head
	for rows.Next() {
		var h peclog.Head
		var seq, ms int64
		if err := rows.Scan(&seq, &h.Hash, &ms, &h.Signature, &h.Certificate); err != nil {
			return nil, fmt.Errorf("signed heads: %w", err)
		}
		h.Seq, h.Time = uint64(seq), time.UnixMilli(ms).UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("signed heads: %w", err)
	}
	return out, nil
}

// LogFilter selects legal log entries; zero fields select everything.
type LogFilter struct {
	// MsgID matches the entry's msgid or any of its related ids, with or
	// without the angle brackets of a Message-ID.
	MsgID string
	// Sender matches the sender, ignoring ASCII case.
	Sender string
	// Since and Until bound the entry's time: Since <= time < Until.
	Since, Until time.Time
	// Limit caps the number of entries (the oldest first); 0: no cap.
	Limit int
}

// LogEntries returns the legal log entries f selects, in log order. A
// search by MsgID also reads the related ids of every entry in the time
// range, which an index does not serve.
func (s *Store) LogEntries(ctx context.Context, f LogFilter) ([]peclog.Entry, error) {
	var where []string
	var args []any
	if id := strings.TrimSpace(f.MsgID); id != "" {
		bare := strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">")
		ids := []any{bare, "<" + bare + ">"}
		where = append(where, "(msgid IN (?, ?) OR EXISTS (SELECT 1 FROM json_each(pec_log.related) WHERE json_each.value IN (?, ?)))")
		args = append(args, ids...)
		args = append(args, ids...)
	}
	if f.Sender != "" {
		where = append(where, "sender = ? COLLATE NOCASE")
		args = append(args, strings.TrimSpace(f.Sender))
	}
	if !f.Since.IsZero() {
		where = append(where, "time_ms >= ?")
		args = append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where = append(where, "time_ms < ?")
		args = append(args, f.Until.UnixMilli())
	}
	q := "SELECT " + logCols + " FROM pec_log"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq"
	if f.Limit > 0 {
		q += " LIMIT ?"
		args = append(args, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("search legal log: %w", err)
	}
	defer rows.Close()
	var out []peclog.Entry
	for rows.Next() {
		e, err := scanLogEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("search legal log: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search legal log: %w", err)
	}
	return out, nil
}

// LogEach calls fn with every legal log entry, in Seq order, reading them
// one at a time from one consistent view of the database. It stops at
// fn's first error and returns it.
func (s *Store) LogEach(ctx context.Context, fn func(peclog.Entry) error) error {
	rows, err := s.db.QueryContext(ctx, "SELECT "+logCols+" FROM pec_log ORDER BY seq")
	if err != nil {
		return fmt.Errorf("read legal log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanLogEntry(rows)
		if err != nil {
			return fmt.Errorf("read legal log: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read legal log: %w", err)
	}
	return nil
}

// LogHeads returns the signed chain heads, in signing order.
func (s *Store) LogHeads(ctx context.Context) ([]peclog.Head, error) {
	return queryHeads(ctx, s.db, "")
}

// LogLast returns the newest legal log entry; false if the log is empty.
func (s *Store) LogLast(ctx context.Context) (peclog.Entry, bool, error) {
	e, err := scanLogEntry(s.db.QueryRowContext(ctx, "SELECT "+logCols+" FROM pec_log ORDER BY seq DESC LIMIT 1"))
	if errors.Is(err, sql.ErrNoRows) {
		return peclog.Entry{}, false, nil
	}
	if err != nil {
		return peclog.Entry{}, false, fmt.Errorf("newest legal log entry: %w", err)
	}
	return e, true, nil
}

// OpenReadOnly opens the database at path for reading only, as it is: it
// is neither created nor migrated, and commands cannot be applied to it.
// It is for inspecting the data of a server that is not running (`sigillo
// log verify` without a server); a running server may go on writing
// meanwhile.
func OpenReadOnly(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open %s read-only: %w", path, err)
	}
	dsn := "file:" + path + "?mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s read-only: %w", path, err)
	}
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s read-only: %w", path, err)
	}
	if version < len(migrations) {
		db.Close()
		return nil, fmt.Errorf("open %s read-only: its schema (version %d) is older than this program's (%d): start this version's server on it once to migrate it",
			path, version, len(migrations))
	}
	return &Store{db: db, path: path, hub: newHub()}, nil
}
