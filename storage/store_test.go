package storage

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// applier feeds commands to a Store the way the raft FSM does, one log
// index after the other.
type applier struct {
	t     *testing.T
	s     *Store
	index uint64
}

func (a *applier) do(c Command) (any, error) {
	a.t.Helper()
	data, err := Encode(c)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	res, err := a.s.Apply(context.Background(), []Entry{{Index: a.index, Data: data}})
	if err != nil {
		a.t.Fatalf("apply %s: %v", c.Op(), err)
	}
	return res[0].Value, res[0].Err
}

func (a *applier) must(c Command) any {
	a.t.Helper()
	v, err := a.do(c)
	if err != nil {
		a.t.Fatalf("%s: %v", c.Op(), err)
	}
	return v
}

func newStore(t *testing.T) (*Store, *applier) {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &applier{t: t, s: s}
}

func TestAMailboxGetsItsFoldersAndMessagesKeepTheirUIDs(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "Example.TEST", At: 1})
	if _, err := a.do(&AddDomain{Name: "example.test"}); !IsCode(err, ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	if _, err := a.do(&AddMailbox{Address: "bob@nowhere.test", PasswordHash: "x"}); !IsCode(err, ErrNotFound) {
		t.Fatalf("mailbox on unknown domain: %v", err)
	}
	id := a.must(&AddMailbox{Address: "Alice@example.test", PasswordHash: "h", QuotaBytes: 100, At: 1000}).(int64)
	folders, err := s.Folders(ctx, id)
	if err != nil || len(folders) != len(DefaultFolders()) {
		t.Fatalf("folders: %v %v", folders, err)
	}
	inbox, _ := s.FolderByName(ctx, id, "inbox")
	seen := map[uint32]bool{}
	for _, f := range folders {
		if seen[f.UIDValidity] {
			t.Fatalf("UIDVALIDITY %d repeats", f.UIDValidity)
		}
		seen[f.UIDValidity] = true
	}

	r := a.must(&Deliver{Targets: []Target{{MailboxID: id, EnforceQuota: true}}, Data: []byte("Subject: one\r\n\r\nbody\r\n"), InternalDate: 5}).(*DeliverResult)
	if len(r.Placed) != 1 || r.Placed[0].UID != 1 {
		t.Fatalf("deliver: %+v", r)
	}
	a.must(&Deliver{Targets: []Target{{MailboxID: id}}, Data: []byte("Subject: one\r\n\r\nbody\r\n")})
	r = a.must(&Deliver{Targets: []Target{{MailboxID: id, EnforceQuota: true}}, Data: make([]byte, 80)}).(*DeliverResult)
	if len(r.OverQuota) != 1 || len(r.Placed) != 0 {
		t.Fatalf("over quota not refused: %+v", r)
	}
	var blobs int
	s.db.QueryRow("SELECT count(*) FROM blobs").Scan(&blobs)
	if blobs != 1 {
		t.Fatalf("same content stored %d times", blobs)
	}

	fr := a.must(&StoreFlags{FolderID: inbox.ID, UIDs: []uint32{1}, Mode: FlagsAdd, Flags: []string{`\seen`, "$Label1"}}).(*FlagsResult)
	if len(fr.Updated) != 1 || fr.Updated[0].Flags[1] != `\Seen` {
		t.Fatalf("flags: %+v", fr)
	}
	trash, _ := s.FolderByName(ctx, id, "Trash")
	cr := a.must(&Copy{FromFolderID: inbox.ID, UIDs: []uint32{1}, ToFolderID: trash.ID, Move: true}).(*CopyResult)
	if len(cr.Dest) != 1 || cr.Dest[0] != 1 {
		t.Fatalf("move: %+v", cr)
	}
	msgs, _ := s.Messages(ctx, inbox.ID)
	if len(msgs) != 1 || msgs[0].UID != 2 {
		t.Fatalf("inbox after move: %+v", msgs)
	}
	a.must(&StoreFlags{FolderID: inbox.ID, UIDs: []uint32{2}, Mode: FlagsSet, Flags: []string{`\Deleted`}})
	gone := a.must(&Expunge{FolderID: inbox.ID, OnlyDeleted: true}).([]uint32)
	if len(gone) != 1 || gone[0] != 2 {
		t.Fatalf("expunge: %v", gone)
	}
	// A new message never reuses an expunged UID.
	r = a.must(&Deliver{Targets: []Target{{MailboxID: id}}, Data: []byte("x")}).(*DeliverResult)
	if r.Placed[0].UID != 3 {
		t.Fatalf("uid after expunge = %d", r.Placed[0].UID)
	}
	mb, _ := s.MailboxByAddress(ctx, "alice@EXAMPLE.test")
	if want := int64(len("Subject: one\r\n\r\nbody\r\n") + 1); mb.UsedBytes != want {
		t.Fatalf("used bytes %d, want %d", mb.UsedBytes, want)
	}
	if _, err := a.do(&RemoveDomain{Name: "example.test"}); !IsCode(err, ErrNotEmpty) {
		t.Fatalf("remove non-empty domain: %v", err)
	}
	a.must(&RemoveMailbox{Address: "alice@example.test"})
	s.db.QueryRow("SELECT count(*) FROM blobs").Scan(&blobs)
	if blobs != 0 {
		t.Fatalf("%d blobs left after removing the mailbox", blobs)
	}
	a.must(&RemoveDomain{Name: "example.test"})
}

func TestReplayedEntriesAreSkippedAndSnapshotsRestore(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test"})
	data, _ := Encode(&AddDomain{Name: "two.test"})
	// Index 1 again: already applied, must be skipped.
	res, err := s.Apply(ctx, []Entry{{Index: 1, Data: data}})
	if err != nil || res[0].Err != nil || res[0].Value != nil {
		t.Fatalf("replay: %+v %v", res, err)
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	if err := s.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	a.must(&AddDomain{Name: "three.test"})
	if err := s.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	ds, _ := s.Domains(ctx)
	if len(ds) != 1 || ds[0].Name != "example.test" {
		t.Fatalf("after restore: %+v", ds)
	}
	if idx, _ := s.AppliedIndex(ctx); idx != 1 {
		t.Fatalf("applied index after restore = %d", idx)
	}
}

func TestCommandsSurviveEncoding(t *testing.T) {
	in := &Deliver{Targets: []Target{{MailboxID: 7, Folder: "Sent", Flags: []string{`\Seen`}}}, InternalDate: 9, Data: []byte("hello\x00world")}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	d := out.(*Deliver)
	if string(d.Data) != string(in.Data) || d.Targets[0].Folder != "Sent" || d.InternalDate != 9 {
		t.Fatalf("round trip: %+v", d)
	}
	for _, bad := range [][]byte{nil, {0xff}, {3, 'a'}, {1, 'x', 0}} {
		if _, err := Decode(bad); err == nil {
			t.Fatalf("Decode(%q) accepted", bad)
		}
	}
}

// FuzzDecode feeds arbitrary log entries to the decoder and to Apply: a
// damaged or hostile entry must be refused, never crash the FSM or
// leave the store unusable.
func FuzzDecode(f *testing.F) {
	for _, c := range []Command{&AddDomain{Name: "a.test"}, &Deliver{Data: []byte("x")}, &StoreFlags{UIDs: []uint32{1, 2}}} {
		b, _ := Encode(c)
		f.Add(b)
		f.Add(b[2:]) // unversioned, as written before CommandVersion
	}
	f.Add(futureEntry(CommandVersion+1, "add-domain", `{"name":"b.test"}`))
	f.Add(futureEntry(CommandVersion, "from-the-future", `{}`))
	f.Add([]byte{versionMark, 0x80})
	s, err := Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	var index uint64
	ctx := context.Background()
	for _, c := range []Command{&AddDomain{Name: "a.test"}, &AddMailbox{Address: "u@a.test", PasswordHash: "h"}} {
		b, _ := Encode(c)
		index++
		if _, err := s.Apply(ctx, []Entry{{Index: index, Data: b}}); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err == nil {
			if _, err := Encode(c); err != nil {
				t.Fatalf("decoded command does not encode: %v", err)
			}
		}
		index++
		_, err = s.Apply(ctx, []Entry{{Index: index, Data: b}})
		if errors.Is(err, ErrUnknownCommand) {
			// Not applied, not skipped: the store is where it was.
			if applied, _ := s.AppliedIndex(ctx); applied >= index {
				t.Fatalf("an unknown command moved the applied index to %d", applied)
			}
			return
		}
		if err != nil {
			t.Fatalf("a bad entry broke the store: %v", err)
		}
	})
}

func TestAFrozenViewCopiesOnePointInTimeWhileWritesGoOn(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "before.test"})
	v, err := s.Freeze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	// Writes are not blocked by the open view.
	a.must(&AddDomain{Name: "after.test"})
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := v.CopyTo(ctx, path); err != nil {
		t.Fatal(err)
	}
	copyStore, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer copyStore.Close()
	ds, _ := copyStore.Domains(ctx)
	if len(ds) != 1 || ds[0].Name != "before.test" {
		t.Fatalf("copy holds %+v, want only before.test", ds)
	}
	if idx, _ := copyStore.AppliedIndex(ctx); idx != 1 {
		t.Fatalf("copy applied index %d, want 1", idx)
	}
	live, _ := s.Domains(ctx)
	if len(live) != 2 {
		t.Fatalf("live store has %d domains", len(live))
	}
}

func TestRenamingAFolderTakesItsSubfoldersAlongWhateverTheScript(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test"})
	id := a.must(&AddMailbox{Address: "a@example.test", PasswordHash: "h"}).(int64)
	parent := a.must(&CreateFolder{MailboxID: id, Name: "Ärger"}).(int64)
	a.must(&CreateFolder{MailboxID: id, Name: "Ärger/sub"})
	a.must(&CreateFolder{MailboxID: id, Name: "Ärgernis"})
	a.must(&RenameFolder{FolderID: parent, NewName: "Trouble"})
	var names []string
	fs, _ := s.Folders(ctx, id)
	for _, f := range fs {
		names = append(names, f.Name)
	}
	got := strings.Join(names, ",")
	if !strings.Contains(got, "Trouble,Trouble/sub") || !strings.Contains(got, "Ärgernis") || strings.Contains(got, "Ärger/") {
		t.Fatalf("folders after rename: %s", got)
	}
}

func TestABounceGoesWithItsQueueUpdateOrNotAtAll(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test"})
	id := a.must(&AddMailbox{Address: "a@example.test", PasswordHash: "h"}).(int64)
	a.must(&Deliver{Outbound: &Outbound{ID: "Q1", Sender: "a@example.test", Recipients: []string{"x@far.test"}}, Data: []byte("original")})
	a.must(&Deliver{Outbound: &Outbound{ID: "Q2", Sender: "gone@example.test", Recipients: []string{"x@far.test"}}, Data: []byte("original 2")})

	// A retry carrying a bounce stores both.
	a.must(&QueueRetry{ID: "Q1", Recipients: []string{"x@far.test"}, NextAttempt: 99, Bounce: &Deliver{Targets: []Target{{MailboxID: id}}, Data: []byte("DSN one")}})
	inbox, _ := s.FolderByName(ctx, id, "INBOX")
	if msgs, _ := s.Messages(ctx, inbox.ID); len(msgs) != 1 {
		t.Fatalf("bounce not delivered with the retry: %d messages", len(msgs))
	}
	// A removal whose bounce names a folder that does not exist: the
	// bounce is dropped whole, the removal still happens.
	a.must(&QueueRemove{ID: "Q2", Bounce: &Deliver{Targets: []Target{{MailboxID: id}, {MailboxID: id, Folder: "Nope"}}, Data: []byte("DSN two")}})
	if msgs, _ := s.Messages(ctx, inbox.ID); len(msgs) != 1 {
		t.Fatalf("a refused bounce was half-delivered: %d messages", len(msgs))
	}
	items, _ := s.QueueItems(ctx, time.Time{})
	if len(items) != 1 || items[0].ID != "Q1" || items[0].Attempts != 1 {
		t.Fatalf("queue: %+v", items)
	}
	// The payload survives encoding.
	b, _ := Encode(&QueueRemove{ID: "Q1", Bounce: &Deliver{Data: []byte("dsn bytes")}})
	c, err := Decode(b)
	if err != nil || string(c.(*QueueRemove).Bounce.Data) != "dsn bytes" {
		t.Fatalf("decode: %+v %v", c, err)
	}
}

func TestADatabaseFileIsCopiedAsItIs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	(&applier{t: t, s: s}).must(&AddDomain{Name: "copy.test"})
	// The server is still running (the WAL holds the write): the copy has it.
	if err := CopyDatabase(ctx, filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c, err := OpenReadOnly(filepath.Join(dir, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ds, err := c.Domains(ctx); err != nil || len(ds) != 1 || ds[0].Name != "copy.test" {
		t.Fatalf("copy holds %+v, %v", ds, err)
	}
	if err := CopyDatabase(ctx, filepath.Join(dir, "none.db"), filepath.Join(dir, "c.db")); err == nil {
		t.Fatal("a missing file was copied")
	}
}
