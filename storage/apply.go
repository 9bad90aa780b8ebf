package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Command is one typed change of state. Its exported fields are the whole
// input: Apply must not read clocks, random sources or the environment.
type Command interface {
	// Op names the command in the log; it never changes once shipped.
	Op() string
	apply(tx *txn) (any, error)
}

// payloader is a command that carries large opaque payloads (message
// contents) outside its JSON body, so the log does not hold them
// base64-encoded. payload gives them in order (nothing is copied); Decode
// hands the concatenation back to setPayload.
type payloader interface {
	payload() [][]byte
	setPayload([]byte)
}

// Source is message content held outside memory: a spool file. A Deliver
// with a Tail is encoded by reading it straight into the log entry.
type Source interface {
	io.ReaderAt
	Size() int64
}

// tailer is a payloader whose payload ends with content still on disk.
type tailer interface {
	payloadTail() Source
}

// CommandVersion is the format of the commands this binary writes, and the
// newest it reads. Raise it when a command gains a field or a meaning, or a
// new op comes, that an older binary would get wrong or not know: a node
// refuses to apply an entry of a newer version, or of an op it does not
// know, and stops there (UnknownCommandError) rather than skip it or apply
// it wrongly. So an upgrade goes one node at a time, followers first; an
// older node that meets a newer command waits, not applying, until it is
// upgraded, and then applies from that entry on.
const CommandVersion = 1

// versionMark begins a versioned entry. An entry written before versions
// existed (version 0) begins with uvarint(len op), and every op is shorter
// than 127 bytes, so its first byte is below 0x7f: never this one.
const versionMark = 0xff

// Encode serialises a command for the raft log:
//
//	0xff uvarint(CommandVersion) uvarint(len op) op uvarint(len json) json payload
//
// (an unversioned entry, version 0, is the same without its first two
// fields; Decode reads both). The result is one buffer of exactly its
// length: a message's content is copied into it once, from memory or from
// its Source.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Op(), err)
	}
	var parts [][]byte
	if pl, ok := c.(payloader); ok {
		parts = pl.payload()
	}
	var tail Source
	if t, ok := c.(tailer); ok {
		tail = t.payloadTail()
	}
	op := c.Op()
	n := 1 + uvarintLen(CommandVersion) + uvarintLen(uint64(len(op))) + len(op) + uvarintLen(uint64(len(body))) + len(body)
	for _, p := range parts {
		n += len(p)
	}
	var tailSize int
	if tail != nil {
		size := tail.Size()
		if size < 0 || size > int64(maxEntry-n) {
			return nil, fmt.Errorf("encode %s: content of %d bytes is too large", op, size)
		}
		tailSize = int(size)
	}
	buf := make([]byte, 0, n+tailSize)
	buf = append(buf, versionMark)
	buf = binary.AppendUvarint(buf, CommandVersion)
	buf = binary.AppendUvarint(buf, uint64(len(op)))
	buf = append(buf, op...)
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	buf = append(buf, body...)
	for _, p := range parts {
		buf = append(buf, p...)
	}
	if tail != nil {
		buf = buf[:n+tailSize]
		if k, err := tail.ReadAt(buf[n:], 0); k != tailSize && err != nil {
			return nil, fmt.Errorf("encode %s: read the content: %w", op, err)
		} else if k != tailSize {
			return nil, fmt.Errorf("encode %s: read %d bytes of content, want %d", op, k, tailSize)
		}
	}
	return buf, nil
}

// maxEntry bounds an encoded command (a raft log entry).
const maxEntry = 1 << 31

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// ErrUnknownCommand is what UnknownCommandError matches with errors.Is.
var ErrUnknownCommand = errors.New("a command this version of Sigillo does not know")

// UnknownCommandError is an entry that a newer binary wrote: an op this
// binary does not know, or a format newer than CommandVersion. It must be
// neither skipped nor applied: the node stops applying there until it runs
// a binary that knows it.
type UnknownCommandError struct {
	Index   uint64 // the entry's log index (0 from Decode)
	Op      string // "" if the newer format hides it
	Version uint64
}

func (e *UnknownCommandError) Error() string {
	at := ""
	if e.Index != 0 {
		at = fmt.Sprintf(" at log index %d", e.Index)
	}
	if e.Version > CommandVersion {
		return fmt.Sprintf("command %q%s is of format %d, newer than this version of Sigillo knows (%d): upgrade this node",
			e.Op, at, e.Version, CommandVersion)
	}
	return fmt.Sprintf("command %q%s (format %d) is not known to this version of Sigillo: upgrade this node", e.Op, at, e.Version)
}

// Is makes errors.Is(err, ErrUnknownCommand) hold.
func (e *UnknownCommandError) Is(target error) bool { return target == ErrUnknownCommand }

// Decode parses what Encode wrote, in any format up to CommandVersion. An
// entry of a newer format or of an op this binary does not know gives an
// *UnknownCommandError; a damaged one, another error.
func Decode(b []byte) (Command, error) {
	var version uint64
	if len(b) > 0 && b[0] == versionMark {
		v, k := binary.Uvarint(b[1:])
		if k <= 0 || v == 0 {
			return nil, errors.New("decode command: bad format version")
		}
		version, b = v, b[1+k:]
	}
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		if version > CommandVersion {
			return nil, &UnknownCommandError{Version: version}
		}
		return nil, errors.New("decode command: bad op length")
	}
	op := string(b[k : k+int(n)])
	if version > CommandVersion {
		return nil, &UnknownCommandError{Op: op, Version: version}
	}
	b = b[k+int(n):]
	c := newCommand(op)
	if c == nil {
		return nil, &UnknownCommandError{Op: op, Version: version}
	}
	n, k = binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, fmt.Errorf("decode %s: bad body length", op)
	}
	body, rest := b[k:k+int(n)], b[k+int(n):]
	// A field this binary does not know was added by a newer one: applying
	// the command without it would apply it wrong (a Deliver's dedupe key,
	// say), so it is a command this version does not know.
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return nil, &UnknownCommandError{Op: op + " with field " + field, Version: version}
		}
		return nil, fmt.Errorf("decode %s: %w", op, err)
	}
	if pl, ok := c.(payloader); ok {
		pl.setPayload(rest)
	} else if len(rest) > 0 {
		return nil, fmt.Errorf("decode %s: unexpected payload", op)
	}
	return c, nil
}

// Entry is one encoded command at a raft log index.
type Entry struct {
	Index uint64
	Data  []byte
}

// Result is what applying one entry gave: a command-specific value, or the
// command's refusal.
type Result struct {
	Value any
	Err   error
}

// ErrTransient wraps failures of the database itself (disk full, I/O
// error): nothing of the batch was committed and the same batch must be
// applied again later, in order, before anything else.
var ErrTransient = errors.New("storage temporarily unavailable")

// Apply applies a batch of log entries in one SQLite transaction, each in
// its own savepoint so that one command's refusal leaves the others intact.
// Entries at or below the applied index (already in the database, replayed
// after a restart) are skipped and give a nil Result. A damaged entry is
// refused (ErrInvalid) like a command that fails its checks.
//
// Apply returns an error in two cases. One wraps ErrTransient: nothing was
// committed, and the same batch must be applied again. The other is an
// *UnknownCommandError: the entries before that one were applied and
// committed (their results are in place), and neither it nor any after it
// was, nor the applied index moved past them; the caller must not go on
// applying the log (see CommandVersion).
func (s *Store) Apply(ctx context.Context, entries []Entry) ([]Result, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()

	applied, err := s.AppliedIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTransient, err)
	}
	results := make([]Result, len(entries))
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: begin: %w", ErrTransient, err)
	}
	defer sqlTx.Rollback()
	tx := &txn{ctx: ctx, tx: sqlTx, db: s.db, stmts: &s.stmts}
	last := applied
	var unknown *UnknownCommandError
	for i, e := range entries {
		if e.Index != 0 && e.Index <= applied {
			continue
		}
		cmd, err := Decode(e.Data)
		if errors.As(err, &unknown) {
			unknown.Index = e.Index
			break
		}
		if e.Index > last {
			last = e.Index
		}
		if err != nil {
			results[i].Err = refuse(ErrInvalid, "%v", err)
			continue
		}
		if _, err := sqlTx.ExecContext(ctx, "SAVEPOINT cmd"); err != nil {
			return nil, fmt.Errorf("%w: savepoint: %w", ErrTransient, err)
		}
		mark := len(tx.changes)
		v, err := cmd.apply(tx)
		if err != nil {
			if isTransient(err) {
				return nil, fmt.Errorf("%w: %s: %w", ErrTransient, cmd.Op(), err)
			}
			if _, rerr := sqlTx.ExecContext(ctx, "ROLLBACK TO cmd"); rerr != nil {
				return nil, fmt.Errorf("%w: rollback to savepoint: %w", ErrTransient, rerr)
			}
			tx.changes = tx.changes[:mark]
			var refusal *Error
			if !errors.As(err, &refusal) {
				err = &Error{Code: ErrInvalid, Msg: fmt.Sprintf("%s: %v", cmd.Op(), err)}
			}
			results[i].Err = err
		} else {
			results[i].Value = v
		}
		if _, err := sqlTx.ExecContext(ctx, "RELEASE cmd"); err != nil {
			return nil, fmt.Errorf("%w: release savepoint: %w", ErrTransient, err)
		}
	}
	if last != applied {
		if _, err := sqlTx.ExecContext(ctx,
			"INSERT INTO meta(key, value) VALUES('applied_index', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
			int64(last)); err != nil {
			return nil, fmt.Errorf("%w: applied index: %w", ErrTransient, err)
		}
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, fmt.Errorf("%w: commit: %w", ErrTransient, err)
	}
	s.hub.publish(tx.changes)
	if tx.textPending {
		s.wakeIndexer()
	}
	if unknown != nil {
		return results, unknown
	}
	return results, nil
}

// isTransient tells database failures that depend on the machine (full
// disk, I/O error, lock contention) from deterministic ones.
func isTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_BUSY,
		sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CORRUPT,
		sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_PROTOCOL:
		return true
	}
	return false
}

// txn is the state a command applies to.
type txn struct {
	ctx     context.Context
	tx      *sql.Tx
	db      *sql.DB // of tx, which stmts prepares on
	stmts   *stmtCache
	changes []Change
	// textPending: content was left for the text indexer (fts.go).
	textPending bool
}

// exec and row run q as prepared once per connection (stmtCache): with
// modernc's SQLite, parsing and planning a statement costs about as much
// as running it, and a delivery runs a dozen. The transaction closes its
// handles on the prepared statements at its end.
func (t *txn) exec(q string, args ...any) (sql.Result, error) {
	if t.stmts == nil {
		return t.tx.ExecContext(t.ctx, q, args...)
	}
	st, err := t.stmts.get(t.ctx, t.db, q)
	if err != nil {
		return nil, err
	}
	return t.tx.StmtContext(t.ctx, st).ExecContext(t.ctx, args...)
}

func (t *txn) row(q string, args ...any) *sql.Row {
	if t.stmts == nil {
		return t.tx.QueryRowContext(t.ctx, q, args...)
	}
	st, err := t.stmts.get(t.ctx, t.db, q)
	if err != nil {
		return t.tx.QueryRowContext(t.ctx, q, args...) // gives the same error
	}
	return t.tx.StmtContext(t.ctx, st).QueryRowContext(t.ctx, args...)
}

// stmtCache holds the statements commands run (txn.exec, txn.row),
// prepared on the database; database/sql prepares each again on every
// connection it runs on, once. They are a fixed set of constant strings,
// so it does not grow past them.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (c *stmtCache) get(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok {
		return st, nil
	}
	st, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[q] = st
	return st, nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

func (t *txn) changed(mailboxID, folderID int64) {
	t.changes = append(t.changes, Change{MailboxID: mailboxID, FolderID: folderID})
}
