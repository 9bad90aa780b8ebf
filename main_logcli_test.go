package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/json"
	"math/big"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/config"
	"sigillo/appliance/legallog"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// logEvents writes a message's legal log events, and a signed head over
// them, straight into the database of the stopped instance (the subject is
// entry 2's alone): no PEC traffic
// produces events yet. The commands are applied at index 0, which Apply
// applies without moving the applied index, so the raft log and the store
// stay in step when the server starts again.
func logEvents(t *testing.T, in *instance, subject string) {
	t.Helper()
	cfg, err := config.Load(in.config)
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(appliance.DatabaseFile(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	apply := func(c storage.Command) any {
		t.Helper()
		data, err := storage.Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Apply(context.Background(), []storage.Entry{{Index: 0, Data: data}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("%s: %v %v", c.Op(), err, res)
		}
		return res[0].Value
	}
	at := time.Now().Add(-2 * time.Hour)
	ev := func(i int, e peclog.Event, msgid, subj string) peclog.Entry {
		return peclog.Entry{Time: at.Add(time.Duration(i) * time.Minute), Event: e, MsgID: msgid,
			RelatedIDs: []string{"<mua-1@client.example>"}, Sender: "mario.rossi@pec.example.test",
			Recipients: []string{"ufficio@pec.other.test"}, Subject: subj, Gestore: "Example PEC S.p.A."}
	}
	apply(&storage.AppendLog{Entries: []peclog.Entry{
		ev(0, peclog.EventAccettazione, "opec1.aaa@pec.example.test", "Altro messaggio"),
		ev(1, peclog.EventAccettazione, "opec1.bbb@pec.example.test", subject),
	}})
	stored := apply(&storage.AppendLog{Entries: []peclog.Entry{
		ev(2, peclog.EventBustaTrasporto, "opec1.bbb@pec.example.test", "Rendiconto"),
		ev(3, peclog.EventConsegna, "opec1.bbb@pec.example.test", "Rendiconto"),
	}}).([]peclog.Entry)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example PEC S.p.A."},
		NotBefore: at.Add(-time.Hour), NotAfter: at.Add(48 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	h, err := peclog.SignHead(stored[1], at.Add(time.Hour), key, cert)
	if err != nil {
		t.Fatal(err)
	}
	apply(&storage.PutLogHead{Head: h})
}

func TestLogSearchAndVerifyWithAndWithoutTheServer(t *testing.T) {
	const subject = "Rendiconto QZX-4711"
	in := newInstance(t, "pec.example.test", "")
	in.start()
	if out := in.cli("", "log", "verify"); !strings.Contains(out, "log OK: 0 entries, 0 signed heads") {
		t.Fatalf("empty log: %q", out)
	}
	in.stop(syscall.SIGTERM)
	logEvents(t, in, subject)

	// Through the running server.
	in.start()
	out := in.cli("", "log", "search", "--msgid", "opec1.bbb@pec.example.test")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.HasPrefix(lines[1], "2 ") ||
		!strings.Contains(lines[1], subject) || !strings.Contains(lines[3], "consegna") {
		t.Fatalf("search by msgid:\n%s", out)
	}
	var recs []legallog.Record
	out = in.cli("", "log", "search", "--json", "--from", "MARIO.ROSSI@pec.example.test", "--since", time.Now().Add(-24*time.Hour).Format(time.DateOnly))
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != 4 || recs[3].Seq != 4 || len(recs[3].Hash) != 64 {
		t.Fatalf("search by sender, JSON: %v\n%s", err, out)
	}
	if out := in.cli("", "log", "search", "--msgid", "<mua-1@client.example>", "--limit", "1"); strings.Count(out, "\n") != 2 {
		t.Fatalf("search with a limit:\n%s", out)
	}
	if out := in.cli("", "log", "verify"); !strings.Contains(out, "log OK: 4 entries, 1 signed head") {
		t.Fatalf("verify through the server: %q", out)
	}
	if _, err := in.try("", "log", "search", "--since", "last week"); err == nil || !strings.Contains(err.Error(), "use a date like") {
		t.Fatalf("a bad --since: %v", err)
	}
	in.stop(syscall.SIGTERM)

	// Without it, on the database file.
	if out := in.cli("", "log", "search", "--msgid", "opec1.aaa@pec.example.test"); !strings.Contains(out, "Altro messaggio") {
		t.Fatalf("offline search:\n%s", out)
	}
	if out := in.cli("", "log", "verify"); !strings.Contains(out, "log OK: 4 entries, 1 signed head") {
		t.Fatalf("offline verify: %q", out)
	}

	// Someone changes one letter of the subject of entry 2 in the file.
	cfg, err := config.Load(in.config)
	if err != nil {
		t.Fatal(err)
	}
	path := appliance.DatabaseFile(cfg)
	checkpoint(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte(subject)); n != 1 {
		t.Fatalf("the subject is in the file %d times, want once", n)
	}
	i := bytes.Index(data, []byte(subject)) + strings.Index(subject, "Q")
	data[i] = 'O'
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = in.try("", "log", "verify")
	if err == nil {
		t.Fatalf("verify passed a log edited on disk:\n%s", out)
	}
	all := out + err.Error()
	if !strings.Contains(all, "log BROKEN: 4 entries") || !strings.Contains(all, "first problem at seq 2: content does not match") {
		t.Fatalf("the broken entry is not named:\n%s", all)
	}
	// The search still shows what the file now says.
	if out := in.cli("", "log", "search", "--msgid", "opec1.bbb@pec.example.test"); !strings.Contains(out, "Rendiconto OZX-4711") {
		t.Fatalf("offline search after the edit:\n%s", out)
	}
}

// checkpoint moves everything in the write-ahead log into the database file
// and empties it, so that the file alone holds the data.
func checkpoint(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var busy, logFrames, done int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil || busy != 0 {
		t.Fatalf("checkpoint: busy %d: %v", busy, err)
	}
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() != 0 {
		t.Fatalf("the write-ahead log still holds %d bytes", st.Size())
	}
}
