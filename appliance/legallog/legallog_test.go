package legallog

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to tamper with the database behind the store's back

	"sigillo/appliance/apptest"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

var start = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// certificate makes a certificate for key, signed by parent's key (or
// self-signed when parent is nil).
func certificate(t testing.TB, cn string, key crypto.Signer, ca bool, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Example PEC S.p.A."}},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: ca,
		IsCA:                  ca,
	}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ecKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// countingProposer applies commands to the store and counts them by op.
type countingProposer struct {
	*apptest.Proposer
	mu  sync.Mutex
	ops map[string]int
}

func (p *countingProposer) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	p.mu.Lock()
	p.ops[cmd.Op()]++
	p.mu.Unlock()
	return p.Proposer.Apply(ctx, cmd)
}

func (p *countingProposer) count(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ops[op]
}

type fixture struct {
	path  string
	store *storage.Store
	prop  *countingProposer
	clock *apptest.Clock
	k     *Keeper
	n     int // events appended so far
}

// newFixture is a one-node gestore's store with a keeper holding a
// self-signed ECDSA gestore key.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sigillo.db")
	s, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	key := ecKey(t)
	f := &fixture{path: path, store: s, clock: apptest.NewClock(start),
		prop: &countingProposer{Proposer: apptest.NewProposer(s), ops: map[string]int{}}}
	f.k = &Keeper{Store: s, Proposer: f.prop, Signer: key, Chain: []*x509.Certificate{certificate(t, "gestore", key, false, nil, nil)},
		Now: f.clock.Now}
	return f
}

// appendEvents logs n events at the clock's time, a second apart.
func (f *fixture) appendEvents(t *testing.T, n int) []peclog.Entry {
	t.Helper()
	var es []peclog.Entry
	for i := range n {
		id := f.n / 2
		es = append(es, peclog.Entry{
			Time:       f.clock.Now().Add(time.Duration(i) * time.Second),
			Event:      []peclog.Event{peclog.EventAccettazione, peclog.EventConsegna}[f.n%2],
			MsgID:      fmt.Sprintf("opec210.%d@pec.example.it", id),
			RelatedIDs: []string{fmt.Sprintf("<mua-%d@client.example>", id)},
			Sender:     "Mario.Rossi@pec.example.it",
			Recipients: []string{"ufficio@pec.other.test"},
			Subject:    fmt.Sprintf("Pratica %d", id),
			Gestore:    "Example PEC S.p.A.",
		})
		f.n++
	}
	return f.prop.Must(t, &storage.AppendLog{Entries: es}).([]peclog.Entry)
}

func (f *fixture) heads(t *testing.T) []peclog.Head {
	t.Helper()
	hs, err := f.store.LogHeads(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func (f *fixture) tick(t *testing.T) {
	t.Helper()
	if err := f.k.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func mustVerify(t *testing.T, s *storage.Store, roots *x509.CertPool) peclog.Report {
	t.Helper()
	r, err := Verify(context.Background(), s, roots)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK {
		t.Fatalf("the log does not verify:\n%s", r)
	}
	return r
}

func TestTheKeeperSignsTheNewestEntryAtMostOnceADay(t *testing.T) {
	f := newFixture(t)
	f.tick(t)
	if hs := f.heads(t); len(hs) != 0 {
		t.Fatalf("an empty log got %d heads", len(hs))
	}
	// The first events are signed at the next step.
	f.appendEvents(t, 3)
	f.clock.Add(Interval)
	f.tick(t)
	hs := f.heads(t)
	if len(hs) != 1 || hs[0].Seq != 3 || !hs[0].Time.Equal(f.clock.Now()) {
		t.Fatalf("heads after the first events: %+v", hs)
	}
	// More events during the day wait for the head to be a day old.
	for range 23 {
		f.clock.Add(Interval)
		f.appendEvents(t, 2)
		f.tick(t)
	}
	if hs := f.heads(t); len(hs) != 1 {
		t.Fatalf("%d heads within a day", len(hs))
	}
	f.clock.Add(Interval)
	f.tick(t)
	hs = f.heads(t)
	if len(hs) != 2 || hs[1].Seq != 49 {
		t.Fatalf("heads a day later: %+v", hs)
	}
	// Nothing new: nothing to sign, however long it stays quiet.
	f.clock.Add(5 * 24 * time.Hour)
	f.tick(t)
	if hs := f.heads(t); len(hs) != 2 {
		t.Fatalf("a quiet log was signed again: %d heads", len(hs))
	}
	// After the quiet days, a new event is signed at the next step.
	f.appendEvents(t, 1)
	f.clock.Add(Interval)
	f.tick(t)
	if hs := f.heads(t); len(hs) != 3 || hs[2].Seq != 50 {
		t.Fatalf("heads after the quiet days: %+v", hs)
	}
	r := mustVerify(t, f.store, nil)
	if r.Entries != 50 || r.Heads != 3 {
		t.Fatalf("report: %s", r)
	}
	if !strings.Contains(r.String(), "log OK: 50 entries, 3 signed heads") {
		t.Fatalf("report text: %q", r.String())
	}
}

func TestHeadsCarryTheCertificateChainUpToTheRoot(t *testing.T) {
	f := newFixture(t)
	rootKey, interKey := ecKey(t), ecKey(t)
	leafKey, err := rsa.GenerateKey(rand.Reader, 2048) // the gestore key may be RSA too
	if err != nil {
		t.Fatal(err)
	}
	root := certificate(t, "AgID test root", rootKey, true, nil, nil)
	inter := certificate(t, "Gestore CA", interKey, true, root, rootKey)
	leaf := certificate(t, "posta-certificata@pec.example.it", leafKey, false, inter, interKey)
	f.k.Signer, f.k.Chain = leafKey, []*x509.Certificate{leaf, inter}

	f.appendEvents(t, 4)
	f.tick(t)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if r := mustVerify(t, f.store, roots); r.Heads != 1 {
		t.Fatalf("report: %s", r)
	}
	// Against somebody else's root the same log is not trusted.
	other := x509.NewCertPool()
	other.AddCert(certificate(t, "another root", ecKey(t), true, nil, nil))
	r, err := Verify(context.Background(), f.store, other)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || !strings.Contains(r.String(), "not trusted at signing time") {
		t.Fatalf("a foreign root was accepted:\n%s", r)
	}
}

func TestTheKeeperPurgesWhatIsPastTheRetentionOnceADay(t *testing.T) {
	f := newFixture(t)
	// 31 months of a very quiet gestore: two events every ten days, each
	// pair signed at once.
	for f.clock.Now().Before(start.AddDate(0, 31, 0)) {
		f.appendEvents(t, 2)
		f.k.lastPurge = f.clock.Now() // no purging while the history is written
		f.tick(t)
		f.clock.Add(10 * 24 * time.Hour)
	}
	before, _ := Verify(context.Background(), f.store, nil)
	f.k.lastPurge = time.Time{}
	purges := f.prop.count("pec-log-purge")
	f.tick(t)
	after := mustVerify(t, f.store, nil)
	if after.Entries >= before.Entries || after.Heads >= before.Heads {
		t.Fatalf("nothing purged: %d/%d entries/heads before, %d/%d after", before.Entries, before.Heads, after.Entries, after.Heads)
	}
	cutoff := peclog.RetentionCutoff(f.clock.Now())
	var first peclog.Entry
	f.store.LogEach(context.Background(), func(e peclog.Entry) error {
		if first.Seq == 0 {
			first = e
		}
		return nil
	})
	// What remains starts within a signing interval of the cutoff: nothing
	// younger than 30 months went, little older stayed.
	if first.Time.Before(cutoff.Add(-11*24*time.Hour)) || first.Time.After(cutoff.Add(11*24*time.Hour)) {
		t.Fatalf("the log starts at %v, the cutoff is %v", first.Time, cutoff)
	}
	if f.prop.count("pec-log-purge") <= purges {
		t.Fatal("no purge command")
	}
	// Within the same day the keeper does not purge again.
	purges = f.prop.count("pec-log-purge")
	f.clock.Add(Interval)
	f.tick(t)
	if n := f.prop.count("pec-log-purge"); n != purges {
		t.Fatalf("purged again within a day: %d commands", n-purges)
	}
	f.clock.Add(PurgeEvery)
	f.tick(t)
	if n := f.prop.count("pec-log-purge"); n == purges {
		t.Fatal("no purge the next day")
	}
}

func TestRunStepsHourlyByTheClock(t *testing.T) {
	f := newFixture(t)
	f.k.Poll = time.Millisecond
	f.appendEvents(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.k.Run(ctx) }()

	waitHeads := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for len(f.heads(t)) != n {
			if time.Now().After(deadline) {
				t.Fatalf("still %d heads, want %d", len(f.heads(t)), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitHeads(1) // signed at start
	f.appendEvents(t, 2)
	f.clock.Add(SignAfter - time.Minute)
	time.Sleep(50 * time.Millisecond)
	if n := len(f.heads(t)); n != 1 {
		t.Fatalf("signed again before a day: %d heads", n)
	}
	f.clock.Add(Interval)
	waitHeads(2)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	if err := (&Keeper{}).Run(context.Background()); err == nil {
		t.Fatal("a keeper without store or key ran")
	}
}

func TestAStepThatCannotBeAppliedFailsAndTheNextOneCatchesUp(t *testing.T) {
	f := newFixture(t)
	f.appendEvents(t, 1)
	f.prop.FailWith(errors.New("no quorum"))
	if err := f.k.Tick(context.Background()); err == nil || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("Tick without quorum: %v", err)
	}
	f.prop.FailWith(nil)
	f.clock.Add(Interval)
	f.tick(t)
	if hs := f.heads(t); len(hs) != 1 {
		t.Fatalf("%d heads after the quorum came back", len(hs))
	}
	// A certificate that has expired signs nothing.
	f.appendEvents(t, 1)
	f.clock.Add(20 * 365 * 24 * time.Hour)
	if err := f.k.Tick(context.Background()); err == nil || !strings.Contains(err.Error(), "validity") {
		t.Fatalf("Tick with an expired certificate: %v", err)
	}
}

func TestAnEditedEntryIsReportedAtItsSeq(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.appendEvents(t, 6)
	f.tick(t)
	mustVerify(t, f.store, nil)

	db, err := sql.Open("sqlite", f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("UPDATE pec_log SET recipients='[\"altro@pec.other.test\"]' WHERE seq=4"); err != nil {
		t.Fatal(err)
	}
	r, err := Verify(ctx, f.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || len(r.Problems) != 1 || r.Problems[0].Seq != 4 || !strings.Contains(r.Problems[0].What, "altered") {
		t.Fatalf("edit not reported at seq 4:\n%s", r)
	}
	// Deleting an entry in the middle breaks the chain there.
	if _, err := db.Exec("DELETE FROM pec_log WHERE seq=2"); err != nil {
		t.Fatal(err)
	}
	r, _ = Verify(ctx, f.store, nil)
	if r.OK || r.Problems[0].Seq != 3 || !strings.Contains(r.Problems[0].What, "gap") {
		t.Fatalf("deletion not reported at seq 3:\n%s", r)
	}
	// A cancelled verification says so rather than giving a verdict.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Verify(cctx, f.store, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Verify: %v", err)
	}
}

func TestSearchFindsAMessagesEventsByAnyOfItsIDs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.appendEvents(t, 6)
	for _, id := range []string{"opec210.1@pec.example.it", "<mua-1@client.example>", "mua-1@client.example"} {
		recs, err := Search(ctx, f.store, storage.LogFilter{MsgID: id})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0].Seq != 3 || recs[1].Event != string(peclog.EventConsegna) || len(recs[0].Hash) != 64 {
			t.Fatalf("search %s: %+v", id, recs)
		}
	}
	recs, err := Search(ctx, f.store, storage.LogFilter{Sender: "mario.rossi@PEC.EXAMPLE.IT", Limit: 4})
	if err != nil || len(recs) != 4 {
		t.Fatalf("search by sender: %d %v", len(recs), err)
	}
}
