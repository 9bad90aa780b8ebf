package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The scenarios below send a message the way the SMTP server stores it:
// trace fields with a new queue ID and time on every attempt, then the
// message as the client sent it, with Dedupe naming its Message-ID and
// hash. A client's retry is the same message at a later time.

const day = 24 * 60 * 60

// attempt is one SMTP transaction's Deliver of msg at at: to the local
// mailboxes (INBOX) and, when remote is not empty, on the queue.
func attempt(at int64, msg string, mailboxes []int64, remote ...string) *Deliver {
	sum := sha256.Sum256([]byte(msg))
	d := &Deliver{InternalDate: at,
		Data:   []byte(fmt.Sprintf("Received: from client by mx.example.test with ESMTPS id Q%d; %d\r\n%s", at, at, msg)),
		Dedupe: &Dedupe{MessageID: messageIDOf(msg), SHA256: hex.EncodeToString(sum[:])}}
	for _, m := range mailboxes {
		d.Targets = append(d.Targets, Target{MailboxID: m, EnforceQuota: true})
	}
	if len(remote) > 0 {
		d.Outbound = &Outbound{ID: fmt.Sprintf("Q%d", at), Sender: "x@far.test", Recipients: remote, NextAttempt: at}
	}
	return d
}

// messageIDOf is what the SMTP server reads from the header.
func messageIDOf(msg string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if name, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(name, "Message-ID") {
			return NormalizeMessageID(v)
		}
	}
	return ""
}

type dedupeWorld struct {
	t            *testing.T
	s            *Store
	a            *applier
	alice, carol int64
}

func newDedupeWorld(t *testing.T) *dedupeWorld {
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	w := &dedupeWorld{t: t, s: s, a: a}
	w.alice = a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	w.carol = a.must(&AddMailbox{Address: "carol@example.test", PasswordHash: "h", At: 1}).(int64)
	return w
}

func (w *dedupeWorld) send(d *Deliver) *DeliverResult {
	w.t.Helper()
	return w.a.must(d).(*DeliverResult)
}

// count is the number of messages in every folder of mailbox.
func (w *dedupeWorld) count(mailbox int64) int {
	w.t.Helper()
	var n int
	if err := w.s.db.QueryRow("SELECT count(*) FROM messages WHERE folder_id IN (SELECT id FROM folders WHERE mailbox_id=?)", mailbox).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

func (w *dedupeWorld) folder(mailbox int64, name string) Folder {
	w.t.Helper()
	f, err := w.s.FolderByName(context.Background(), mailbox, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

const brioche = "Message-ID: <brioche.1@far.test>\r\nSubject: brioche\r\n\r\nthe recipe\r\n"

// TestAClientsRetryIsAcknowledgedWithoutASecondCopy: a message delivered,
// then sent again a minute later (its 250 lost in a failover), is in the
// mailbox once; the second result says the recipient had it already. A
// retry naming a new recipient besides delivers to that one only.
func TestAClientsRetryIsAcknowledgedWithoutASecondCopy(t *testing.T) {
	w := newDedupeWorld(t)
	first := w.send(attempt(1000, brioche, []int64{w.alice}))
	if len(first.Placed) != 1 || len(first.Duplicate) != 0 {
		t.Fatalf("first delivery: %+v", first)
	}
	used := mailboxUsed(t, w.s, w.alice)

	again := w.send(attempt(1060, brioche, []int64{w.alice}))
	if len(again.Placed) != 0 || fmt.Sprint(again.Duplicate) != fmt.Sprint([]int64{w.alice}) || len(again.OverQuota) != 0 {
		t.Fatalf("the retry: %+v, want alice as a duplicate and nothing placed", again)
	}
	if n := w.count(w.alice); n != 1 {
		t.Fatalf("alice has %d copies", n)
	}
	if u := mailboxUsed(t, w.s, w.alice); u != used {
		t.Errorf("alice's used bytes went from %d to %d on a duplicate", used, u)
	}

	both := w.send(attempt(1120, brioche, []int64{w.alice, w.carol}))
	if fmt.Sprint(both.Duplicate) != fmt.Sprint([]int64{w.alice}) || len(both.Placed) != 1 || both.Placed[0].MailboxID != w.carol {
		t.Fatalf("retry with carol added: %+v", both)
	}
	if w.count(w.alice) != 1 || w.count(w.carol) != 1 {
		t.Fatalf("alice %d, carol %d copies, want 1 and 1", w.count(w.alice), w.count(w.carol))
	}
}

func mailboxUsed(t *testing.T, s *Store, id int64) int64 {
	t.Helper()
	m, err := s.MailboxByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m.UsedBytes
}

// TestOnlyTheSameMessageIDWithTheSameContentIsADuplicate: another content
// under the same Message-ID (an edited resend, a broken client) and the
// same content without any Message-ID are stored each time.
func TestOnlyTheSameMessageIDWithTheSameContentIsADuplicate(t *testing.T) {
	w := newDedupeWorld(t)
	w.send(attempt(1000, brioche, []int64{w.alice}))
	edited := strings.Replace(brioche, "the recipe", "the recipe, with more butter", 1)
	if r := w.send(attempt(1060, edited, []int64{w.alice})); len(r.Placed) != 1 || len(r.Duplicate) != 0 {
		t.Fatalf("same Message-ID, other content: %+v", r)
	}
	anonymous := "Subject: no id\r\n\r\nthe same words\r\n"
	for i := range 2 {
		d := attempt(int64(1100+i), anonymous, []int64{w.alice})
		if d.Dedupe.MessageID != "" {
			t.Fatalf("a Message-ID found in %q", anonymous)
		}
		if r := w.send(d); len(r.Placed) != 1 || len(r.Duplicate) != 0 {
			t.Fatalf("no Message-ID, attempt %d: %+v", i+1, r)
		}
	}
	if n := w.count(w.alice); n != 4 {
		t.Fatalf("alice has %d messages, want 4", n)
	}
	// The identifier is compared without its brackets and folding white space.
	d := attempt(1200, brioche, []int64{w.alice})
	d.Dedupe.MessageID = NormalizeMessageID("\r\n <brioche.1@\r\n far.test> (comment)") // the field folded
	if r := w.send(d); len(r.Duplicate) != 1 {
		t.Errorf("the same Message-ID spelled with folding white space is not a duplicate: %+v", r)
	}
}

// TestADeliveryIsRememberedForADay: a retry 24 hours less a second after
// the delivery is a duplicate; one 25 hours after is stored again, and is
// itself remembered from then on.
func TestADeliveryIsRememberedForADay(t *testing.T) {
	w := newDedupeWorld(t)
	w.send(attempt(1000, brioche, []int64{w.alice}))
	if r := w.send(attempt(1000+day-1, brioche, []int64{w.alice})); len(r.Duplicate) != 1 {
		t.Fatalf("24 h less a second later: %+v, want a duplicate", r)
	}
	late := int64(1000 + 25*60*60)
	if r := w.send(attempt(late, brioche, []int64{w.alice})); len(r.Placed) != 1 || len(r.Duplicate) != 0 {
		t.Fatalf("25 h later: %+v, want it stored", r)
	}
	if r := w.send(attempt(late+60, brioche, []int64{w.alice})); len(r.Duplicate) != 1 {
		t.Fatalf("a minute after the second delivery: %+v, want a duplicate", r)
	}
	if n := w.count(w.alice); n != 2 {
		t.Fatalf("alice has %d copies, want 2", n)
	}
}

// TestAMovedOrExpungedMessageStillCountsAsDelivered: what is remembered is
// the delivery, not the copy. The user files the message in Archive, then
// deletes it for good (a POP3 client that downloads and deletes does so
// within the minute): a retry within the day is still a duplicate, as
// Gmail does by Message-ID. A mailbox removed and made again is a new one.
func TestAMovedOrExpungedMessageStillCountsAsDelivered(t *testing.T) {
	w := newDedupeWorld(t)
	p := w.send(attempt(1000, brioche, []int64{w.alice})).Placed[0]
	archive := w.folder(w.alice, "Archive")
	moved := w.a.must(&Copy{FromFolderID: p.FolderID, UIDs: []uint32{p.UID}, ToFolderID: archive.ID, Move: true}).(*CopyResult)
	if r := w.send(attempt(1060, brioche, []int64{w.alice})); len(r.Duplicate) != 1 {
		t.Fatalf("after a move to Archive: %+v, want a duplicate", r)
	}
	w.a.must(&Expunge{FolderID: archive.ID, UIDs: moved.Dest})
	if n := w.count(w.alice); n != 0 {
		t.Fatalf("alice has %d messages after the expunge", n)
	}
	if r := w.send(attempt(1120, brioche, []int64{w.alice})); len(r.Duplicate) != 1 || len(r.Placed) != 0 {
		t.Fatalf("after the expunge: %+v, want a duplicate", r)
	}

	w.a.must(&RemoveMailbox{Address: "alice@example.test"})
	again := w.a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 2}).(int64)
	if r := w.send(attempt(1180, brioche, []int64{again})); len(r.Placed) != 1 {
		t.Fatalf("a new mailbox of the same name: %+v, want it stored", r)
	}
}

// TestARetryIsNotQueuedTwice: the remote recipients of a retry that had
// the message queued already are left out; a retry with only those queues
// nothing at all, and still acknowledges.
func TestARetryIsNotQueuedTwice(t *testing.T) {
	w := newDedupeWorld(t)
	ctx := context.Background()
	w.send(attempt(1000, brioche, []int64{w.alice}, "bob@far.test", "dan@far.test"))
	r := w.send(attempt(1060, brioche, []int64{w.alice}, "BOB@far.test", "dan@far.test"))
	if len(r.Duplicate) != 1 || fmt.Sprint(r.DuplicateRemote) != "[BOB@far.test dan@far.test]" {
		t.Fatalf("the retry: %+v, want alice, bob and dan as duplicates", r)
	}
	r = w.send(attempt(1120, brioche, nil, "bob@far.test", "eve@far.test"))
	if fmt.Sprint(r.DuplicateRemote) != "[bob@far.test]" {
		t.Fatalf("retry with eve added: %+v", r)
	}
	items, err := w.s.QueueItems(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.ID+":"+strings.Join(it.Recipients, ","))
	}
	if want := "[Q1000:bob@far.test,dan@far.test Q1120:eve@far.test]"; fmt.Sprint(got) != want {
		t.Fatalf("queue %v, want %s", got, want)
	}
}

// TestARetryIntoAFullMailboxIsStillADuplicate: the first copy filled the
// mailbox; its retry is acknowledged as delivered, not refused for quota.
// A message that was refused for quota is not remembered: once there is
// room, its retry is stored.
func TestARetryIntoAFullMailboxIsStillADuplicate(t *testing.T) {
	w := newDedupeWorld(t)
	size := int64(len(attempt(1000, brioche, nil).Data))
	w.a.must(&SetQuota{Address: "alice@example.test", QuotaBytes: size + 10})
	w.send(attempt(1000, brioche, []int64{w.alice}))
	if r := w.send(attempt(1060, brioche, []int64{w.alice})); len(r.Duplicate) != 1 || len(r.OverQuota) != 0 {
		t.Fatalf("retry into the full mailbox: %+v, want a duplicate", r)
	}
	other := strings.Replace(brioche, "brioche.1", "brioche.2", 1)
	if r := w.send(attempt(1120, other, []int64{w.alice})); len(r.OverQuota) != 1 || len(r.Duplicate) != 0 {
		t.Fatalf("another message: %+v, want over quota", r)
	}
	w.a.must(&SetQuota{Address: "alice@example.test", QuotaBytes: 0})
	if r := w.send(attempt(1180, other, []int64{w.alice})); len(r.Placed) != 1 {
		t.Fatalf("its retry with room: %+v, want it stored", r)
	}
}

// TestTheDeliveriesRememberedStayWithinADay: deliveries purge what is
// older than a day, a bounded number each, so the table holds about a
// day of deliveries and the first delivery after a quiet spell stays
// short; a bad content hash is refused, not stored unchecked.
func TestTheDeliveriesRememberedStayWithinADay(t *testing.T) {
	w := newDedupeWorld(t)
	const old = purgePerDelivery + 50
	for i := range old {
		w.send(attempt(1000, fmt.Sprintf("Message-ID: <%d@far.test>\r\n\r\nx\r\n", i), []int64{w.alice}))
	}
	rows := func() int {
		var n int
		if err := w.s.db.QueryRow("SELECT count(*) FROM delivered").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := rows(); n != old {
		t.Fatalf("%d deliveries remembered, want %d", n, old)
	}
	w.send(attempt(1000+2*day, brioche, []int64{w.alice}))
	if n := rows(); n != old-purgePerDelivery+1 {
		t.Fatalf("%d remembered after one later delivery, want %d", n, old-purgePerDelivery+1)
	}
	w.send(attempt(1000+2*day+1, strings.Replace(brioche, "brioche.1", "brioche.3", 1), []int64{w.alice}))
	if n := rows(); n != 2 {
		t.Fatalf("%d remembered after two, want 2", n)
	}
	// And the lookup is a seek on the key, not a scan.
	var plan []string
	rs, err := w.s.db.Query("EXPLAIN QUERY PLAN SELECT 1 FROM delivered WHERE mailbox_id=? AND recipient=? AND msg_key=? AND at>?", 1, "", []byte("k"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id, parent, unused int
		var detail string
		if err := rs.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	rs.Close()
	if p := strings.Join(plan, "; "); !strings.Contains(p, "SEARCH delivered USING PRIMARY KEY (mailbox_id=? AND recipient=? AND msg_key=?)") {
		t.Errorf("the duplicate lookup's plan: %s", p)
	}

	bad := attempt(5000, brioche, []int64{w.alice})
	bad.Dedupe.SHA256 = "not a hash"
	if _, err := w.a.do(bad); !IsCode(err, ErrInvalid) {
		t.Errorf("a bad content hash: %v, want a refusal", err)
	}
}

// TestAStoreFromBeforeDedupeGetsItsTable: a store of schema 10 (made by a
// version without this) opens, and its deliveries are remembered from then
// on.
func TestAStoreFromBeforeDedupeGetsItsTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sqlite")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, s: s}
	a.must(&AddDomain{Name: "example.test", At: 1})
	alice := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	for _, q := range []string{"DROP TABLE delivered", "PRAGMA user_version = 10"} {
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
	a.must(attempt(1000, brioche, []int64{alice}))
	if r := a.must(attempt(1060, brioche, []int64{alice})).(*DeliverResult); len(r.Duplicate) != 1 {
		t.Fatalf("retry after the migration: %+v", r)
	}
}
