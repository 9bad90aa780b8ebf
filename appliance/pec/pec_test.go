package pec

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/passwd"
	"sigillo/appliance/pecdir"
	"sigillo/appliance/pecverify"
	"sigillo/appliance/signer"
	"sigillo/storage"
)

func mustHash(t testing.TB) string {
	t.Helper()
	h, err := passwd.Hash("pw", passwd.Params{Memory: 64, Time: 1, Threads: 1})
	must(t, err)
	return h
}
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
func has(b []byte, s string) bool        { return bytes.Contains(b, []byte(s)) }
func hasNot(b []byte, s string) bool     { return !has(b, s) }
func lines(b []byte) string              { return strings.ReplaceAll(string(b), "\r\n", "\n") }
func subjectOf(m []byte) string          { h, _, _ := signer.ParseHeader(m); return h.Get("subject") }
func headerOf(m []byte, k string) string { h, _, _ := signer.ParseHeader(m); return h.Get(k) }

// site is one gestore with its own store, key and clock.
type site struct {
	t      testing.TB
	g      *Gestore
	store  *storage.Store
	prop   *apptest.Proposer
	cert   *x509.Certificate
	clock  *apptest.Clock
	domain string
}

func newSite(t testing.TB, domain, provider string, clk *apptest.Clock) *site {
	t.Helper()
	return newSiteKey(t, domain, provider, clk, nil)
}

// newSiteKey is newSite with the gestore's key and certificate given (a
// PEM file as signer writes it); nil makes new ones.
func newSiteKey(t testing.TB, domain, provider string, clk *apptest.Clock, keyPEM []byte) *site {
	t.Helper()
	dir := t.TempDir()
	st, err := storage.Open(filepath.Join(dir, "db"))
	must(t, err)
	t.Cleanup(func() { st.Close() })
	sc := signer.Config{KeyFile: filepath.Join(dir, "gestore.pem")}
	if keyPEM != nil {
		must(t, os.WriteFile(sc.KeyFile, keyPEM, 0o600))
	}
	service := "posta-certificata@" + domain
	_, err = signer.Init(sc, signer.InitOptions{ProviderName: provider, ServiceAddress: service, Now: clk.Now().Add(-time.Hour)})
	must(t, err)
	sg, err := signer.Open(sc, nil)
	must(t, err)
	t.Cleanup(func() { sg.Close() })
	s := &site{t: t, store: st, prop: apptest.NewProposer(st), cert: sg.Certificate(), clock: clk, domain: domain}
	s.g = &Gestore{Provider: provider, Service: service, Signer: sg, Chain: sg.Chain(), Store: st,
		MaxBytes: 30_000_000, Now: clk.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s.apply(&storage.AddDomain{Name: domain, PEC: true})
	return s
}

func (s *site) apply(cmd storage.Command) any {
	s.t.Helper()
	v, err := s.prop.Apply(context.Background(), cmd)
	must(s.t, err)
	return v.Value
}

func (s *site) mailbox(addr string, quota int64) {
	s.t.Helper()
	s.apply(&storage.AddMailbox{Address: addr, PasswordHash: mustHash(s.t), QuotaBytes: quota, At: s.clock.Now().Unix()})
}

// entry is this gestore's directory entry.
func (s *site) entry() pecdir.Provider {
	return pecdir.Provider{Name: s.g.Provider, MailReceipt: s.g.Service, ManagedDomains: []string{s.domain},
		Certificates: []*x509.Certificate{s.cert}, CertificateHash: []string{pecdir.SHA1Hex(s.cert)}}
}

// trust imports other gestori's entries into this one's directory.
func (s *site) trust(others ...*site) {
	s.t.Helper()
	var ps []pecdir.Provider
	for _, o := range others {
		ps = append(ps, o.entry())
	}
	var b bytes.Buffer
	must(s.t, pecdir.WriteLDIF(&b, ps))
	s.apply(&storage.PutKV{Key: DirectoryKey, Value: b.Bytes()})
}

// run hands a transaction to the gestore and applies its batch.
func (s *site) run(submit bool, tx Transaction) *Outcome {
	s.t.Helper()
	var out *Outcome
	var err error
	if submit {
		out, err = s.g.Submit(context.Background(), tx)
	} else {
		out, err = s.g.Receive(context.Background(), tx)
	}
	must(s.t, err)
	if out.Batch != nil {
		s.apply(out.Batch)
	}
	return out
}

func (s *site) submit(from string, rcpts []string, msg string) *Outcome {
	return s.run(true, Transaction{Sender: from, Recipients: rcpts, Data: []byte(msg)})
}

// inbox returns the messages in a mailbox's INBOX, oldest first.
func (s *site) inbox(addr string) [][]byte {
	s.t.Helper()
	ctx := context.Background()
	mb, err := s.store.MailboxByAddress(ctx, addr)
	must(s.t, err)
	f, err := s.store.FolderByName(ctx, mb.ID, "INBOX")
	must(s.t, err)
	ms, err := s.store.Messages(ctx, f.ID)
	must(s.t, err)
	var out [][]byte
	for _, m := range ms {
		b, err := s.store.Content(ctx, m.SHA256)
		must(s.t, err)
		out = append(out, b)
	}
	return out
}

// queued returns the outbound queue: recipients and content of each item.
func (s *site) queued() []storage.QueueItem {
	s.t.Helper()
	items, err := s.store.QueueItems(context.Background(), time.Time{})
	must(s.t, err)
	return items
}

func (s *site) content(sha string) []byte {
	b, err := s.store.Content(context.Background(), sha)
	must(s.t, err)
	return b
}

// verified checks the signature against the gestori's certificates and
// returns what pecverify reads in it.
func verified(t *testing.T, msg []byte, signers ...*site) pecverify.Report {
	t.Helper()
	roots := x509.NewCertPool()
	for _, s := range signers {
		roots.AddCert(s.cert)
	}
	r := pecverify.Verify("msg", msg, pecverify.Options{Roots: roots})
	if r.Signature != pecverify.SignatureValid {
		t.Fatalf("%q: signature %s: %s", subjectOf(msg), r.Signature, r.SignatureError)
	}
	return r
}

func bySubject(msgs [][]byte, prefix string) [][]byte {
	var out [][]byte
	for _, m := range msgs {
		if strings.HasPrefix(subjectOf(m), prefix) {
			out = append(out, m)
		}
	}
	return out
}

func userMessage(from, to, cc, subject, extra, body string) string {
	h := "From: " + from + "\r\nTo: " + to + "\r\n"
	if cc != "" {
		h += "Cc: " + cc + "\r\n"
	}
	return h + "Subject: " + subject + "\r\nMessage-ID: <c1@client>\r\n" + extra + "\r\n" + body
}

var t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func TestSameDomainMessageGetsAccettazioneBustaAndConsegne(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	for _, m := range []string{"alice@a.test", "bob@a.test", "carol@a.test"} {
		a.mailbox(m, 0)
	}
	out := a.submit("alice@a.test", []string{"bob@a.test", "carol@a.test"},
		userMessage("Alice <alice@a.test>", "bob@a.test", "carol@a.test", "Riunione", "", "Ci vediamo alle 10.\r\n"))
	if out.Reply != nil || out.ID == "" {
		t.Fatalf("outcome %+v", out)
	}
	alice := a.inbox("alice@a.test")
	acc := bySubject(alice, "ACCETTAZIONE: Riunione")
	if len(acc) != 1 {
		t.Fatalf("alice's INBOX: %d messages, subjects %v", len(alice), subjects(alice))
	}
	r := verified(t, acc[0], a)
	if r.Kind != "accettazione" || r.Identificativo != out.ID || r.Daticert.MsgID != "<c1@client>" {
		t.Fatalf("accettazione report %+v", r)
	}
	cons := bySubject(alice, "CONSEGNA: Riunione")
	if len(cons) != 2 {
		t.Fatalf("consegne: %v", subjects(alice))
	}
	tipi := map[string]string{}
	for _, c := range cons {
		r := verified(t, c, a)
		tipi[r.Daticert.Consegna] = r.Daticert.Ricevuta
		if r.Daticert.Ricevuta == "completa" && hasNot(c, "postacert.eml") {
			t.Errorf("a completa without postacert.eml")
		}
		if r.Daticert.Ricevuta == "sintetica" && has(c, "postacert.eml") {
			t.Errorf("a sintetica with postacert.eml")
		}
	}
	if tipi["bob@a.test"] != "completa" || tipi["carol@a.test"] != "sintetica" {
		t.Fatalf("receipt types %v", tipi)
	}
	for _, u := range []string{"bob@a.test", "carol@a.test"} {
		got := a.inbox(u)
		if len(got) != 1 || subjectOf(got[0]) != "POSTA CERTIFICATA: Riunione" {
			t.Fatalf("%s: %v", u, subjects(got))
		}
		r := verified(t, got[0], a)
		if r.Kind != "posta-certificata" || r.Identificativo != out.ID || headerOf(got[0], "X-Riferimento-Message-ID") != "<c1@client>" {
			t.Fatalf("busta %+v", r)
		}
		if !has(got[0], "Message-ID: <"+out.ID+">\r\nX-Riferimento-Message-ID: <c1@client>") {
			t.Errorf("the original in the busta keeps its Message-ID:\n%s", lines(got[0]))
		}
	}
	if q := a.queued(); len(q) != 0 {
		t.Fatalf("same-domain traffic queued %+v", q)
	}
	t.Logf("alice: %v", subjects(alice))
}

func subjects(ms [][]byte) []string {
	var out []string
	for _, m := range ms {
		out = append(out, subjectOf(m))
	}
	return out
}

func TestBreveAndSinteticaAreWhatTheSenderAsks(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	for _, m := range []string{"alice@a.test", "bob@a.test", "carol@a.test"} {
		a.mailbox(m, 0)
	}
	mixed := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n"
	body := "--b1\r\nContent-Type: text/plain\r\n\r\nIl contratto.\r\n--b1\r\nContent-Type: application/pdf; name=\"contratto.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"contratto.pdf\"\r\n\r\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago=\r\n--b1--\r\n"
	a.submit("alice@a.test", []string{"bob@a.test", "carol@a.test"},
		userMessage("alice@a.test", "bob@a.test", "carol@a.test", "Breve", mixed+"X-TipoRicevuta: breve\r\n", body))
	for _, c := range bySubject(a.inbox("alice@a.test"), "CONSEGNA: Breve") {
		r := verified(t, c, a)
		switch r.Daticert.Consegna {
		case "bob@a.test":
			if r.Daticert.Ricevuta != "breve" || hasNot(c, "contratto.pdf.hash") || has(c, "JVBERi0xLjQKJcfsj6IKNSAwIG9iago=") {
				t.Errorf("bob's breve: %s\n%s", r.Daticert.Ricevuta, lines(c))
			}
		case "carol@a.test":
			if r.Daticert.Ricevuta != "sintetica" || has(c, "postacert.eml") {
				t.Errorf("carol's (Cc) receipt: %s", r.Daticert.Ricevuta)
			}
		}
	}
	a.submit("alice@a.test", []string{"bob@a.test"},
		userMessage("alice@a.test", "bob@a.test", "", "Sintetica", "X-TipoRicevuta: sintetica\r\n", "testo\r\n"))
	c := bySubject(a.inbox("alice@a.test"), "CONSEGNA: Sintetica")
	if len(c) != 1 || verified(t, c[0], a).Daticert.Ricevuta != "sintetica" || has(c[0], "postacert.eml") {
		t.Fatalf("sintetica asked: %d receipts", len(c))
	}
}

func TestEachFormalCheckGivesAnAvvisoDiNonAccettazione(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	for _, m := range []string{"alice@a.test", "bob@a.test", "carol@a.test"} {
		a.mailbox(m, 0)
	}
	a.g.MaxBytes = 2000
	cases := []struct {
		name, msg string
		rcpts     []string
		reason    string
	}{
		{"From is not the sender", userMessage("mallory@a.test", "bob@a.test", "", "x1", "", "b\r\n"), []string{"bob@a.test"}, "non coincide"},
		{"two From addresses", userMessage("alice@a.test, bob@a.test", "bob@a.test", "", "x2", "", "b\r\n"), []string{"bob@a.test"}, "un solo indirizzo"},
		{"no To", "From: alice@a.test\r\nSubject: x3\r\n\r\nb\r\n", []string{"bob@a.test"}, "To"},
		{"a blind recipient", userMessage("alice@a.test", "bob@a.test", "", "x4", "", "b\r\n"), []string{"bob@a.test", "carol@a.test"}, "carol@a.test"},
		{"Bcc not empty", userMessage("alice@a.test", "bob@a.test", "", "x5", "Bcc: carol@a.test\r\n", "b\r\n"), []string{"bob@a.test"}, "Bcc"},
		{"size × recipients", userMessage("alice@a.test", "bob@a.test", "carol@a.test", "x6", "", strings.Repeat("x", 1200)+"\r\n"), []string{"bob@a.test", "carol@a.test"}, "limite"},
	}
	for i, c := range cases {
		out := a.submit("alice@a.test", c.rcpts, c.msg)
		if out.Reply == nil || out.Reply.Code != 550 {
			t.Errorf("%s: reply %+v", c.name, out.Reply)
			continue
		}
		got := a.inbox("alice@a.test")
		if len(got) != i+1 {
			t.Fatalf("%s: alice has %d messages, want %d", c.name, len(got), i+1)
		}
		last := got[len(got)-1]
		r := verified(t, last, a)
		if r.Kind != "non-accettazione" || !strings.HasPrefix(subjectOf(last), "AVVISO DI NON ACCETTAZIONE: ") ||
			!strings.Contains(r.Daticert.ErroreEsteso, c.reason) || has(last, "postacert.eml") {
			t.Errorf("%s: %q %+v", c.name, subjectOf(last), r.Daticert)
		}
	}
	for _, u := range []string{"bob@a.test", "carol@a.test"} {
		if n := len(a.inbox(u)); n != 0 {
			t.Errorf("%s got %d messages from refused submissions", u, n)
		}
	}
}

func TestUnknownUserAndFullMailboxGetAnAvvisoDiMancataConsegna(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("full@a.test", 100)
	a.submit("alice@a.test", []string{"ghost@a.test", "full@a.test"},
		userMessage("alice@a.test", "ghost@a.test, full@a.test", "", "Mancata", "", "b\r\n"))
	avvisi := bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA: Mancata")
	if len(avvisi) != 2 {
		t.Fatalf("alice: %v", subjects(a.inbox("alice@a.test")))
	}
	errs := map[string]string{}
	for _, m := range avvisi {
		r := verified(t, m, a)
		if r.Kind != "errore-consegna" {
			t.Errorf("kind %s", r.Kind)
		}
		errs[r.Daticert.Consegna] = r.Daticert.Errore + " " + r.Daticert.ErroreEsteso
	}
	if !strings.HasPrefix(errs["ghost@a.test"], "no-dest 5.1.1") || !strings.HasPrefix(errs["full@a.test"], "altro 5.2.2") {
		t.Fatalf("errors %v", errs)
	}
	if n := len(a.inbox("full@a.test")); n != 0 {
		t.Fatalf("the full mailbox got %d messages", n)
	}
}

// twoSites is gestore A (a.test) and B (b.test) trusting each other.
func twoSites(t testing.TB) (a, b *site) {
	t.Helper()
	return twoSitesKeys(t, nil, nil)
}

// twoSitesKeys is twoSites with the gestori's keys given (nil: new ones).
func twoSitesKeys(t testing.TB, keyA, keyB []byte) (a, b *site) {
	t.Helper()
	clk := apptest.NewClock(t0)
	a = newSiteKey(t, "a.test", "Gestore A S.p.A.", clk, keyA)
	b = newSiteKey(t, "b.test", "Gestore B S.p.A.", clk, keyB)
	a.trust(b)
	b.trust(a)
	a.mailbox("alice@a.test", 0)
	a.mailbox("posta-certificata@a.test", 0)
	b.mailbox("bob@b.test", 0)
	b.mailbox("posta-certificata@b.test", 0)
	return a, b
}

// sendToB submits at A for bob@b.test and returns the busta A queued.
func sendToB(t testing.TB, a *site, subject string) (*Outcome, []byte) {
	t.Helper()
	out := a.submit("alice@a.test", []string{"bob@b.test"}, userMessage("alice@a.test", "bob@b.test", "", subject, "", "b\r\n"))
	for _, it := range a.queued() {
		if it.Recipients[0] == "bob@b.test" && headerOf(a.content(it.SHA256), "Message-ID") == "<"+out.ID+">" {
			if !it.RequireTLS {
				t.Fatalf("a busta to another gestore queued without RequireTLS")
			}
			return out, a.content(it.SHA256)
		}
	}
	t.Fatalf("nothing queued for bob@b.test: %+v", a.queued())
	return nil, nil
}

func TestABustaFromAnotherGestoreIsTakenInChargeAndDelivered(t *testing.T) {
	a, b := twoSites(t)
	out, busta := sendToB(t, a, "Da A a B")
	recv := b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true})
	if recv.Reply != nil || recv.ID != out.ID {
		t.Fatalf("reception: %+v", recv)
	}
	got := b.inbox("bob@b.test")
	if len(got) != 1 || !bytes.HasSuffix(got[0], busta) {
		t.Fatalf("bob got %d messages (the busta unmodified?)", len(got))
	}
	// B queued the presa in carico (to A's mailReceipt) and the consegna
	// (to alice), both over TLS only.
	kinds := map[string]string{}
	for _, it := range b.queued() {
		m := b.content(it.SHA256)
		kinds[headerOf(m, "X-Ricevuta")] = it.Recipients[0]
		if !it.RequireTLS {
			t.Errorf("%s queued without RequireTLS", subjectOf(m))
		}
		// A receives each: the receipts land in the service mailbox
		// and in alice's INBOX, and update the tracking.
		a.run(false, Transaction{Sender: it.Sender, Recipients: it.Recipients, Data: m, Inbound: true, TLS: true})
	}
	if kinds["presa-in-carico"] != "posta-certificata@a.test" || kinds["avvenuta-consegna"] != "alice@a.test" {
		t.Fatalf("B queued %v", kinds)
	}
	if n := len(bySubject(a.inbox("posta-certificata@a.test"), "PRESA IN CARICO: Da A a B")); n != 1 {
		t.Fatalf("A's service mailbox: %v", subjects(a.inbox("posta-certificata@a.test")))
	}
	if n := len(bySubject(a.inbox("alice@a.test"), "CONSEGNA: Da A a B")); n != 1 {
		t.Fatalf("alice: %v", subjects(a.inbox("alice@a.test")))
	}
	tr, err := a.store.TrackedMessage(context.Background(), out.ID)
	must(t, err)
	if len(tr) != 1 || !tr[0].Presa || !tr[0].Consegna {
		t.Fatalf("tracking after presa in carico and consegna: %+v", tr)
	}

	// The same busta over plaintext is refused: PEC between gestori
	// travels over TLS.
	plain, err := b.g.Receive(context.Background(), Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true})
	must(t, err)
	if plain.Reply == nil || plain.Reply.Code != 530 || plain.Batch != nil {
		t.Fatalf("busta over plaintext: %+v", plain)
	}
}

func TestAnythingElseBecomesABustaDiAnomalia(t *testing.T) {
	a, b := twoSites(t)
	_, busta := sendToB(t, a, "Manomessa")
	stranger := newSite(t, "c.test", "Gestore C S.p.A.", a.clock) // not in B's directory
	stranger.mailbox("eve@c.test", 0)
	stranger.trust(b)
	_, foreign := sendToB(t, stranger, "Sconosciuto")
	// One byte of the busta changed (in the signed text).
	tampered := bytes.Replace(busta, []byte("Manomessa\""), []byte("Manomesse\""), 1)
	if bytes.Equal(tampered, busta) {
		t.Fatal("the test did not change the busta")
	}
	cases := []struct {
		name, sender string
		data         []byte
		reason       string
	}{
		{"ordinary mail", "someone@example.org", []byte(userMessage("someone@example.org", "bob@b.test", "", "Ordinaria", "", "ciao\r\n")), "non è firmato"},
		{"a tampered busta", "alice@a.test", tampered, "non risulta valida"},
		{"a busta signed by a gestore not in the directory", "eve@c.test", foreign, "non risulta attendibile"},
	}
	for i, c := range cases {
		out := b.run(false, Transaction{Sender: c.sender, Recipients: []string{"bob@b.test"}, Data: c.data, Inbound: true, TLS: true})
		got := b.inbox("bob@b.test")
		if len(got) != i+1 {
			t.Fatalf("%s: bob has %d messages", c.name, len(got))
		}
		m := got[i]
		r := verified(t, m, b)
		if r.Kind != "errore" || !strings.HasPrefix(subjectOf(m), "ANOMALIA MESSAGGIO: ") || r.Daticert != nil ||
			!strings.Contains(lines(m), c.reason) && !strings.Contains(out.Summary, c.reason) {
			t.Errorf("%s: %q kind %s summary %q", c.name, subjectOf(m), r.Kind, out.Summary)
		}
		if !has(m, "postacert.eml") || hasNot(m, "X-Trasporto: errore") {
			t.Errorf("%s: the anomalia lacks the original or X-Trasporto", c.name)
		}
		if q := b.queued(); len(q) != 0 {
			t.Errorf("%s: receipts queued for an anomalia: %d", c.name, len(q))
		}
	}
}

func TestTimeoutNoticesAreSentOnceEachAt12And24Hours(t *testing.T) {
	a, b := twoSites(t)
	clk := a.clock
	timer := &Timer{Gestore: a.g, Store: a.store, Proposer: a.prop}
	// Neither presa in carico nor consegna: both notices.
	silent, _ := sendToB(t, a, "Silenzio")
	// A presa in carico but never a consegna: only the final one.
	taken, busta := sendToB(t, a, "Preso")
	b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true})
	for _, it := range b.queued() {
		m := b.content(it.SHA256)
		if headerOf(m, "X-Ricevuta") == "presa-in-carico" && verified(t, m, b).Identificativo == taken.ID {
			a.run(false, Transaction{Sender: it.Sender, Recipients: it.Recipients, Data: m, Inbound: true, TLS: true})
		}
	}
	notices := func() map[string]int {
		n := map[string]int{}
		for _, m := range bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: ") {
			r := verified(t, m, a)
			key := r.Identificativo + " " + r.Daticert.Errore
			n[key]++
		}
		return n
	}
	tick := func() {
		t.Helper()
		must(t, timer.Tick(context.Background()))
	}
	clk.Add(11*time.Hour + 59*time.Minute)
	tick()
	if n := notices(); len(n) != 0 {
		t.Fatalf("before 12 h: %v", n)
	}
	clk.Add(2 * time.Minute)
	tick()
	tick() // a second tick, or a new leader's, repeats nothing
	(&Timer{Gestore: a.g, Store: a.store, Proposer: a.prop}).Tick(context.Background())
	if n := notices(); len(n) != 1 || n[silent.ID+" nessuno"] != 1 {
		t.Fatalf("at 12 h: %v", n)
	}
	clk.Add(11 * time.Hour)
	tick()
	if n := notices(); len(n) != 1 {
		t.Fatalf("at 23 h: %v", n)
	}
	clk.Add(40 * time.Minute)
	tick()
	tick()
	want := map[string]int{silent.ID + " nessuno": 1, silent.ID + " altro": 1, taken.ID + " altro": 1}
	if n := notices(); fmt.Sprint(n) != fmt.Sprint(want) {
		t.Fatalf("after 23 h 30 m: %v, want %v", n, want)
	}
	clk.Add(48 * time.Hour)
	tick()
	if n := notices(); fmt.Sprint(n) != fmt.Sprint(want) {
		t.Fatalf("two days later: %v", n)
	}
	// A month on, the tracking is forgotten; the log keeps the events.
	clk.Add(ForgetAfter)
	tick()
	if tr, _ := a.store.TrackedMessage(context.Background(), silent.ID); len(tr) != 0 {
		t.Fatalf("tracking kept after %v: %+v", ForgetAfter, tr)
	}
}

func TestTheTimerCreatesTheServiceMailbox(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	timer := &Timer{Gestore: a.g, Store: a.store, Proposer: a.prop}
	must(t, timer.Tick(context.Background()))
	if _, err := a.store.MailboxByAddress(context.Background(), "posta-certificata@a.test"); err != nil {
		t.Fatalf("service mailbox: %v", err)
	}
	must(t, timer.Tick(context.Background()))
}
