package storage

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const qpMessage = "Subject: =?utf-8?q?Caff=C3=A8?=\r\n" +
	"Content-Type: multipart/alternative; boundary=\"BB\"\r\n" +
	"\r\n" +
	"--BB\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Un caff=C3=A8 lungo per favore, con una bri=\r\n" +
	"oche.\r\n" +
	"--BB\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+SGVsbG8gPGI+d29ybGQ8L2I+PC9wPg==\r\n" + // <p>Hello <b>world</b></p>
	"--BB--\r\n"

// found is SearchText as UIDs of the folder, in order.
func found(s *Store, folderID int64, pattern string, withHeader bool) ([]uint32, error) {
	shas, err := s.SearchText(context.Background(), folderID, pattern, withHeader)
	if err != nil {
		return nil, err
	}
	msgs, err := s.Messages(context.Background(), folderID)
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, m := range msgs {
		if shas[m.SHA256] {
			out = append(out, m.UID)
		}
	}
	return out, nil
}

func uids(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (a *applier) deliverTo(mailbox int64, folder, msg string) Placement {
	a.t.Helper()
	r := a.must(&Deliver{Targets: []Target{{MailboxID: mailbox, Folder: folder}}, Data: []byte(msg), InternalDate: 5}).(*DeliverResult)
	// What RunTextIndexer does just after the commit.
	if err := a.s.IndexPendingText(context.Background()); err != nil {
		a.t.Fatal(err)
	}
	return r.Placed[0]
}

// TestAMessageIsSearchedBeforeItsTextIsIndexed: the text is indexed after
// the commit; until then the message is uncertain (the search reads it),
// and the indexer's pass makes it certain and found.
func TestAMessageIsSearchedBeforeItsTextIsIndexed(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	inbox, _ := s.FolderByName(ctx, alice, "INBOX")
	a.deliverTo(alice, "", "Subject: indexed\r\n\r\nan indexed walrus\r\n")
	a.must(&Deliver{Targets: []Target{{MailboxID: alice}}, Data: []byte("Subject: fresh\r\n\r\na fresh walrus\r\n"), InternalDate: 6})
	if u, _ := s.TextUncertain(ctx, inbox.ID); fmt.Sprint(uids(u)) != "[2]" {
		t.Fatalf("uncertain before the indexer: %v, want [2]", uids(u))
	}
	if got, _ := found(s, inbox.ID, "walrus", false); fmt.Sprint(got) != "[1]" {
		t.Fatalf("indexed before the indexer: %v, want [1]", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.IndexPendingText(ctx); err != nil {
			t.Error(err)
		}
	}()
	<-done
	if u, _ := s.TextUncertain(ctx, inbox.ID); len(u) != 0 {
		t.Fatalf("uncertain after the indexer: %v", uids(u))
	}
	if got, _ := found(s, inbox.ID, "walrus", false); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("found after the indexer: %v, want [1 2]", got)
	}
	var pending int
	if err := s.db.QueryRow("SELECT count(*) FROM blob_text_pending").Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("%d contents still waiting (%v)", pending, err)
	}
}

// syncBuffer is a log destination a goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// checkIndex runs FTS5's own consistency check of the index against the
// stored text.
func checkIndex(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.db.Exec("INSERT INTO blob_fts(blob_fts, rank) VALUES('integrity-check', 1)"); err != nil {
		t.Fatalf("the full-text index is inconsistent: %v", err)
	}
}

func textRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow("SELECT count(*) FROM blob_text").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTheIndexFindsSubstringsOfTheDecodedText: delivered messages are
// searchable at once, by any substring of their decoded text, in the
// folder they are in; the text goes when the last copy goes.
func TestTheIndexFindsSubstringsOfTheDecodedText(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	bob := a.must(&AddMailbox{Address: "bob@example.test", PasswordHash: "h", At: 1}).(int64)
	inbox, _ := s.FolderByName(ctx, alice, "INBOX")
	bobInbox, _ := s.FolderByName(ctx, bob, "INBOX")

	a.deliverTo(alice, "", qpMessage)                            // uid 1
	a.deliverTo(alice, "", "Subject: other\r\n\r\nnothing here") // uid 2
	a.deliverTo(bob, "", qpMessage)                              // the same content, stored and indexed once
	if n := textRows(t, s); n != 2 {
		t.Fatalf("%d texts for 2 contents", n)
	}
	for _, c := range []struct {
		pattern    string
		withHeader bool
		want       []uint32
	}{
		{"caffè lungo", false, []uint32{1}},   // quoted-printable, decoded
		{"CAFFÈ LUNGO", false, []uint32{1}},   // in any case
		{"brioche", false, []uint32{1}},       // across a soft line break
		{"ello wor", false, []uint32{1}},      // base64 HTML, tags gone, mid-word
		{"<b>", false, nil},                   // markup is not text
		{"Caffè", true, []uint32{1}},          // the decoded subject, for TEXT
		{"Subject: other", false, nil},        // the header is not the body
		{"Subject: other", true, []uint32{2}}, // but TEXT looks there
		{"here", false, []uint32{2}},          // no MIME at all
		{"no", false, []uint32{2}},            // two characters: read, not looked up
		{"è", false, []uint32{1}},             // one
		{`say "hi"`, false, nil},              // quotes are just characters
		{"lungo per favore, con", false, []uint32{1}},
	} {
		got, err := found(s, inbox.ID, c.pattern, c.withHeader)
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && c.want == nil) {
			t.Errorf("search %q (header %v): %v, want %v", c.pattern, c.withHeader, got, c.want)
		}
	}
	if got, _ := found(s, bobInbox.ID, "brioche", false); fmt.Sprint(got) != "[1]" {
		t.Errorf("bob's copy: %v", got)
	}
	if u, err := s.TextUncertain(ctx, inbox.ID); err != nil || len(u) != 0 {
		t.Fatalf("uncertain: %v %v", u, err)
	}
	checkIndex(t, s)

	// Alice's copy goes, bob's keeps the text; then bob's goes too.
	a.must(&Expunge{FolderID: inbox.ID, UIDs: []uint32{1}})
	if got, _ := found(s, inbox.ID, "brioche", false); len(got) != 0 {
		t.Errorf("expunged message found: %v", got)
	}
	if got, _ := found(s, bobInbox.ID, "brioche", false); len(got) != 1 || textRows(t, s) != 2 {
		t.Errorf("bob's copy lost its text: %v", got)
	}
	a.must(&Expunge{FolderID: bobInbox.ID, UIDs: []uint32{1}})
	if n := textRows(t, s); n != 1 {
		t.Errorf("%d texts for 1 content", n)
	}
	checkIndex(t, s)

	// A copy is found in its new folder; a removed mailbox takes its texts.
	a.deliverTo(alice, "", qpMessage) // uid 3
	archive, _ := s.FolderByName(ctx, alice, "Archive")
	a.must(&Copy{FromFolderID: inbox.ID, UIDs: []uint32{3}, ToFolderID: archive.ID, Move: true})
	if got, _ := found(s, archive.ID, "brioche", false); fmt.Sprint(got) != "[1]" {
		t.Errorf("moved message: %v", got)
	}
	a.must(&RemoveMailbox{Address: "alice@example.test"})
	if n := textRows(t, s); n != 0 {
		t.Errorf("%d texts after every message went", n)
	}
	checkIndex(t, s)
}

// TestABigTextIsCutAndSaidToBe: the index keeps the first 128 KiB of text;
// the message is listed as uncertain, for the searcher to read whole.
func TestABigTextIsCutAndSaidToBe(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	inbox, _ := s.FolderByName(ctx, alice, "INBOX")
	a.deliverTo(alice, "", "Subject: small\r\n\r\nsmall\r\n")
	a.deliverTo(alice, "", "Subject: big\r\n\r\nearly words "+strings.Repeat("filler ", 30<<10)+"late words\r\n")
	if got, _ := found(s, inbox.ID, "early words", false); fmt.Sprint(got) != "[2]" {
		t.Errorf("early words: %v", got)
	}
	if got, _ := found(s, inbox.ID, "late words", false); len(got) != 0 {
		t.Errorf("late words beyond the cut were indexed: %v", got)
	}
	if u, _ := s.TextUncertain(ctx, inbox.ID); fmt.Sprint(uids(u)) != "[2]" {
		t.Errorf("uncertain: %v", uids(u))
	}
}

// TestAStoreFromBeforeTheIndexGetsIndexed: a database made before the
// index (schema 8) is migrated; its messages are uncertain until the
// indexer, logging, gives them their text in batches; new deliveries are
// indexed at once meanwhile.
func TestAStoreFromBeforeTheIndexGetsIndexed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, s: s}
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	const old = 3*textBatch + 5
	for i := 0; i < old; i++ {
		a.deliverTo(alice, "", fmt.Sprintf("Subject: %d\r\n\r\nold message number %d, zebra\r\n", i, i))
	}
	// Back to schema 8: what an older version left.
	for _, q := range []string{"DROP TABLE blob_fts", "DROP TABLE blob_text", "DROP TABLE blob_text_pending", "DROP TABLE delivered", "DROP INDEX messages_sha", "DELETE FROM meta WHERE key='text_indexed'", "PRAGMA user_version = 8"} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	s.Close()

	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a.s = s
	inbox, _ := s.FolderByName(ctx, alice, "INBOX")
	if u, _ := s.TextUncertain(ctx, inbox.ID); len(u) != old {
		t.Fatalf("%d uncertain before indexing, want %d", len(u), old)
	}
	a.deliverTo(alice, "", "Subject: new\r\n\r\nnew message, zebra\r\n")
	if got, _ := found(s, inbox.ID, "zebra", false); fmt.Sprint(got) != fmt.Sprint([]uint32{old + 1}) {
		t.Fatalf("a new delivery is not indexed at once: %v", got)
	}

	logs := &syncBuffer{}
	ictx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunTextIndexer(ictx, slog.New(slog.NewTextHandler(logs, nil)))
	}()
	// Searches stay right while it runs; it says when it is done.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "indexed the text") {
		// Uncertain first, as searches ask: what is indexed in between
		// is found.
		u, err := s.TextUncertain(ctx, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := found(s, inbox.ID, "zebra", false)
		if err != nil {
			t.Fatal(err)
		}
		for _, uid := range got {
			u[uid] = true
		}
		if len(u) != old+1 {
			t.Fatalf("%d found or uncertain of %d", len(u), old+1)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the indexer did not finish:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done
	if u, err := s.TextUncertain(ctx, inbox.ID); err != nil || len(u) != 0 {
		t.Fatalf("uncertain after indexing: %v %v", u, err)
	}
	if got, _ := found(s, inbox.ID, "zebra", false); len(got) != old+1 {
		t.Fatalf("%d found after indexing, want %d", len(got), old+1)
	}
	if got, _ := found(s, inbox.ID, "number 17,", false); fmt.Sprint(got) != "[18]" {
		t.Fatalf("number 17: %v", got)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("contents=%d", old)) {
		t.Errorf("the indexer did not say what it did:\n%s", logs.String())
	}
	checkIndex(t, s)
}

// TestASnapshotCarriesTheIndex: a store restored from a snapshot searches
// at once; one restored from a snapshot made before the index is indexed.
func TestASnapshotCarriesTheIndex(t *testing.T) {
	ctx := context.Background()
	src, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	a.deliverTo(alice, "", qpMessage)
	a.deliverTo(alice, "", "Subject: two\r\n\r\nsecond brioche\r\n")
	snap := filepath.Join(t.TempDir(), "snap.sqlite")
	if err := src.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}

	dst, b := newStore(t)
	b.must(&AddDomain{Name: "other.test", At: 1})
	other := b.must(&AddMailbox{Address: "x@other.test", PasswordHash: "h", At: 1}).(int64)
	b.deliverTo(other, "", "Subject: gone\r\n\r\nthis brioche goes away\r\n")
	// Use the index on every pooled connection before the restore.
	for i := 0; i < 4; i++ {
		if _, err := found(dst, 1, "brioche", false); err != nil {
			t.Fatal(err)
		}
	}
	if err := dst.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	inbox, _ := dst.FolderByName(ctx, alice, "INBOX")
	for i := 0; i < 8; i++ {
		got, err := found(dst, inbox.ID, "brioche", false)
		if err != nil || fmt.Sprint(got) != "[1 2]" {
			t.Fatalf("restored index: %v %v", got, err)
		}
	}
	checkIndex(t, dst)
	b.index = 100
	b.deliverTo(alice, "", "Subject: three\r\n\r\nthird brioche\r\n")
	if got, _ := found(dst, inbox.ID, "brioche", false); len(got) != 3 {
		t.Fatalf("after a delivery on the restored store: %v", got)
	}
	checkIndex(t, dst)

	// A snapshot from before the index: restored, then indexed.
	for _, q := range []string{"DROP TABLE blob_fts", "DROP TABLE blob_text", "DROP TABLE blob_text_pending", "DROP TABLE delivered", "DROP INDEX messages_sha", "DELETE FROM meta WHERE key='text_indexed'", "PRAGMA user_version = 8"} {
		if _, err := src.db.Exec(q); err != nil {
			t.Fatal(q, err)
		}
	}
	old := filepath.Join(t.TempDir(), "old.sqlite")
	if err := src.Snapshot(ctx, old); err != nil {
		t.Fatal(err)
	}
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	go dst.RunTextIndexer(ictx, slog.New(slog.DiscardHandler))
	if err := dst.Restore(ctx, old); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := found(dst, inbox.ID, "brioche", false)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not indexed after a restore from an old snapshot: %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkIndex(t, dst)
}

// TestTheIndexerIndexesOnceDeliveriesPause: the store's indexer leaves new
// content alone while deliveries go on and indexes it once they pause.
func TestTheIndexerIndexesOnceDeliveriesPause(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s, a := newStore(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunTextIndexer(ctx, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()
	pending := func() int {
		var n int
		if err := s.db.QueryRow("SELECT count(*) FROM blob_text_pending").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	start := time.Now()
	for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
		a.must(&Deliver{Targets: []Target{{MailboxID: alice}}, Data: []byte(fmt.Sprintf("Subject: %d\r\n\r\nbusy %d\r\n", i, i)), InternalDate: 5})
		time.Sleep(100 * time.Millisecond)
	}
	if n := pending(); n < 10 {
		t.Fatalf("%d contents waiting while deliveries went on, want them left for the pause", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d contents still waiting 5 s after the deliveries paused", pending())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("indexed %v after the last delivery", time.Since(start)-1500*time.Millisecond)
}
