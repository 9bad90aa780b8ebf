package pec

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/signer"
)

// The fuzz targets of the gestore as SMTP drives it: arbitrary message
// bytes handed to Receive (the reception point) and Submit (the access
// point) of gestori with a real store and a real signing key, built once
// per fuzz target (per process when fuzzing). Whatever the bytes, the
// gestore must answer quickly with a Reply or a Batch that the store
// accepts (an error, even ErrUnavailable, is a failure: the store is
// healthy), and every message it signs must verify, carry exactly one
// X-Ricevuta or X-Trasporto field, have no control character in its header
// and go only to whom the rules allow.
//
// The gestori sign with the fixed keys of testdata/fuzzkeys (throw-away
// ECDSA P-256 keys with the certificates signer.Init would make, valid
// 2020-2060, used nowhere else), so that the bustas and receipts of the seed
// corpus (and those the coordinator makes with f.Add) verify in every
// fuzzing worker too; ECDSA keeps the runs cheap.

// TestMain lowers the time spent minimizing each new input found while
// fuzzing from Go's 60 s to 3 s, unless -fuzzminimizetime is given: Go's
// byte minimizer runs the target about n² times for an input of n bytes,
// and with bustas of a few kilobytes a -fuzztime run would do little else.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.fuzzminimizetime" })
	if !given {
		if err := flag.Set("test.fuzzminimizetime", "3s"); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// fuzzSites is gestore A (a.test) and B (b.test) trusting each other, with
// the fixed keys, and a few mailboxes.
func fuzzSites(f *testing.F) (a, b *site) {
	f.Helper()
	keyA, err := os.ReadFile("testdata/fuzzkeys/a.pem")
	must(f, err)
	keyB, err := os.ReadFile("testdata/fuzzkeys/b.pem")
	must(f, err)
	a, b = twoSitesKeys(f, keyA, keyB)
	a.mailbox("bob@a.test", 0)
	a.mailbox("carol@a.test", 0)
	b.mailbox("carol@b.test", 0)
	return a, b
}

// The transaction a fuzz input describes: which's bits choose the gestore
// receiving (bit 0: B or A), the reverse-path (bits 1-2) and the
// recipients (bits 3-4).
var (
	fuzzSenders = []string{"alice@a.test", "posta-certificata@b.test", "", "mallory@example.org"}
	fuzzRcptsB  = [][]string{{"bob@b.test"}, {"bob@b.test", "carol@b.test"}, {"posta-certificata@b.test"}, {"ghost@b.test"}}
	fuzzRcptsA  = [][]string{{"alice@a.test"}, {"posta-certificata@a.test"}, {"alice@a.test", "bob@a.test"}, {"ghost@a.test"}}
)

const (
	toB           = 0
	toA           = 1
	fromAlice     = 0 << 1
	fromServiceB  = 1 << 1
	fromNull      = 2 << 1
	fromMallory   = 3 << 1
	rcpt0         = 0 << 3
	rcpt1         = 1 << 3
	rcptService   = 2 << 3
	rcptUnknown   = 3 << 3
	fuzzSlowInput = 10 * time.Second
)

func fuzzReceiveTx(a, b *site, which byte, msg []byte) (*site, Transaction) {
	s, rcpts := b, fuzzRcptsB
	if which&1 == toA {
		s, rcpts = a, fuzzRcptsA
	}
	return s, Transaction{Sender: fuzzSenders[(which>>1)&3], Recipients: rcpts[(which>>3)&3], Data: msg, Inbound: true, TLS: true}
}

// withHeader returns msg with its first field named name replaced by line
// ("" removes it), or line prepended when there is none.
func withHeader(msg []byte, name, line string) []byte {
	for _, f := range rawFields(msg) {
		if strings.EqualFold(f.name, name) {
			i := bytes.Index(msg, f.raw)
			repl := ""
			if line != "" {
				repl = line + "\r\n"
			}
			return append(append(append([]byte{}, msg[:i]...), repl...), msg[i+len(f.raw):]...)
		}
	}
	if line == "" {
		return msg
	}
	return append([]byte(line+"\r\n"), msg...)
}

// receiptsOf runs the busta through B and returns what B queued: the presa
// in carico (for A's service mailbox) and the ricevuta di avvenuta
// consegna (for alice).
func receiptsOf(f *testing.F, b *site, busta []byte) (presa, consegna []byte) {
	f.Helper()
	b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true})
	for _, it := range b.queued() {
		m := b.content(it.SHA256)
		switch headerOf(m, "X-Ricevuta") {
		case "presa-in-carico":
			presa = m
		case "avvenuta-consegna":
			consegna = m
		}
	}
	if presa == nil || consegna == nil {
		f.Fatalf("B queued no presa in carico or consegna for the seed busta")
	}
	return presa, consegna
}

func FuzzReceive(f *testing.F) {
	a, b := fuzzSites(f)
	_, busta := sendToB(f, a, "Seme di prova")
	presa, consegna := receiptsOf(f, b, busta)
	ordinary := []byte("Received: from mx.example.org by mx.b.test; Mon, 23 Nov 2026 10:00:00 +0100\r\n" +
		userMessage(`"Mallory, Inc." <mallory@example.org>`, "Bob <bob@b.test>", "", "=?iso-8859-1?q?Citt=E0?=", "", "ciao\r\n"))

	f.Add(byte(toB|fromAlice|rcpt0), busta)
	f.Add(byte(toB|fromAlice|rcpt1), busta)      // carol is not among its destinatari
	f.Add(byte(toB|fromMallory|rcpt0), busta)    // replayed with another reverse-path
	f.Add(byte(toB|fromNull|rcptUnknown), busta) // no reverse-path, unknown mailbox
	f.Add(byte(toA|fromServiceB|rcptService), presa)
	f.Add(byte(toA|fromServiceB|rcpt0), consegna)
	f.Add(byte(toA|fromServiceB|rcpt1), consegna)
	f.Add(byte(toB|fromMallory|rcpt0), ordinary)
	f.Add(byte(toB|fromMallory|rcptUnknown), ordinary)
	// Mutations of the unsigned header: the signature still holds.
	f.Add(byte(toB|fromAlice|rcpt0), withHeader(busta, "X-Trasporto", "X-Ricevuta: avvenuta-consegna"))
	f.Add(byte(toB|fromAlice|rcpt0), withHeader(busta, "X-Trasporto", "X-Ricevuta: posta-certificata"))
	f.Add(byte(toB|fromAlice|rcpt0), withHeader(busta, "Message-ID", "Message-ID: <other@a.test>"))
	f.Add(byte(toB|fromAlice|rcpt0), withHeader(busta, "From", "From: posta-certificata@b.test"))
	f.Add(byte(toA|fromServiceB|rcpt0), withHeader(consegna, "X-Ricevuta", "X-Ricevuta: presa-in-carico"))
	f.Add(byte(toA|fromServiceB|rcpt0), withHeader(consegna, "X-Ricevuta", "X-Trasporto: posta-certificata"))
	f.Add(byte(toA|fromServiceB|rcpt0), withHeader(consegna, "Subject", "Subject: =?utf-8?q?x=0D=0AX-Ricevuta:_accettazione?="))
	f.Add(byte(toB|fromAlice|rcpt0), bytes.ReplaceAll(busta, []byte("\r\n"), []byte("\n")))
	f.Add(byte(toB|fromAlice|rcpt0), busta[:len(busta)/2])
	// Mail from outside, odd shapes.
	f.Add(byte(toB|fromMallory|rcpt0), []byte("To: bob@b.test"))
	f.Add(byte(toB|fromMallory|rcpt0), []byte("Subject: \xe0 citt\xe0\r\nMessage-ID: no brackets \xff\r\nReply-To: x@y\rX-Ricevuta: accettazione\r\n\r\n"))
	f.Add(byte(toB|fromMallory|rcpt0), []byte("FROM: =?windows-1252?q?Jos=E9?= <jose@example.org>\r\nsubject: "+strings.Repeat("x", 1200)+"\r\n\r\nb\r\n"))
	f.Add(byte(toB|fromNull|rcpt1), []byte(""))

	f.Fuzz(func(t *testing.T, which byte, msg []byte) {
		s, tx := fuzzReceiveTx(a, b, which, msg)
		start := time.Now()
		out, err := s.g.Receive(context.Background(), tx)
		if d := time.Since(start); d > fuzzSlowInput {
			t.Fatalf("Receive took %v", d)
		}
		// Receipts go to the certified sender (the reverse-path, which must
		// be that sender: alice, the only one of the signed seeds), the
		// presa in carico to a gestore's service mailbox: nothing to anyone
		// else, whatever the reverse-path.
		allowed := func(addr string) bool {
			switch strings.ToLower(addr) {
			case "alice@a.test", "posta-certificata@a.test", "posta-certificata@b.test":
				return true
			}
			return false
		}
		checkOutcome(t, s, tx, out, err, allowed)
	})
}

func FuzzSubmit(f *testing.F) {
	a, _ := fuzzSites(f)
	rcpts := [][]string{{"bob@a.test"}, {"bob@b.test"}, {"bob@a.test", "carol@a.test"}, {"bob@a.test", "bob@b.test", "x@example.org"}}
	mixed := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n"
	attach := "--b1\r\nContent-Type: text/plain\r\n\r\nIl contratto.\r\n--b1\r\nContent-Type: application/pdf; name=\"contratto.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"contratto.pdf\"\r\n\r\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago=\r\n--b1--\r\n"
	f.Add(byte(0), []byte(userMessage("Alice <alice@a.test>", "bob@a.test", "", "Riunione", "", "Ci vediamo.\r\n")))
	f.Add(byte(1), []byte(userMessage("alice@a.test", "Bob B <bob@b.test>", "", "Remoto", "", "b\r\n")))
	f.Add(byte(2), []byte(userMessage("alice@a.test", "bob@a.test", "carol@a.test", "Breve", mixed+"X-TipoRicevuta: breve\r\n", attach)))
	f.Add(byte(2), []byte(userMessage("alice@a.test", "bob@a.test", "carol@a.test", "Sintetica", "x-tiporicevuta: SINTETICA\r\n", "b\r\n")))
	f.Add(byte(3), []byte(userMessage("alice@a.test", "bob@a.test, bob@b.test", "x@example.org", "=?utf-8?b?w6g=?= tutto", "", "b\r\n")))
	f.Add(byte(0), []byte("From: =?windows-1252?q?Al=EC?= <alice@a.test>\r\nTo: bob@a.test\r\nSubject: caff\xe8\r\nMessage-ID: senza-parentesi@client \xff\r\n\r\nb\r\n"))
	f.Add(byte(0), []byte("From: alice@a.test\r\nTo: bob@a.test\r\nSubject: "+strings.Repeat("y", 1500)+"\r\nReply-To: alice@a.test\rX-Ricevuta: accettazione\r\nReturn-Path: <ceo@bank.example>\r\n\r\nb\r\n"))
	f.Add(byte(0), []byte(userMessage("mallory@a.test", "bob@a.test", "", "Falso", "", "b\r\n")))
	f.Add(byte(0), []byte(userMessage("alice@a.test", "bob@a.test", "", "Bcc", "Bcc: carol@a.test\r\n", "b\r\n")))
	f.Add(byte(1), []byte("From: alice@a.test\nTo: bob@b.test"))
	f.Add(byte(0), []byte(""))

	f.Fuzz(func(t *testing.T, which byte, msg []byte) {
		tx := Transaction{Sender: "alice@a.test", Recipients: rcpts[which&3], Data: msg}
		start := time.Now()
		out, err := a.g.Submit(context.Background(), tx)
		if d := time.Since(start); d > fuzzSlowInput {
			t.Fatalf("Submit took %v", d)
		}
		allowed := func(addr string) bool {
			if strings.EqualFold(addr, tx.Sender) {
				return true
			}
			for _, r := range tx.Recipients {
				if strings.EqualFold(addr, r) {
					return true
				}
			}
			return false
		}
		checkOutcome(t, a, tx, out, err, allowed)
	})
}

// checkOutcome checks what the gestore made of tx and applies its batch.
func checkOutcome(t *testing.T, s *site, tx Transaction, out *Outcome, err error, allowed func(string) bool) {
	t.Helper()
	if err != nil {
		t.Fatalf("error (ErrUnavailable: %v) with a healthy store: %v", errors.Is(err, ErrUnavailable), err)
	}
	if out == nil || out.Reply == nil && out.Batch == nil && !strings.Contains(out.Summary, "already taken in charge") {
		// The one outcome with neither: a busta taken in charge before
		// (the fuzz store keeps what earlier inputs stored).
		t.Fatalf("neither a reply nor a batch: %+v", out)
	}
	if r := out.Reply; r != nil && (r.Code < 400 || r.Code > 599 || r.Text == "") {
		t.Fatalf("reply %+v", r)
	}
	if out.Batch == nil {
		return
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.cert)
	for i, d := range out.Batch.Deliveries {
		data := d.Data
		if len(d.Targets) > 0 {
			if !bytes.HasPrefix(data, []byte("Return-Path: <")) {
				t.Fatalf("delivery %d: stored without Return-Path", i)
			}
			data = data[bytes.Index(data, []byte("\r\n"))+2:]
		}
		if d.Outbound != nil {
			for _, r := range d.Outbound.Recipients {
				if !allowed(r) {
					t.Fatalf("delivery %d (%q) queued for %s (sender %q, recipients %v)", i, subjectOf(data), r, tx.Sender, tx.Recipients)
				}
			}
		}
		if bytes.Equal(data, tx.Data) {
			continue // a receipt delivered as it came
		}
		checkSigned(t, data, roots, s.clock.Now(), longestLine(tx.Data) <= maxLine)
	}
	if _, err := s.prop.Apply(context.Background(), out.Batch); err != nil {
		t.Fatalf("the store refused the batch: %v", err)
	}
}

// checkSigned checks a message the gestore wrote: a clean header of CRLF
// lines (no longer than 998 characters when the input had none), exactly
// one field telling its kind, and a signature that verifies.
func checkSigned(t *testing.T, m []byte, roots *x509.CertPool, now time.Time, shortLines bool) {
	t.Helper()
	end := bytes.Index(m, []byte("\r\n\r\n"))
	if end < 0 {
		t.Fatalf("no end of header in %q", m)
	}
	for line := range strings.SplitSeq(string(m[:end]), "\r\n") {
		if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }) {
			t.Fatalf("header line with a control character: %q", line)
		}
		if shortLines && len(line) > 998 {
			t.Fatalf("header line of %d characters: %.80q...", len(line), line)
		}
	}
	h, _, err := signer.ParseHeader(m)
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	n := 0
	for _, f := range h {
		if f.Name == "x-ricevuta" || f.Name == "x-trasporto" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d X-Ricevuta/X-Trasporto fields in %q", n, m[:end])
	}
	if v := signer.VerifyMIME(m, roots, now); !v.Valid {
		t.Fatalf("%q: our signature does not verify: %v", h.Get("subject"), v.Err)
	}
}

func longestLine(b []byte) int {
	n := 0
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		n = max(n, len(bytes.TrimSuffix(line, []byte("\r"))))
	}
	return n
}
