package storage

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"sigillo/storage/peclog"
)

// dumpTable is every row of table, sorted, as text.
func dumpTable(t *testing.T, db *sql.DB, table string) []string {
	t.Helper()
	rows, err := db.Query("SELECT * FROM " + quoteIdent(table))
	if err != nil {
		t.Fatalf("dump %s: %v", table, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		out = append(out, fmt.Sprintf("%q", vals))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("dump %s: %v", table, err)
	}
	sort.Strings(out)
	return out
}

func tablesOf(t *testing.T, s *Store) []string {
	t.Helper()
	tx, err := s.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	tables, err := stateTables(context.Background(), tx)
	if err != nil {
		t.Fatal(err)
	}
	return tables
}

// TestRestoreCopiesEveryTableOfTheSchema: a store with a row in every table
// of its schema is snapshotted; another store, with other content, restored
// from the snapshot holds exactly the same rows in every table, and its
// full-text index is whole. A table that a later migration adds (here one
// with an AUTOINCREMENT key) is copied too, counters included, without
// being listed anywhere.
func TestRestoreCopiesEveryTableOfTheSchema(t *testing.T) {
	ctx := context.Background()
	later := `CREATE TABLE added_later (id INTEGER PRIMARY KEY AUTOINCREMENT, domain_id INTEGER REFERENCES domains(id), note TEXT NOT NULL)`

	src, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	a.deliverTo(alice, "", "Subject: one\r\n\r\nthe first brioche\r\n")
	a.must(&Deliver{Targets: []Target{{MailboxID: alice, Folder: "Sent"}}, InternalDate: 6, Data: []byte("Subject: out\r\n\r\nto far away\r\n"),
		Outbound: &Outbound{ID: "q1", Sender: "alice@example.test", Recipients: []string{"bob@far.test"}, NextAttempt: 7},
		Dedupe:   &Dedupe{MessageID: "out@example.test", SHA256: strings.Repeat("ab", 32)}})
	a.must(&Deliver{InternalDate: 8, Data: []byte("Subject: bad\r\n\r\nEICAR\r\n"),
		Quarantine: &Quarantine{Virus: "Eicar-Test", Sender: "x@far.test", Recipients: []string{"alice@example.test"}, Context: "reception point"}})
	a.must(&PutKV{Key: "ca", Value: []byte("secret")})
	fillDays(t, a, newGestoreKey(t), 1, 2)
	a.must(&Batch{Log: []peclog.Entry{event(5, logStart.AddDate(0, 0, 2))}, Track: []Track{
		{Op: TrackSent, MsgID: "m1@pec", Recipient: "bob@far.test", At: 9, Sender: "alice@example.test"},
		{Op: TrackReceived, MsgID: "m2@pec", Recipient: "alice@example.test", At: 9},
	}})
	if _, err := src.db.Exec(later); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO added_later(domain_id, note) VALUES(1, 'kept'), (1, 'deleted')",
		"DELETE FROM added_later WHERE note = 'deleted'", // the counter stays at 2
	} {
		if _, err := src.db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	tables := tablesOf(t, src)
	t.Logf("tables copied: %s", strings.Join(tables, " "))
	for _, must := range []string{"sqlite_sequence", "added_later", "blob_text", "blob_fts_data", "blob_fts_idx", "blob_fts_docsize", "blob_fts_config"} {
		if !contains(tables, must) {
			t.Errorf("%s is not among the tables Restore copies", must)
		}
	}
	if contains(tables, "blob_fts") {
		t.Errorf("the FTS5 table itself is copied, not only its shadow tables")
	}
	if pos(tables, "domains") > pos(tables, "mailboxes") || pos(tables, "mailboxes") > pos(tables, "folders") ||
		pos(tables, "blobs") > pos(tables, "messages") || pos(tables, "domains") > pos(tables, "added_later") {
		t.Errorf("a table comes before the table its foreign keys refer to: %v", tables)
	}
	for _, tb := range tables {
		if len(dumpTable(t, src.db, tb)) == 0 {
			t.Errorf("table %s is empty in the source store: give it a row above, so that this test shows Restore copies it", tb)
		}
	}
	snap := filepath.Join(t.TempDir(), "snap.sqlite")
	if err := src.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}

	dst, b := newStore(t)
	b.must(&AddDomain{Name: "other.test", At: 2})
	x := b.must(&AddMailbox{Address: "x@other.test", PasswordHash: "h2", At: 2}).(int64)
	b.deliverTo(x, "", "Subject: gone\r\n\r\nthis brioche goes away\r\n")
	b.must(&PutKV{Key: "other", Value: []byte("gone")})
	if _, err := dst.db.Exec(later); err != nil { // the same migration
		t.Fatal(err)
	}
	if _, err := dst.db.Exec("INSERT INTO added_later(domain_id, note) VALUES(1, 'gone')"); err != nil {
		t.Fatal(err)
	}
	if err := dst.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		want, got := dumpTable(t, src.db, tb), dumpTable(t, dst.db, tb)
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("table %s after restore:\n%s\nwant:\n%s", tb, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	checkIndex(t, dst)
	inbox, err := dst.FolderByName(ctx, alice, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := found(dst, inbox.ID, "brioche", false); err != nil || fmt.Sprint(got) != "[1]" {
		t.Fatalf("search after restore: %v %v", got, err)
	}
	// The next ID of the table added later is the source's, not reused.
	var id int64
	for _, s := range []*Store{src, dst} {
		if err := s.db.QueryRow("INSERT INTO added_later(domain_id, note) VALUES(1, 'next') RETURNING id").Scan(&id); err != nil || id != 3 {
			t.Fatalf("next id of added_later = %d, %v; want 3", id, err)
		}
	}
}

func contains(list []string, s string) bool { return pos(list, s) >= 0 }

func pos(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
