package storage

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/storage/peclog"
)

// logStart is when the synthetic legal logs of these tests begin.
var logStart = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

// gestoreKey is a throw-away gestore key with a self-signed certificate,
// valid for the whole synthetic log.
type gestoreKey struct {
	signer crypto.Signer
	cert   *x509.Certificate
}

func newGestoreKey(t testing.TB) gestoreKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "Example PEC S.p.A.", Organization: []string{"Example PEC S.p.A."}},
		NotBefore:    time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return gestoreKey{k, cert}
}

// sign makes the head over e, signed at.
func (k gestoreKey) sign(t testing.TB, e peclog.Entry, at time.Time) peclog.Head {
	t.Helper()
	h, err := peclog.SignHead(e, at, k.signer, k.cert)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// event is the i-th event of a synthetic day at the gestore: a message
// accepted, its busta sent, delivered.
func event(i int, at time.Time) peclog.Entry {
	evs := []peclog.Event{peclog.EventAccettazione, peclog.EventBustaTrasporto, peclog.EventConsegna}
	n := i / len(evs)
	return peclog.Entry{
		Time:       at,
		Event:      evs[i%len(evs)],
		MsgID:      fmt.Sprintf("opec210.20250301.%d@pec.example.it", n),
		RelatedIDs: []string{fmt.Sprintf("<client-%d@mua.example>", n)},
		Sender:     fmt.Sprintf("Mittente%d@pec.example.it", n%3),
		Recipients: []string{fmt.Sprintf("dest%d@pec.other.test", n)},
		Subject:    fmt.Sprintf("Fattura n. %d — città", n),
		Gestore:    "Example PEC S.p.A.",
	}
}

// everything reads the whole log and its heads.
func everything(t *testing.T, s *Store) ([]peclog.Entry, []peclog.Head) {
	t.Helper()
	ctx := context.Background()
	var entries []peclog.Entry
	if err := s.LogEach(ctx, func(e peclog.Entry) error { entries = append(entries, e); return nil }); err != nil {
		t.Fatal(err)
	}
	heads, err := s.LogHeads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return entries, heads
}

func mustVerify(t *testing.T, s *Store) peclog.Report {
	t.Helper()
	entries, heads := everything(t, s)
	r := peclog.VerifyChain(entries, heads, nil)
	if !r.OK {
		t.Fatalf("the stored log does not verify:\n%s", r)
	}
	return r
}

func TestEventsAppendedByManyCommandsFormOneVerifiableChain(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	key := newGestoreKey(t)

	got := a.must(&AppendLog{Entries: []peclog.Entry{event(0, logStart), event(1, logStart.Add(time.Second))}}).([]peclog.Entry)
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 || !bytes.Equal(got[1].PrevHash, got[0].Hash) ||
		!bytes.Equal(got[0].PrevHash, peclog.ZeroHash()) {
		t.Fatalf("first append: %+v", got)
	}
	// Whatever chain fields the proposer sends are ignored.
	forged := event(2, logStart.Add(2*time.Second))
	forged.Seq, forged.PrevHash, forged.Hash = 77, []byte("x"), []byte("y")
	got = a.must(&AppendLog{Entries: []peclog.Entry{forged}}).([]peclog.Entry)
	if got[0].Seq != 3 || !bytes.Equal(got[0].Hash, peclog.HashEntry(got[0])) {
		t.Fatalf("chain fields not recomputed: %+v", got[0])
	}
	// Several commands in one raft batch (one SQLite transaction), one of
	// them refused: the refused one adds nothing, the others chain on.
	var batch []Entry
	for i, c := range []Command{
		&AppendLog{Entries: []peclog.Entry{event(3, logStart.Add(3*time.Second))}},
		&AppendLog{Entries: []peclog.Entry{event(4, logStart.Add(4*time.Second)), {Event: peclog.EventConsegna}}},
		&AppendLog{Entries: []peclog.Entry{event(5, logStart.Add(5*time.Second)), event(6, logStart.Add(6*time.Second))}},
	} {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, Entry{Index: a.index + uint64(i) + 1, Data: data})
	}
	a.index += uint64(len(batch))
	res, err := s.Apply(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[2].Err != nil || !IsCode(res[1].Err, ErrInvalid) {
		t.Fatalf("batch results: %+v", res)
	}
	if last := res[2].Value.([]peclog.Entry); last[1].Seq != 6 {
		t.Fatalf("the batch's last entry is Seq %d, want 6", last[1].Seq)
	}

	entries, _ := everything(t, s)
	if len(entries) != 6 {
		t.Fatalf("%d entries stored, want 6", len(entries))
	}
	for i, e := range entries {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has Seq %d", i, e.Seq)
		}
	}
	if entries[3].MsgID != event(5, time.Time{}).MsgID || entries[3].Subject != "Fattura n. 1 — città" {
		t.Fatalf("entry 4 is %+v", entries[3])
	}
	last, ok, err := s.LogLast(ctx)
	if err != nil || !ok || last.Seq != 6 || !bytes.Equal(last.Hash, entries[5].Hash) {
		t.Fatalf("LogLast: %+v %v %v", last, ok, err)
	}
	a.must(&PutLogHead{Head: key.sign(t, last, logStart.Add(time.Hour))})
	r := mustVerify(t, s)
	if r.Entries != 6 || r.Heads != 1 {
		t.Fatalf("report: %s", r)
	}
}

func TestTwoReplicasApplyingTheSameLogHoldTheSameChain(t *testing.T) {
	s1, a1 := newStore(t)
	s2, a2 := newStore(t)
	for i := range 5 {
		c := &AppendLog{Entries: []peclog.Entry{event(i, logStart.Add(time.Duration(i)*time.Minute+123456789))}}
		a1.must(c)
		a2.must(c)
	}
	e1, _ := everything(t, s1)
	e2, _ := everything(t, s2)
	if !bytes.Equal(e1[4].Hash, e2[4].Hash) {
		t.Fatal("the same commands made different chains")
	}
	if !e1[0].Time.Equal(logStart.Add(123 * time.Millisecond)) {
		t.Fatalf("time kept as %v, want milliseconds", e1[0].Time)
	}
}

func TestAnEntryIsStoredExactlyAsHashed(t *testing.T) {
	s, a := newStore(t)
	odd := peclog.Entry{
		Time:       logStart,
		Event:      peclog.Event("evento-sconosciuto"),
		MsgID:      "id\x00with nul",
		RelatedIDs: []string{"", "<a@b>", `"quoted" \ & <html>`},
		Sender:     "ÀÉÎ@pec.example.it",
		Recipients: nil,
		Subject:    "=?utf-8?q?Oggetto?= \r\n\ttab 日本語 \U0001F600",
		Detail:     strings.Repeat("x", 10000),
	}
	a.must(&AppendLog{Entries: []peclog.Entry{odd}})
	entries, _ := everything(t, s)
	if len(entries) != 1 || entries[0].MsgID != odd.MsgID || entries[0].Subject != odd.Subject ||
		len(entries[0].RelatedIDs) != 3 || entries[0].RelatedIDs[2] != odd.RelatedIDs[2] {
		t.Fatalf("stored %+v", entries)
	}
	mustVerify(t, s)
	// Invalid UTF-8 is replaced when the command is encoded for the raft
	// log, before it is hashed: what is stored is what was hashed.
	got := a.must(&AppendLog{Entries: []peclog.Entry{{Time: logStart, Event: "x", Recipients: []string{"a\xffb"}}}}).([]peclog.Entry)
	if got[0].Recipients[0] != "a\uFFFDb" {
		t.Fatalf("stored recipient %q", got[0].Recipients[0])
	}
	mustVerify(t, s)
	for _, bad := range []peclog.Entry{{Event: peclog.EventConsegna}, {Time: logStart}} {
		if _, err := a.do(&AppendLog{Entries: []peclog.Entry{bad}}); !IsCode(err, ErrInvalid) {
			t.Fatalf("append %+v: %v", bad, err)
		}
	}
	if _, err := a.do(&AppendLog{}); !IsCode(err, ErrInvalid) {
		t.Fatalf("empty append: %v", err)
	}
}

func TestASignedHeadMustCoverAStoredEntryInOrder(t *testing.T) {
	s, a := newStore(t)
	key := newGestoreKey(t)
	stored := a.must(&AppendLog{Entries: []peclog.Entry{event(0, logStart), event(1, logStart.Add(time.Minute)), event(2, logStart.Add(2*time.Minute))}}).([]peclog.Entry)

	// A head for an entry that is not in the log.
	ghost := stored[2]
	ghost.Seq = 4
	ghost.PrevHash = stored[2].Hash
	ghost.Hash = peclog.HashEntry(ghost)
	if _, err := a.do(&PutLogHead{Head: key.sign(t, ghost, logStart.Add(time.Hour))}); !IsCode(err, ErrNotFound) {
		t.Fatalf("head for unknown Seq 4: %v", err)
	}
	// A head over different content at an existing Seq.
	other := stored[1]
	other.Subject = "altro"
	other.Hash = peclog.HashEntry(other)
	if _, err := a.do(&PutLogHead{Head: key.sign(t, other, logStart.Add(time.Hour))}); !IsCode(err, ErrInvalid) {
		t.Fatalf("head over other content: %v", err)
	}
	// A damaged signature.
	h := key.sign(t, stored[1], logStart.Add(time.Hour))
	h.Signature[len(h.Signature)/2] ^= 1
	if _, err := a.do(&PutLogHead{Head: h}); !IsCode(err, ErrInvalid) {
		t.Fatalf("bad signature: %v", err)
	}
	if _, err := a.do(&PutLogHead{Head: peclog.Head{}}); !IsCode(err, ErrInvalid) {
		t.Fatalf("zero head: %v", err)
	}

	a.must(&PutLogHead{Head: key.sign(t, stored[1], logStart.Add(time.Hour))})
	if _, err := a.do(&PutLogHead{Head: key.sign(t, stored[1], logStart.Add(2*time.Hour))}); !IsCode(err, ErrExists) {
		t.Fatalf("second head for Seq 2: %v", err)
	}
	if _, err := a.do(&PutLogHead{Head: key.sign(t, stored[0], logStart.Add(2*time.Hour))}); !IsCode(err, ErrInvalid) {
		t.Fatalf("head for an earlier Seq: %v", err)
	}
	if _, err := a.do(&PutLogHead{Head: key.sign(t, stored[2], logStart.Add(30*time.Minute))}); !IsCode(err, ErrInvalid) {
		t.Fatalf("head signed before the previous one: %v", err)
	}
	a.must(&PutLogHead{Head: key.sign(t, stored[2], logStart.Add(2*time.Hour))})
	if r := mustVerify(t, s); r.Heads != 2 {
		t.Fatalf("report: %s", r)
	}
}

// fillDays appends perDay events a day for days days, signing the head
// after each day, as the keeper does.
func fillDays(t *testing.T, a *applier, key gestoreKey, days, perDay int) {
	t.Helper()
	for d := range days {
		var es []peclog.Entry
		for i := range perDay {
			es = append(es, event(d*perDay+i, logStart.AddDate(0, 0, d).Add(time.Duration(i)*time.Hour)))
		}
		stored := a.must(&AppendLog{Entries: es}).([]peclog.Entry)
		last := stored[len(stored)-1]
		a.must(&PutLogHead{Head: key.sign(t, last, last.Time.Add(time.Hour))})
	}
}

func TestPurgingOldEntriesLeavesAChainThatStillVerifies(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	key := newGestoreKey(t)
	if r := a.must(&PurgeLog{Before: logStart.UnixMilli()}).(PurgeResult); r != (PurgeResult{}) {
		t.Fatalf("purging an empty log: %+v", r)
	}
	fillDays(t, a, key, 10, 4)

	// Nothing is old enough yet.
	if r := a.must(&PurgeLog{Before: logStart.Add(time.Hour).UnixMilli()}).(PurgeResult); r.Removed != 0 || r.KeepFrom != 1 {
		t.Fatalf("early purge: %+v", r)
	}
	// Days 0-3 are older than the cutoff: their 16 entries go, the head
	// over entry 16 stays as the anchor of entry 17.
	cutoff := logStart.AddDate(0, 0, 4)
	entries, heads := everything(t, s)
	want := peclog.Purge(entries, heads, cutoff)
	r := a.must(&PurgeLog{Before: cutoff.UnixMilli()}).(PurgeResult)
	if r.KeepFrom != want || r.KeepFrom != 17 || r.Removed != 16 {
		t.Fatalf("purge: %+v, peclog.Purge says %d", r, want)
	}
	entries, heads = everything(t, s)
	if entries[0].Seq != 17 || len(entries) != 24 || heads[0].Seq != 16 || len(heads) != 7 {
		t.Fatalf("after purge: entries from %d (%d), heads from %d (%d)", entries[0].Seq, len(entries), heads[0].Seq, len(heads))
	}
	if rep := mustVerify(t, s); rep.Entries != 24 {
		t.Fatalf("report: %s", rep)
	}
	// Purging again at the same cutoff removes nothing more; appending
	// goes on from the end.
	if r := a.must(&PurgeLog{Before: cutoff.UnixMilli()}).(PurgeResult); r.Removed != 0 || r.KeepFrom != 17 {
		t.Fatalf("second purge: %+v", r)
	}
	got := a.must(&AppendLog{Entries: []peclog.Entry{event(99, logStart.AddDate(0, 0, 10))}}).([]peclog.Entry)
	if got[0].Seq != 41 {
		t.Fatalf("append after purge: Seq %d", got[0].Seq)
	}
	// However far the cutoff, the newest entries and their anchor stay.
	a.must(&PurgeLog{Before: logStart.AddDate(5, 0, 0).UnixMilli()})
	entries, heads = everything(t, s)
	if len(entries) != 1 || entries[0].Seq != 41 || len(heads) != 1 || heads[0].Seq != 40 {
		t.Fatalf("after the far purge: %d entries from %d, %d heads", len(entries), entries[0].Seq, len(heads))
	}
	if _, err := s.LogEntries(ctx, LogFilter{}); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, s)
}

func TestATamperedEntryIsNeverPurgedAway(t *testing.T) {
	s, a := newStore(t)
	key := newGestoreKey(t)
	fillDays(t, a, key, 6, 3)
	// Someone rewrites the subject of entry 5 in the database.
	if _, err := s.db.Exec("UPDATE pec_log SET subject='nascosto' WHERE seq=5"); err != nil {
		t.Fatal(err)
	}
	r := a.must(&PurgeLog{Before: logStart.AddDate(0, 0, 5).UnixMilli()}).(PurgeResult)
	if r.KeepFrom != 4 || r.Removed != 3 {
		t.Fatalf("purge across a tampered entry: %+v", r)
	}
	entries, heads := everything(t, s)
	rep := peclog.VerifyChain(entries, heads, nil)
	if rep.OK || rep.Problems[0].Seq != 5 {
		t.Fatalf("the tampering is no longer visible:\n%s", rep)
	}
}

func TestSearchingTheLegalLog(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	var es []peclog.Entry
	for i := range 12 {
		es = append(es, event(i, logStart.Add(time.Duration(i)*time.Hour)))
	}
	a.must(&AppendLog{Entries: es})
	seqs := func(f LogFilter) string {
		t.Helper()
		got, err := s.LogEntries(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range got {
			out = append(out, fmt.Sprint(e.Seq))
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		name string
		f    LogFilter
		want string
	}{
		{"a PEC msgid", LogFilter{MsgID: "opec210.20250301.1@pec.example.it"}, "4,5,6"},
		{"the client's Message-ID, in brackets", LogFilter{MsgID: "<client-2@mua.example>"}, "7,8,9"},
		{"the client's Message-ID, bare", LogFilter{MsgID: "client-2@mua.example"}, "7,8,9"},
		{"an unknown id", LogFilter{MsgID: "nobody@nowhere"}, ""},
		{"a sender in another case", LogFilter{Sender: "MITTENTE1@PEC.example.it"}, "4,5,6"},
		{"a time range", LogFilter{Since: logStart.Add(2 * time.Hour), Until: logStart.Add(4 * time.Hour)}, "3,4"},
		{"since and a limit", LogFilter{Since: logStart.Add(9 * time.Hour), Limit: 2}, "10,11"},
		{"sender and time", LogFilter{Sender: "mittente0@pec.example.it", Since: logStart.Add(5 * time.Hour)}, "10,11,12"},
	} {
		if got := seqs(c.f); got != c.want {
			t.Errorf("%s: entries %q, want %q", c.name, got, c.want)
		}
	}
	stop := errors.New("enough")
	n := 0
	err := s.LogEach(ctx, func(peclog.Entry) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("LogEach did not stop at the callback's error: %v after %d", err, n)
	}
}

func TestTheLogTravelsInSnapshotsAndOpensReadOnly(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	key := newGestoreKey(t)
	fillDays(t, a, key, 2, 2)
	snap := filepath.Join(t.TempDir(), "snap.db")
	if err := s.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	a.must(&AppendLog{Entries: []peclog.Entry{event(9, logStart.AddDate(0, 0, 3))}}) // the log moves on after the snapshot...
	if err := s.Restore(ctx, snap); err != nil {
		t.Fatal(err)
	}
	// ...and the restore brings back the log as it was then.
	if r := mustVerify(t, s); r.Entries != 4 || r.Heads != 2 {
		t.Fatalf("after restore: %s", r)
	}

	ro, err := OpenReadOnly(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if last, ok, err := ro.LogLast(ctx); err != nil || !ok || last.Seq != 4 {
		t.Fatalf("read-only LogLast: %+v %v %v", last, ok, err)
	}
	data, _ := Encode(&AppendLog{Entries: []peclog.Entry{event(0, logStart)}})
	if _, err := ro.Apply(ctx, []Entry{{Index: 100, Data: data}}); err == nil {
		t.Fatal("a read-only store applied a command")
	}
	if _, err := OpenReadOnly(filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Fatal("opened a missing database")
	}
}

func TestLogCommandsSurviveEncoding(t *testing.T) {
	key := newGestoreKey(t)
	e := peclog.Next(nil, event(0, logStart))
	for _, c := range []Command{
		&AppendLog{Entries: []peclog.Entry{e}},
		&PutLogHead{Head: key.sign(t, e, logStart.Add(time.Hour))},
		&PurgeLog{Before: 1234567890123},
	} {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Op(), err)
		}
		b2, _ := Encode(out)
		if !bytes.Equal(b, b2) {
			t.Fatalf("%s does not round-trip:\n%s\n%s", c.Op(), b, b2)
		}
	}
}
