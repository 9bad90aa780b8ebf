package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"sigillo/storage/mailtext"
)

// The full-text index of message content, for IMAP SEARCH BODY and TEXT.
//
// blob_text holds the searchable text of each content blob that a message
// uses (storage/mailtext: decoded text parts, part headers, the header for
// TEXT), once per SHA-256 like the content itself, cut at mailtext.Index()
// limits (complete = 0 then). blob_fts indexes it with FTS5's trigram
// tokenizer (SQLite ≥ 3.34; modernc.org/sqlite has 3.54): a phrase query of
// trigrams is a case-insensitive substring match, which is what RFC 9051
// asks of BODY and TEXT ("contains the specified string"), so the index
// answers exactly, without a second check of the candidates. Patterns
// shorter than three characters have no trigram: they are matched by
// reading the stored text of the folder's messages.
//
// The text is derived data: Deliver's apply only records new content in
// blob_text_pending, and the store's indexer (RunTextIndexer, on every
// node) extracts and indexes it after the commit, in batches, once
// deliveries pause (or too many wait): FTS5 flushes and merges its segments
// at every statement, which in the serialised apply cut the rate of
// delivery by two thirds. The extraction is a pure function of
// the content, so every node indexes the same. Until a content is indexed,
// TextUncertain lists its messages and a search reads them itself, so a
// search never misses a message delivered a moment ago. Releasing the last
// reference to a blob drops its text; RunTextIndexer also fills in the text
// of content stored before the index existed. Nothing in any command's
// result depends on it.
//
// Cost: the trigram index takes about twice the text it indexes, and the
// text itself is stored (blob_text), at most mailtext.IndexHeaderBytes +
// mailtext.IndexBodyBytes per content. A look-up costs in proportion to the
// contents matching in the whole store, not in the searched folder.
const ftsSchema = `
CREATE TABLE blob_text (
	id       INTEGER PRIMARY KEY,
	sha256   TEXT NOT NULL UNIQUE,
	header   TEXT NOT NULL,
	body     TEXT NOT NULL,
	complete INTEGER NOT NULL
);
CREATE INDEX blob_text_cut ON blob_text(sha256) WHERE complete = 0;
CREATE INDEX blob_text_id ON blob_text(id, sha256);
CREATE VIRTUAL TABLE blob_fts USING fts5(header, body, content='blob_text', content_rowid='id', tokenize='trigram');
CREATE INDEX messages_sha ON messages(sha256, folder_id, uid);
`

// textIndexedKey in meta says that every message's content has its text:
// set by RunTextIndexer once it found nothing left to do. Without it,
// searches also look for messages that have none.
const textIndexedKey = "text_indexed"

// textPendingSchema lists the contents whose text the indexer has not
// made yet (migration 10).
const textPendingSchema = `CREATE TABLE blob_text_pending (sha256 TEXT PRIMARY KEY) WITHOUT ROWID;`

// pendText records that content sha needs its text, unless it has it.
func (t *txn) pendText(sha string) error {
	if _, err := t.exec(`INSERT OR IGNORE INTO blob_text_pending(sha256)
		SELECT ? WHERE NOT EXISTS (SELECT 1 FROM blob_text WHERE sha256 = ?)`, sha, sha); err != nil {
		return fmt.Errorf("text of %s for the indexer: %w", sha, err)
	}
	t.textPending = true
	return nil
}

// dropText removes the text of content sha (gone from the store) from the
// index. An external-content FTS5 table must be told the old values.
func (t *txn) dropText(sha string) error {
	if _, err := t.exec("DELETE FROM blob_text_pending WHERE sha256=?", sha); err != nil {
		return fmt.Errorf("drop text of %s: %w", sha, err)
	}
	var id int64
	var header, body string
	err := t.row("DELETE FROM blob_text WHERE sha256=? RETURNING id, header, body", sha).Scan(&id, &header, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	} else if err != nil {
		return fmt.Errorf("drop text of %s: %w", sha, err)
	}
	if _, err := t.exec("INSERT INTO blob_fts(blob_fts, rowid, header, body) VALUES('delete', ?, ?, ?)", id, header, body); err != nil {
		return fmt.Errorf("unindex text of %s: %w", sha, err)
	}
	return nil
}

// MinIndexedPattern is the shortest pattern, in characters, the index can
// look up; shorter ones are matched by reading the stored text.
const MinIndexedPattern = 3

// SearchText returns the contents, by SHA-256, whose text as the index
// holds it contains pattern, ignoring case: the body text, and with
// withHeader (TEXT) the header too. A pattern the index can look up (of
// MinIndexedPattern characters or more) is looked up in the whole store,
// and the caller keeps the contents of its own messages (mapping them to
// a folder's UIDs in SQL would cost more than the look-up); a shorter one
// is matched by reading the stored text of the folder's messages. For the
// messages TextUncertain lists, a content missing here proves nothing.
func (s *Store) SearchText(ctx context.Context, folderID int64, pattern string, withHeader bool) (map[string]bool, error) {
	out := map[string]bool{}
	if utf8.RuneCountInString(pattern) < MinIndexedPattern {
		err := s.scanText(ctx, folderID, withHeader, func(sha, header, body string) {
			if ContainsFold(body, pattern) || (withHeader && ContainsFold(header, pattern)) {
				out[sha] = true
			}
		})
		return out, err
	}
	query := `"` + strings.ReplaceAll(pattern, `"`, `""`) + `"`
	if !withHeader {
		query = "body : " + query
	}
	// From the index's rowids to the contents through a narrow index (a
	// blob_text row holds the whole text), in this order (CROSS JOIN).
	rows, err := s.db.QueryContext(ctx, `SELECT t.sha256 FROM blob_fts
		CROSS JOIN blob_text t INDEXED BY blob_text_id ON t.id = blob_fts.rowid
		WHERE blob_fts MATCH ?`, query)
	if err != nil {
		return nil, fmt.Errorf("search text: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sha string
		if err := rows.Scan(&sha); err != nil {
			return nil, fmt.Errorf("search text: %w", err)
		}
		out[sha] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search text: %w", err)
	}
	return out, nil
}

// scanText calls f with the stored text of each message of a folder.
func (s *Store) scanText(ctx context.Context, folderID int64, withHeader bool, f func(sha, header, body string)) error {
	header := "''"
	if withHeader {
		header = "t.header"
	}
	rows, err := s.db.QueryContext(ctx, `SELECT t.sha256, `+header+`, t.body FROM messages m
		JOIN blob_text t ON t.sha256 = m.sha256 WHERE m.folder_id = ?`, folderID)
	if err != nil {
		return fmt.Errorf("read text of folder %d: %w", folderID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var sha, h, b string
		if err := rows.Scan(&sha, &h, &b); err != nil {
			return fmt.Errorf("read text of folder %d: %w", folderID, err)
		}
		f(sha, h, b)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read text of folder %d: %w", folderID, err)
	}
	return nil
}

// ContainsFold reports whether s contains substr, ignoring case (Unicode
// lower case, as the index folds it).
func ContainsFold(s, substr string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(substr))
}

// TextUncertain returns the UIDs of the messages of a folder whose text the
// index does not hold whole: content stored before the index and not
// reached by RunTextIndexer yet, and content cut at the index's limits.
// A search must read those messages itself where SearchText says no.
func (s *Store) TextUncertain(ctx context.Context, folderID int64) (map[uint32]bool, error) {
	var done int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM meta WHERE key=? AND value=1", textIndexedKey).Scan(&done); err != nil {
		return nil, fmt.Errorf("text index state: %w", err)
	}
	// The texts cut short are few: start from them, whatever the size
	// of the folder (CROSS JOIN keeps that order).
	// So are the contents waiting for the indexer.
	q := `SELECT m.uid FROM blob_text t INDEXED BY blob_text_cut CROSS JOIN messages m ON m.sha256 = t.sha256
		WHERE t.complete = 0 AND m.folder_id = ?1
		UNION SELECT m.uid FROM blob_text_pending p CROSS JOIN messages m ON m.sha256 = p.sha256
		WHERE m.folder_id = ?1`
	if done == 0 {
		q = `SELECT m.uid FROM messages m LEFT JOIN blob_text t ON t.sha256 = m.sha256
			WHERE m.folder_id = ?1 AND (t.id IS NULL OR t.complete = 0)`
	}
	rows, err := s.db.QueryContext(ctx, q, folderID)
	if err != nil {
		return nil, fmt.Errorf("unindexed messages of folder %d: %w", folderID, err)
	}
	defer rows.Close()
	out := map[uint32]bool{}
	for rows.Next() {
		var uid uint32
		if err := rows.Scan(&uid); err != nil {
			return nil, fmt.Errorf("unindexed messages of folder %d: %w", folderID, err)
		}
		out[uid] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unindexed messages of folder %d: %w", folderID, err)
	}
	return out, nil
}

// textBatch is how many contents RunTextIndexer indexes per transaction:
// each batch holds the write lock (and so delays Apply) for about as long
// as delivering that many messages would.
const textBatch = 64

// RunTextIndexer gives the index the text of every message's content
// stored before the index existed (a store made by an older version, or
// restored from an older snapshot), a batch at a time between commands,
// logging its progress. It then waits for a Restore and does the same
// again, until ctx ends. Every node runs it on its own database: the text
// is derived data, not replicated state.
func (s *Store) RunTextIndexer(ctx context.Context, log *slog.Logger) {
	for {
		var retry <-chan time.Time
		err := s.IndexTextBacklog(ctx, log)
		if err == nil {
			err = s.IndexPendingText(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errTextMissing):
			// Content reached the store under the pass (a Restore):
			// another pass.
			retry = time.After(time.Second)
		case err != nil:
			log.Warn("indexing message text for search", "err", err)
			retry = time.After(time.Minute)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.restored:
		case <-retry:
		case <-s.textWake:
			if !s.awaitQuiet(ctx) {
				return
			}
		}
	}
}

// Indexing costs as much CPU as delivering (FTS5 writes and merges its
// segments), so it waits for the deliveries to pause: textQuiet without
// one, as Dovecot indexes when a search asks rather than at delivery. So
// that a search never has many messages to read itself, it does not wait
// once textMaxPending contents are waiting.
const (
	textQuiet      = time.Second
	textMaxPending = 2000
)

// awaitQuiet returns when deliveries have paused for textQuiet, or when
// textMaxPending contents wait, or false when ctx ends.
func (s *Store) awaitQuiet(ctx context.Context) bool {
	quiet := time.NewTimer(textQuiet)
	defer quiet.Stop()
	check := time.NewTicker(textQuiet)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-quiet.C:
			return true
		case <-s.textWake:
			quiet.Reset(textQuiet)
		case <-check.C:
			var n int
			if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM blob_text_pending").Scan(&n); err != nil || n >= textMaxPending {
				return ctx.Err() == nil
			}
		}
	}
}

// wakeIndexer tells RunTextIndexer that content is waiting.
func (s *Store) wakeIndexer() {
	select {
	case s.textWake <- struct{}{}:
	default:
	}
}

// IndexPendingText indexes the contents delivered since the last pass, a
// batch at a time, until none is waiting. RunTextIndexer calls it after
// each delivery; tests and benchmarks call it to wait for the index.
func (s *Store) IndexPendingText(ctx context.Context) error {
	for {
		rows, err := s.db.QueryContext(ctx, "SELECT sha256 FROM blob_text_pending ORDER BY sha256 LIMIT ?", textBatch)
		if err != nil {
			return fmt.Errorf("list content waiting for its text: %w", err)
		}
		var shas []string
		for rows.Next() {
			var sha string
			if err := rows.Scan(&sha); err != nil {
				rows.Close()
				return fmt.Errorf("list content waiting for its text: %w", err)
			}
			shas = append(shas, sha)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list content waiting for its text: %w", err)
		}
		if len(shas) == 0 {
			return nil
		}
		texts := make([]mailtext.Text, len(shas))
		for i, sha := range shas {
			data, err := s.Content(ctx, sha)
			if IsCode(err, ErrNotFound) {
				continue // gone meanwhile: storeTexts drops its row
			} else if err != nil {
				return err
			}
			texts[i] = mailtext.Extract(data, mailtext.Index())
		}
		if err := s.storeTexts(ctx, shas, texts); err != nil {
			return err
		}
	}
}

var errTextMissing = errors.New("messages without text remain")

// IndexTextBacklog is one pass of RunTextIndexer: it indexes what lacks
// text, in SHA-256 order, then records that nothing does.
func (s *Store) IndexTextBacklog(ctx context.Context, log *slog.Logger) error {
	var done int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM meta WHERE key=? AND value=1", textIndexedKey).Scan(&done); err != nil {
		return fmt.Errorf("text index state: %w", err)
	}
	if done > 0 {
		return nil
	}
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM blob_text t WHERE t.sha256 = b.sha256)
		AND EXISTS (SELECT 1 FROM messages m WHERE m.sha256 = b.sha256)`).Scan(&total); err != nil {
		return fmt.Errorf("count unindexed content: %w", err)
	}
	start, last := time.Now(), time.Now()
	if total > 0 {
		log.Info("indexing the text of stored messages for search", "contents", total)
	}
	cursor, n := "", 0
	for {
		shas, err := s.unindexed(ctx, cursor)
		if err != nil {
			return err
		}
		if len(shas) == 0 {
			break
		}
		cursor = shas[len(shas)-1]
		texts := make([]mailtext.Text, len(shas))
		for i, sha := range shas {
			data, err := s.Content(ctx, sha)
			if IsCode(err, ErrNotFound) {
				continue // gone meanwhile
			} else if err != nil {
				return err
			}
			texts[i] = mailtext.Extract(data, mailtext.Index())
		}
		if err := s.storeTexts(ctx, shas, texts); err != nil {
			return err
		}
		n += len(shas)
		if time.Since(last) >= 10*time.Second {
			log.Info("indexing the text of stored messages for search", "done", n, "of", total)
			last = time.Now()
		}
	}
	if err := s.markTextIndexed(ctx); err != nil {
		return err
	}
	if total > 0 {
		log.Info("indexed the text of stored messages for search", "contents", n, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// unindexed lists the next contents after cursor that messages use and
// that have no text.
func (s *Store) unindexed(ctx context.Context, cursor string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT b.sha256 FROM blobs b WHERE b.sha256 > ?
		AND NOT EXISTS (SELECT 1 FROM blob_text t WHERE t.sha256 = b.sha256)
		AND EXISTS (SELECT 1 FROM messages m WHERE m.sha256 = b.sha256)
		ORDER BY b.sha256 LIMIT ?`, cursor, textBatch)
	if err != nil {
		return nil, fmt.Errorf("list unindexed content: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var sha string
		if err := rows.Scan(&sha); err != nil {
			return nil, fmt.Errorf("list unindexed content: %w", err)
		}
		out = append(out, sha)
	}
	return out, rows.Err()
}

// storeTexts indexes a batch, between commands, skipping content that went
// away or got its text meanwhile.
func (s *Store) storeTexts(ctx context.Context, shas []string, texts []mailtext.Text) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("index text: %w", err)
	}
	defer tx.Rollback()
	var ids []int64
	for i, sha := range shas {
		if _, err := tx.ExecContext(ctx, "DELETE FROM blob_text_pending WHERE sha256 = ?", sha); err != nil {
			return fmt.Errorf("index text: %w", err)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM blobs b WHERE b.sha256 = ?
			AND NOT EXISTS (SELECT 1 FROM blob_text t WHERE t.sha256 = b.sha256)`, sha).Scan(&n); err != nil {
			return fmt.Errorf("index text: %w", err)
		}
		if n == 0 {
			continue
		}
		var id int64
		if err := tx.QueryRowContext(ctx, "INSERT INTO blob_text(sha256, header, body, complete) VALUES(?, ?, ?, ?) RETURNING id",
			sha, texts[i].Header, texts[i].Body, texts[i].Complete).Scan(&id); err != nil {
			return fmt.Errorf("store text of %s: %w", sha, err)
		}
		ids = append(ids, id)
	}
	// One statement for the whole batch: FTS5 writes its pending terms
	// out as a new segment at every statement (savepoint) that touches
	// it, so a row at a time cost a flush and a merge per message.
	if len(ids) > 0 {
		list, _ := json.Marshal(ids)
		if _, err := tx.ExecContext(ctx, `INSERT INTO blob_fts(rowid, header, body)
			SELECT id, header, body FROM blob_text WHERE id IN (SELECT value FROM json_each(?))`, string(list)); err != nil {
			return fmt.Errorf("index text of %d contents: %w", len(ids), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("index text: %w", err)
	}
	return nil
}

// markTextIndexed records, if it is so, that every message's content has
// its text (checked under the write lock, so that no command slips in).
func (s *Store) markTextIndexed(ctx context.Context) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("mark text indexed: %w", err)
	}
	defer tx.Rollback()
	var missing int
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM messages m
		WHERE NOT EXISTS (SELECT 1 FROM blob_text t WHERE t.sha256 = m.sha256))`).Scan(&missing); err != nil {
		return fmt.Errorf("mark text indexed: %w", err)
	}
	if missing != 0 {
		return errTextMissing
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO meta(key, value) VALUES(?, 1) ON CONFLICT(key) DO UPDATE SET value=1", textIndexedKey); err != nil {
		return fmt.Errorf("mark text indexed: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("mark text indexed: %w", err)
	}
	return nil
}
