// Package storage is Sigillo's state: the SQLite schema and its migrations,
// the typed commands that change it, and the read queries the front ends use.
//
// Every change goes through a Command, applied in one SQLite transaction by
// Apply (called by the raft FSM on every node, in log order). Commands are
// deterministic: anything random or time-dependent (IDs, timestamps, password
// hashes) is chosen by the proposer and carried in the command, while values
// derived from state (the next UID of a folder, modseqs) are computed in
// Apply from the state, which is the same on every node.
//
// The package knows nothing of raft or of mail protocols: it is not where
// replication, quorum or protocol syntax live.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // the pure-Go SQLite driver
)

// Store is one node's SQLite database.
type Store struct {
	db   *sql.DB
	path string

	// writeMu serialises Apply, Snapshot and Restore. Readers never take it:
	// SQLite's WAL gives them a consistent view while a write runs.
	writeMu sync.Mutex
	// stmts are the statements Apply's commands run, prepared once.
	stmts stmtCache

	hub hub
	// restored tells RunTextIndexer that Restore replaced the state.
	restored chan struct{}
	// textWake tells RunTextIndexer that a delivery left content to index.
	textWake chan struct{}
}

// Open opens (creating if needed) the database at path and brings its schema
// up to date.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, path: path, hub: newHub(), restored: make(chan struct{}, 1), textWake: make(chan struct{}, 1)}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.close()
	return s.db.Close()
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// AppliedIndex is the raft log index of the last command applied.
func (s *Store) AppliedIndex(ctx context.Context) (uint64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key='applied_index'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("applied index: %w", err)
	}
	return uint64(v), nil
}

// View is the database frozen at one moment: a read transaction held open
// on its own connection. WAL mode keeps what it sees fixed while commands
// go on being applied, so a snapshot is copied without stopping writes.
type View struct {
	conn *sql.Conn
}

// Freeze opens a View of the state as it is now. The caller must Close it.
func (s *Store) Freeze(ctx context.Context) (*View, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("freeze: %w", err)
	}
	// A deferred BEGIN takes its read snapshot at the first read.
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("freeze: %w", err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM meta").Scan(&n); err != nil {
		conn.ExecContext(context.Background(), "ROLLBACK")
		conn.Close()
		return nil, fmt.Errorf("freeze: %w", err)
	}
	return &View{conn: conn}, nil
}

// backuper is the SQLite online backup API of modernc.org/sqlite's
// connections.
type backuper interface {
	NewBackup(dst string) (*sqlite.Backup, error)
}

// CopyTo writes the view to a new database file at path with SQLite's
// online backup, a few pages at a time.
func (v *View) CopyTo(ctx context.Context, path string) error {
	return copyConn(ctx, v.conn, path)
}

// copyConn writes what conn sees to a new database file at path with
// SQLite's online backup, a few pages at a time.
func copyConn(ctx context.Context, conn *sql.Conn, path string) error {
	err := conn.Raw(func(dc any) error {
		b, ok := dc.(backuper)
		if !ok {
			return errors.New("the SQLite driver has no backup API")
		}
		bk, err := b.NewBackup(path)
		if err != nil {
			return err
		}
		for {
			if err := ctx.Err(); err != nil {
				bk.Finish()
				return err
			}
			more, err := bk.Step(1024)
			if err != nil {
				bk.Finish()
				return err
			}
			if !more {
				return bk.Finish()
			}
		}
	})
	if err != nil {
		return fmt.Errorf("copy database to %s: %w", path, err)
	}
	return nil
}

// AppliedIndex is the raft log index of the last command the view holds.
func (v *View) AppliedIndex(ctx context.Context) (uint64, error) {
	var n int64
	err := v.conn.QueryRowContext(ctx, "SELECT value FROM meta WHERE key='applied_index'").Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("applied index: %w", err)
	}
	return uint64(n), nil
}

// Close ends the view.
func (v *View) Close() error {
	v.conn.ExecContext(context.Background(), "ROLLBACK")
	return v.conn.Close()
}

// Snapshot writes a consistent copy of the database to path (which must
// not exist).
func (s *Store) Snapshot(ctx context.Context, path string) error {
	v, err := s.Freeze(ctx)
	if err != nil {
		return err
	}
	defer v.Close()
	return v.CopyTo(ctx, path)
}

// Restore replaces the whole state with the database file at path (made by
// Snapshot, possibly by an older version: it is migrated first). The swap is
// one transaction, so readers see either the old or the new state. Every
// table of the schema is copied (stateTables reads the list from it).
func (s *Store) Restore(ctx context.Context, path string) error {
	snap, err := openDB(path)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	snap.Close()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "ATTACH DATABASE ? AS snap", path); err != nil {
		return fmt.Errorf("restore: attach: %w", err)
	}
	defer conn.ExecContext(context.Background(), "DETACH DATABASE snap")
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer tx.Rollback()
	// Foreign keys are checked at the commit, on the whole new state.
	if _, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	tables, err := stateTables(ctx, tx)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for i := len(tables) - 1; i >= 0; i-- {
		if _, err := tx.ExecContext(ctx, "DELETE FROM main."+quoteIdent(tables[i])); err != nil {
			return fmt.Errorf("restore: clear %s: %w", tables[i], err)
		}
	}
	for _, t := range tables {
		q := quoteIdent(t)
		// Cleared again: copying an AUTOINCREMENT table fills
		// sqlite_sequence, which then takes the snapshot's counters.
		if _, err := tx.ExecContext(ctx, "DELETE FROM main."+q); err != nil {
			return fmt.Errorf("restore: clear %s: %w", t, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO main."+q+" SELECT * FROM snap."+q); err != nil {
			return fmt.Errorf("restore: copy %s: %w", t, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("restore: commit: %w", err)
	}
	// FTS5 keeps what it read of its index per connection, and this one
	// rewrote the index's tables under it: it is closed rather than
	// reused (other connections see the change and read afresh).
	conn.Raw(func(any) error { return driver.ErrBadConn })
	s.hub.publishAll()
	select {
	case s.restored <- struct{}{}:
	default:
	}
	return nil
}

// Error is a deterministic refusal of a command: the same command on the
// same state fails the same way on every node. Front ends map Code to their
// protocol's permanent errors; any other error from Apply is temporary.
type Error struct {
	Code ErrorCode
	Msg  string
}

// ErrorCode classifies an Error.
type ErrorCode string

// The refusals a command can meet.
const (
	ErrNotFound  ErrorCode = "not-found"
	ErrExists    ErrorCode = "exists"
	ErrInvalid   ErrorCode = "invalid"
	ErrOverQuota ErrorCode = "over-quota"
	ErrNotEmpty  ErrorCode = "not-empty"
	// ErrConflict: the state the command expected is gone (a PEC notice
	// that is no longer due).
	ErrConflict ErrorCode = "conflict"
)

func (e *Error) Error() string { return e.Msg }

func refuse(code ErrorCode, format string, args ...any) error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is a refusal with the given code.
func IsCode(err error, code ErrorCode) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Domain is a hosted mail domain.
type Domain struct {
	ID        int64
	Name      string
	CreatedAt time.Time
	Mailboxes int
	PEC       bool
}

// Mailbox is a user's account: an address with a password and folders.
type Mailbox struct {
	ID           int64
	DomainID     int64
	Address      string
	PasswordHash string
	QuotaBytes   int64
	UsedBytes    int64
	CreatedAt    time.Time
}

// Folder is an IMAP mailbox (we say folder, since mailbox is the account).
type Folder struct {
	ID            int64
	MailboxID     int64
	Name          string
	SpecialUse    string
	Subscribed    bool
	UIDValidity   uint32
	UIDNext       uint32
	HighestModSeq uint64
}

// Message is one message in one folder. Its content is shared by SHA256.
type Message struct {
	ID           int64
	FolderID     int64
	UID          uint32
	SHA256       string
	Size         int64
	InternalDate time.Time
	Flags        []string
	ModSeq       uint64
}

// QueueItem is one message waiting for remote delivery.
type QueueItem struct {
	ID          string
	Sender      string
	Recipients  []string
	SHA256      string
	Size        int64
	CreatedAt   time.Time
	NextAttempt time.Time
	Attempts    int
	LastError   string
	RequireTLS  bool // PEC: only over TLS
}

// NormalizeDomain lowercases a domain name and strips a trailing dot.
func NormalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// NormalizeAddress lowercases the domain part of an address; the local part
// is matched case-insensitively too, as every mainstream server does.
func NormalizeAddress(a string) string {
	return strings.ToLower(strings.TrimSpace(a))
}

// SplitAddress returns the local part and the domain of an address.
func SplitAddress(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}
