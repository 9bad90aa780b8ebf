package pec

import (
	"bytes"
	"context"
	"mime"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/signer"
)

// The tests of the rules found missing in a review against PEC.md: who
// receipts may go to, what a receipt may change, and what a message from
// outside can put into the messages we sign.

// receiptFrom is a receipt of that kind signed by s, for to, with the
// certification data dc (its Tipo, Gestore and Time set here).
func (s *site) receiptFrom(kind, to string, dc Daticert) []byte {
	s.t.Helper()
	at := s.clock.Now()
	dc.Tipo, dc.Gestore, dc.Time = kind, s.g.Provider, at
	m, err := message{header: s.g.noticeHeader(at, to, "RICEVUTA: "+dc.Oggetto, dc.MsgID, kind),
		text: "Ricevuta " + kind, daticert: dc.XML()}.build(s.g.Signer)
	must(s.t, err)
	return m
}

// headerLines returns the lines of m's header, split at CRLF.
func headerLines(m []byte) []string {
	end := bytes.Index(m, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(m)
	}
	return strings.Split(string(m[:end]), "\r\n")
}

// cleanHeader fails unless m's header is made of CRLF lines of at most 998
// characters without control characters, with exactly one field telling
// its kind.
func cleanHeader(t *testing.T, what string, m []byte) {
	t.Helper()
	kinds := 0
	for _, l := range headerLines(m) {
		if strings.ContainsFunc(l, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) || len(l) > maxLine {
			t.Errorf("%s: header line %.100q", what, l)
		}
		low := strings.ToLower(l)
		if strings.HasPrefix(low, "x-ricevuta:") || strings.HasPrefix(low, "x-trasporto:") {
			kinds++
		}
	}
	if kinds != 1 {
		t.Errorf("%s: %d X-Ricevuta/X-Trasporto fields:\n%s", what, kinds, strings.Join(headerLines(m), "\n"))
	}
}

func countFields(m []byte, name string) int {
	h, _, _ := signer.ParseHeader(m)
	n := 0
	for _, f := range h {
		if f.Name == strings.ToLower(name) {
			n++
		}
	}
	return n
}

// A busta replayed with another reverse-path must not make the recipient's
// gestore send its signed receipts, with the original attached, to whoever
// the reverse-path names: the routing data of a busta are the original's.
func TestABustaReplayedWithAnotherReversePathGetsNoReceipts(t *testing.T) {
	a, b := twoSites(t)
	_, busta := sendToB(t, a, "Rispedita")
	out := b.run(false, Transaction{Sender: "victim@example.org", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true})
	for _, it := range b.queued() {
		t.Errorf("%q queued for %v", subjectOf(b.content(it.SHA256)), it.Recipients)
	}
	got := b.inbox("bob@b.test")
	if len(got) != 1 || !strings.HasPrefix(subjectOf(got[0]), "ANOMALIA MESSAGGIO: ") || !strings.Contains(out.Summary, "reverse-path") {
		t.Fatalf("bob: %v; %s", subjects(got), out.Summary)
	}
}

// A forward-path that is not among the busta's recipients gets a busta di
// anomalia, and nobody a receipt for it (PEC.md §7: every ricezione and
// consegna is a recipient of the busta).
func TestABustaForSomeoneNotAmongItsRecipientsIsAnAnomalia(t *testing.T) {
	a, b := twoSites(t)
	b.mailbox("carol@b.test", 0)
	_, busta := sendToB(t, a, "Per Bob")
	out := b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"carol@b.test"}, Data: busta, Inbound: true, TLS: true})
	if q := b.queued(); len(q) != 0 {
		t.Errorf("%d receipts queued", len(q))
	}
	got := b.inbox("carol@b.test")
	if len(got) != 1 || !strings.HasPrefix(subjectOf(got[0]), "ANOMALIA MESSAGGIO: ") || !strings.Contains(out.Summary, "carol@b.test") {
		t.Fatalf("carol: %v; %s", subjects(got), out.Summary)
	}
}

// A gestore in the directory cannot change the tracking of a busta we sent
// to a recipient of another gestore, nor have us tell our user that it
// carried a virus: only the recipient's gestore can.
func TestAReceiptFromAnotherGestoreDoesNotTouchTrackingItDoesNotConcern(t *testing.T) {
	a, b := twoSites(t)
	c := newSite(t, "c.test", "Gestore C S.p.A.", a.clock)
	a.trust(b, c)
	out, _ := sendToB(t, a, "Tracciato")
	dc := Daticert{Mittente: "alice@a.test", Destinatari: []Destinatario{{Address: "bob@b.test", Certificato: true}},
		Risposte: "alice@a.test", Oggetto: "Tracciato", ID: out.ID, MsgID: "<c1@client>"}
	forged := map[string][]byte{}
	d := dc
	d.Ricezione = []string{"bob@b.test"}
	forged["presa-in-carico"] = c.receiptFrom("presa-in-carico", "posta-certificata@a.test", d)
	d = dc
	d.Consegna, d.Ricevuta = "bob@b.test", "completa"
	forged["avvenuta-consegna"] = c.receiptFrom("avvenuta-consegna", "alice@a.test", d)
	d = dc
	d.Consegna, d.Errore, d.ErroreEsteso = "bob@b.test", "virus", "virus: X"
	forged["rilevazione-virus"] = c.receiptFrom("rilevazione-virus", "posta-certificata@a.test", d)
	for kind, m := range forged {
		to := "posta-certificata@a.test"
		if kind == "avvenuta-consegna" {
			to = "alice@a.test"
		}
		a.run(false, Transaction{Sender: "posta-certificata@c.test", Recipients: []string{to}, Data: m, Inbound: true, TLS: true})
	}
	tr, err := a.store.TrackedMessage(context.Background(), out.ID)
	must(t, err)
	if len(tr) != 1 || tr[0].Presa || tr[0].Consegna {
		t.Fatalf("tracking changed by another gestore's receipts: %+v", tr)
	}
	if av := bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA PER VIRUS"); len(av) != 0 {
		t.Fatalf("alice warned of a virus on another gestore's word")
	}
	// Nor can the right gestore about a busta we never sent.
	d.ID = "sigillo.never.sent@a.test"
	a.run(false, Transaction{Sender: "posta-certificata@b.test", Recipients: []string{"posta-certificata@a.test"}, Inbound: true, TLS: true,
		Data: b.receiptFrom("rilevazione-virus", "posta-certificata@a.test", d)})
	if av := bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA PER VIRUS"); len(av) != 0 {
		t.Fatalf("alice warned of a virus in a message she did not send")
	}
	// The recipient's gestore can.
	d = dc
	d.Consegna, d.Ricevuta = "bob@b.test", "completa"
	a.run(false, Transaction{Sender: "posta-certificata@b.test", Recipients: []string{"alice@a.test"}, Inbound: true, TLS: true,
		Data: b.receiptFrom("avvenuta-consegna", "alice@a.test", d)})
	tr, err = a.store.TrackedMessage(context.Background(), out.ID)
	must(t, err)
	if len(tr) != 1 || !tr[0].Consegna {
		t.Fatalf("tracking after B's consegna: %+v", tr)
	}
}

// Only the receipts that travel between gestori are receipts here: a busta
// relabelled as a receipt, or an accettazione, is a busta di anomalia.
func TestAReceiptOfAKindThatDoesNotTravelBetweenGestoriIsAnAnomalia(t *testing.T) {
	a, b := twoSites(t)
	_, busta := sendToB(t, a, "Etichetta")
	relabelled := withHeader(busta, "X-Trasporto", "X-Ricevuta: posta-certificata")
	acc := b.receiptFrom("accettazione", "alice@a.test", Daticert{Mittente: "bob@b.test",
		Destinatari: []Destinatario{{Address: "alice@a.test", Certificato: true}}, Risposte: "bob@b.test", Oggetto: "x", ID: "sigillo.x@b.test"})
	for i, m := range [][]byte{relabelled, acc} {
		sender := "alice@a.test"
		rcpt := "bob@b.test"
		s := b
		if i == 1 {
			sender, rcpt, s = "posta-certificata@b.test", "alice@a.test", a
		}
		got := s.run(false, Transaction{Sender: sender, Recipients: []string{rcpt}, Data: m, Inbound: true, TLS: true})
		if !strings.HasPrefix(got.Summary, "busta di anomalia") {
			t.Errorf("message %d: %s", i, got.Summary)
		}
	}
	if n := len(b.queued()); n != 0 {
		t.Errorf("B queued %d receipts for a relabelled busta", n)
	}
}

// A receipt whose daticert names no recipient is delivered like any other:
// it cannot make the store refuse the whole transaction.
func TestAReceiptWithoutItsRecipientIsStillDelivered(t *testing.T) {
	a, b := twoSites(t)
	out, _ := sendToB(t, a, "Senza consegna")
	m := b.receiptFrom("avvenuta-consegna", "alice@a.test", Daticert{Mittente: "alice@a.test",
		Destinatari: []Destinatario{{Address: "bob@b.test", Certificato: true}}, Risposte: "alice@a.test", Oggetto: "Senza consegna",
		ID: out.ID, Ricevuta: "completa"})
	res, err := a.g.Receive(context.Background(), Transaction{Sender: "posta-certificata@b.test", Recipients: []string{"alice@a.test"},
		Data: m, Inbound: true, TLS: true})
	must(t, err)
	if res.Batch == nil {
		t.Fatalf("outcome %+v", res)
	}
	if _, err := a.prop.Apply(context.Background(), res.Batch); err != nil {
		t.Fatalf("the store refused the receipt: %v", err)
	}
}

// Whatever a message from outside holds in its header (a bare CR, a NUL, a
// field with no line end, encoded CRLF), the messages we sign have a header
// of clean CRLF lines and exactly one field telling their kind, and the
// texts we sign get no line of the sender's making.
func TestNothingFromTheOriginalBreaksTheHeadersAndTextsWeSign(t *testing.T) {
	a, b := twoSites(t)
	a.mailbox("bob@a.test", 0)
	evil := "From: alice@a.test\r\nTo: bob@a.test, bob@b.test\r\nSubject: =?utf-8?q?x=0D=0AIdentificativo_messaggio:_falso?=\r\n" +
		"Reply-To: alice@a.test\rX-Ricevuta: accettazione\r\nMessage-ID: <c1@client>\r\nX-TipoRicevuta: completa\x00\r\n\r\nb\r\n"
	a.submit("alice@a.test", []string{"bob@a.test", "bob@b.test"}, evil)
	msgs := append(a.inbox("alice@a.test"), a.inbox("bob@a.test")...)
	for _, it := range a.queued() {
		msgs = append(msgs, a.content(it.SHA256))
	}
	if len(msgs) != 4 {
		t.Fatalf("%d messages: %v", len(msgs), subjects(msgs))
	}
	for _, m := range msgs {
		cleanHeader(t, subjectOf(m), m)
		if has(m, "\r\nIdentificativo messaggio: falso") {
			t.Errorf("%s: the subject added a line to the text", subjectOf(m))
		}
		if r := verified(t, m, a); r.Daticert == nil || strings.ContainsAny(r.Daticert.Oggetto, "\r\n") {
			t.Errorf("%s: oggetto %q", subjectOf(m), r.Daticert)
		}
	}
	// Mail from outside, wrapped in a busta di anomalia: the last field
	// without a line end, a NUL, a field that starts with white space.
	for _, raw := range []string{
		" To: bob@b.test\r\nCc: x@y\x00\r\nReceived: from x\rX-Trasporto: posta-certificata\r\nSubject: s\r\nTo: bob@b.test",
		"Subject: senza fine\r\nTo: bob@b.test",
	} {
		b.run(false, Transaction{Sender: "x@example.org", Recipients: []string{"bob@b.test"}, Data: []byte(raw), Inbound: true})
	}
	for _, m := range b.inbox("bob@b.test") {
		cleanHeader(t, "anomalia "+subjectOf(m), m)
		verified(t, m, b)
	}
}

// The msgid of daticert and X-Riferimento-Message-ID carries its angle
// brackets (PEC.md §3.4.1) even when the client left them out, and nothing
// else of a malformed Message-ID field.
func TestTheClientMsgIDAlwaysHasItsAngleBrackets(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	for i, c := range []struct{ field, want string }{
		{"c2@client", "<c2@client>"},
		{"  <c3@client> (il client)", "<c3@client>"},
		{"<c4@cli\xffent>", "<c4@client>"},
	} {
		msg := "From: alice@a.test\r\nTo: bob@a.test\r\nSubject: id\r\nMessage-ID: " + c.field + "\r\n\r\nb\r\n"
		a.submit("alice@a.test", []string{"bob@a.test"}, msg)
		acc := bySubject(a.inbox("alice@a.test"), "ACCETTAZIONE: ")
		if len(acc) != i+1 {
			t.Fatalf("%q: %v", c.field, subjects(a.inbox("alice@a.test")))
		}
		r := verified(t, acc[i], a)
		busta := a.inbox("bob@a.test")[i]
		if r.Daticert.MsgID != c.want || headerOf(acc[i], "X-Riferimento-Message-ID") != c.want ||
			headerOf(busta, "X-Riferimento-Message-ID") != c.want || !has(busta, "\r\nX-Riferimento-Message-ID: "+c.want+"\r\n") {
			t.Errorf("%q: daticert msgid %q, accettazione %q, busta %q", c.field, r.Daticert.MsgID,
				headerOf(acc[i], "X-Riferimento-Message-ID"), headerOf(busta, "X-Riferimento-Message-ID"))
		}
	}
}

// A display name in Windows-1252 (Outlook's) or in a charset we do not know
// does not make the From unreadable, and a subject in Windows-1252, in
// ISO-8859-15 or in raw Latin-1 bytes is certified as it reads.
func TestEightBitNamesAndSubjectsAreRead(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	for _, c := range []struct{ from, subject, want string }{
		{"=?windows-1252?q?Jos=E9?= <alice@a.test>", "=?windows-1252?q?Caff=E8_=80_5?=", "Caffè € 5"},
		{"=?koi8-r?b?8NLJ18XU?= <alice@a.test>", "=?iso-8859-15?q?=A4_10?=", "€ 10"},
		{"alice@a.test", "citt\xe0", "città"},
	} {
		out := a.submit("alice@a.test", []string{"bob@a.test"}, "From: "+c.from+"\r\nTo: bob@a.test\r\nSubject: "+c.subject+"\r\n\r\nb\r\n")
		if out.Reply != nil {
			t.Errorf("From %q: %+v", c.from, out.Reply)
			continue
		}
		got := bySubject(a.inbox("alice@a.test"), "ACCETTAZIONE: ")
		r := verified(t, got[len(got)-1], a)
		if r.Kind != "accettazione" || r.Daticert.Oggetto != c.want {
			t.Errorf("subject %q: %s, oggetto %q, want %q", c.subject, r.Kind, r.Daticert.Oggetto, c.want)
		}
	}
}

// A subject with a word longer than a header line may be is encoded in
// words that fold: no line of the messages we write passes 998 characters,
// and the subject still reads the same.
func TestALongSubjectKeepsHeaderLinesShort(t *testing.T) {
	a, _ := twoSites(t)
	a.mailbox("bob@a.test", 0)
	long := strings.Repeat("x", 1500)
	a.submit("alice@a.test", []string{"bob@a.test", "bob@b.test"},
		"From: alice@a.test\r\nTo: bob@a.test, bob@b.test\r\nSubject: "+long+"\r\nMessage-ID: <"+strings.Repeat("m", 970)+"@client>\r\n\r\nb\r\n")
	msgs := append(a.inbox("alice@a.test"), a.inbox("bob@a.test")...)
	for _, it := range a.queued() {
		msgs = append(msgs, a.content(it.SHA256))
	}
	dec := new(mime.WordDecoder)
	for _, m := range msgs {
		for _, l := range headerLines(m) {
			if len(l) > maxLine {
				t.Errorf("%.40q: header line of %d characters", subjectOf(m), len(l))
			}
		}
		s, err := dec.DecodeHeader(subjectOf(m))
		if err != nil || !strings.HasSuffix(s, ": "+long) {
			t.Errorf("subject %.60q decodes to %.60q, %v", subjectOf(m), s, err)
		}
	}
}

// A busta di anomalia keeps the original's Message-ID, and has one when
// the original has none.
func TestABustaDiAnomaliaHasOneMessageID(t *testing.T) {
	_, b := twoSites(t)
	with := userMessage("x@example.org", "bob@b.test", "", "Con id", "", "b\r\n")
	without := "From: x@example.org\r\nTo: bob@b.test\r\nSubject: Senza id\r\n\r\nb\r\n"
	for _, m := range []string{with, without} {
		b.run(false, Transaction{Sender: "x@example.org", Recipients: []string{"bob@b.test"}, Data: []byte(m), Inbound: true})
	}
	got := b.inbox("bob@b.test")
	if len(got) != 2 || headerOf(got[0], "Message-ID") != "<c1@client>" {
		t.Fatalf("anomalie: %v, first Message-ID %q", subjects(got), headerOf(got[0], "Message-ID"))
	}
	for _, m := range got {
		if n := countFields(m, "Message-ID"); n != 1 || !strings.HasPrefix(headerOf(m, "Message-ID"), "<") {
			t.Errorf("%s: %d Message-ID fields (%q)", subjectOf(m), n, headerOf(m, "Message-ID"))
		}
	}
}

// A Return-Path: written by the user is not carried over to the busta: the
// only one a stored busta has is the reverse-path's.
func TestASubmittedReturnPathIsNotInherited(t *testing.T) {
	a, _ := twoSites(t)
	a.mailbox("bob@a.test", 0)
	a.submit("alice@a.test", []string{"bob@a.test", "bob@b.test"},
		userMessage("alice@a.test", "bob@a.test, bob@b.test", "", "Ritorno", "Return-Path: <ceo@bank.example>\r\n", "b\r\n"))
	busta := a.inbox("bob@a.test")
	if len(busta) != 1 || countFields(busta[0], "Return-Path") != 1 || headerOf(busta[0], "Return-Path") != "<alice@a.test>" {
		t.Fatalf("bob's busta: Return-Path %q (%d)", headerOf(busta[0], "Return-Path"), countFields(busta[0], "Return-Path"))
	}
	for _, it := range a.queued() {
		if m := a.content(it.SHA256); countFields(m, "Return-Path") != 0 {
			t.Errorf("queued %q with Return-Path %q", subjectOf(m), headerOf(m, "Return-Path"))
		}
	}
}

// Ambiguous recipients are primary (RFC 6109 §3.3.2.1): when To: or Cc:
// cannot be read, nobody is taken for a Cc: recipient.
func TestAnUnreadableToMakesEveryRecipientPrimary(t *testing.T) {
	if o := readOriginal([]byte("To: bob@b.test\r\nCc: carol@b.test\r\n\r\n")); !o.inCc("carol@b.test") || o.inCc("bob@b.test") {
		t.Fatalf("a readable header: carol in Cc %v, bob in Cc %v", o.inCc("carol@b.test"), o.inCc("bob@b.test"))
	}
	for _, h := range []string{"To: <bob@b.test\r\nCc: carol@b.test\r\n\r\n", "To: bob@b.test\r\nCc: carol@b.test, <dave\r\n\r\n"} {
		if o := readOriginal([]byte(h)); o.inCc("carol@b.test") {
			t.Errorf("%q: carol taken for a Cc: recipient", h)
		}
	}
}

// daticert's risposte is the address the Reply-To: names (PEC.md §5.2),
// not the field as written.
func TestRisposteIsTheReplyToAddress(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	a.submit("alice@a.test", []string{"bob@a.test"},
		userMessage("alice@a.test", "bob@a.test", "", "Risposte", "Reply-To: =?utf-8?q?Segreteria_Citt=C3=A0?= <segreteria@a.test>\r\n", "b\r\n"))
	acc := bySubject(a.inbox("alice@a.test"), "ACCETTAZIONE: ")
	if len(acc) != 1 {
		t.Fatalf("alice: %v", subjects(a.inbox("alice@a.test")))
	}
	if r := verified(t, acc[0], a); r.Daticert.Risposte != "segreteria@a.test" {
		t.Fatalf("risposte %q", r.Daticert.Risposte)
	}
}

// TestServerNoticesForAUserAreAnAnomalia: a presa in carico addressed to a
// user mailbox is not delivered as a receipt (such notices never reach
// users, RFC 6109 §2.1.1.1.1).
func TestServerNoticesForAUserAreAnAnomalia(t *testing.T) {
	a, b := twoSites(t)
	_, busta := sendToB(t, a, "Presa a utente")
	b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true})
	for _, it := range b.queued() {
		m := b.content(it.SHA256)
		if headerOf(m, "X-Ricevuta") != "presa-in-carico" {
			continue
		}
		a.run(false, Transaction{Sender: it.Sender, Recipients: []string{"alice@a.test"}, Data: m, Inbound: true, TLS: true})
		got := a.inbox("alice@a.test")
		last := got[len(got)-1]
		if !strings.HasPrefix(subjectOf(last), "ANOMALIA MESSAGGIO: PRESA IN CARICO") {
			t.Fatalf("a presa in carico for a user became %q", subjectOf(last))
		}
		return
	}
	t.Fatal("B queued no presa in carico")
}

// TestABustaSentAgainIsAcknowledgedOnce: a sending gestore that did not see
// our 250 sends the same busta again; it gets 250, and the recipient one
// copy, the sender one consegna.
func TestABustaSentAgainIsAcknowledgedOnce(t *testing.T) {
	a, b := twoSites(t)
	_, busta := sendToB(t, a, "Due volte")
	tx := Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true}
	b.run(false, tx)
	queued := len(b.queued())
	again := b.run(false, tx)
	if again.Reply != nil || again.Batch != nil {
		t.Fatalf("the busta sent again: %+v", again)
	}
	if n := len(b.inbox("bob@b.test")); n != 1 {
		t.Fatalf("bob has %d copies", n)
	}
	if n := len(b.queued()); n != queued {
		t.Fatalf("receipts queued: %d, then %d", queued, n)
	}
}

// TestANoticeListsEveryRecipientOfTheBusta: the 12 h preavviso's daticert
// lists the busta's recipients (the one concerned among them), not only
// the one it is about.
func TestANoticeListsEveryRecipientOfTheBusta(t *testing.T) {
	a, _ := twoSites(t)
	a.submit("alice@a.test", []string{"bob@b.test", "x@example.org"},
		userMessage("alice@a.test", "bob@b.test, x@example.org", "", "Due destinatari", "Reply-To: ufficio@a.test\r\n", "b\r\n"))
	a.clock.Add(After12 + time.Minute)
	if err := (&Timer{Gestore: a.g, Store: a.store, Proposer: a.prop}).Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO")
	if len(got) != 1 {
		t.Fatalf("alice: %v", subjects(a.inbox("alice@a.test")))
	}
	r := verified(t, got[0], a)
	if len(r.Daticert.Destinatari) != 2 || r.Daticert.Destinatari[1].Tipo != "esterno" || r.Daticert.Risposte != "ufficio@a.test" || r.Daticert.Consegna != "bob@b.test" {
		t.Fatalf("preavviso daticert %+v", r.Daticert)
	}
}
