package main

import (
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"sigillo/appliance/apptest"
)

// plainInbound sends msg to the instance's port 25 as another server
// would (STARTTLS when offered), and returns the server's reply to DATA.
func (in *instance) plainInbound(t *testing.T, from, to, msg string) error {
	t.Helper()
	c, err := smtp.Dial(fmt.Sprintf("127.0.0.1:%d", in.ports["smtp"]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	wc.Write([]byte(msg))
	return wc.Close()
}

func eicarMessage(from, to, subject string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@client>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nIn allegato.\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=eicar.com\r\nContent-Disposition: attachment; filename=eicar.com\r\n\r\n" +
		apptest.EICAR + "\r\n--b--\r\n"
}

// TestVirusesAreStoppedAtEveryEntryPoint runs gestore B with a real clamd
// (a private EICAR signature database) and gestore A without a scanner, so
// that A lets an infected busta through to B.
func TestVirusesAreStoppedAtEveryEntryPoint(t *testing.T) {
	clamd := apptest.StartClamd(t)
	scanConf := func(required bool, max int) string {
		return fmt.Sprintf("[scan]\nclamd = %q\nrequired = %v\nmax_scan_bytes = %d\n", clamd.Address, required, max)
	}
	w := newPECWorld(t, "", scanConf(true, 1<<20))
	if out := w.b.cli("", "scan", "status"); !strings.Contains(out, "answering") || !strings.Contains(out, "ClamAV") {
		t.Fatalf("scan status: %s", out)
	}

	t.Run("EICAR in a busta from another gestore", func(t *testing.T) {
		msg := filepath.Join(w.dir, "eicar-busta.eml")
		os.WriteFile(msg, []byte(eicarMessage("alice@a.test", "bob@b.test", "Fattura infetta")), 0o600)
		if reply := w.a.pecClient(t, "send", "alice@a.test", password("alice@a.test"), msg, "bob@b.test"); !strings.Contains(reply, `"code": 250`) {
			t.Fatalf("A (no scanner) refused it: %s", reply)
		}
		// ACCETTAZIONE, then the avviso di mancata consegna per virus.
		alice := bySubjectPrefix(w.a.inbox(t, "alice@a.test", 2), "AVVISO DI MANCATA CONSEGNA PER VIRUS: Fattura infetta")
		if len(alice) != 1 {
			t.Fatalf("alice has no avviso di mancata consegna per virus")
		}
		w.checkSigned(t, alice[0], w.certs)
		svc := w.a.inbox(t, "posta-certificata@a.test", 2)
		if len(bySubjectPrefix(svc, "PROBLEMA DI SICUREZZA: Fattura infetta")) != 1 || len(bySubjectPrefix(svc, "PRESA IN CARICO: Fattura infetta")) != 1 {
			t.Fatalf("A's service mailbox: %+v", svc)
		}
		for _, m := range bySubjectPrefix(svc, "PROBLEMA DI SICUREZZA") {
			w.checkSigned(t, m, w.certB)
		}
		if got := w.b.inbox(t, "bob@b.test", 0); len(got) != 0 {
			t.Fatalf("bob got the infected busta: %+v", got)
		}
		if out := w.b.cli("", "scan", "status"); !strings.Contains(out, "virus store: 1 message") {
			t.Fatalf("B's scan status: %s", out)
		}
	})

	t.Run("EICAR in a PEC submission", func(t *testing.T) {
		msg := filepath.Join(w.dir, "eicar-sub.eml")
		os.WriteFile(msg, []byte(eicarMessage("bob@b.test", "carol@b.test", "Invio infetto")), 0o600)
		reply := w.b.pecClient(t, "send", "bob@b.test", password("bob@b.test"), msg, "carol@b.test")
		if !strings.Contains(reply, `"code": 554`) || !strings.Contains(reply, apptest.EICARSignature) {
			t.Fatalf("submission: %s", reply)
		}
		got := bySubjectPrefix(w.b.inbox(t, "bob@b.test", 1), "AVVISO DI NON ACCETTAZIONE PER VIRUS: Invio infetto")
		if len(got) != 1 {
			t.Fatalf("bob has no avviso di non accettazione per virus")
		}
		w.checkSigned(t, got[0], w.certB)
		if n := len(w.b.inbox(t, "carol@b.test", 0)); n != 0 {
			t.Fatalf("carol got %d messages", n)
		}
	})

	t.Run("EICAR in plain inbound mail", func(t *testing.T) {
		err := w.b.plainInbound(t, "someone@example.org", "dave@plain.test", eicarMessage("someone@example.org", "dave@plain.test", "ciao"))
		if err == nil || !strings.Contains(err.Error(), "554") || !strings.Contains(err.Error(), apptest.EICARSignature) {
			t.Fatalf("plain inbound EICAR: %v", err)
		}
		if err := w.b.plainInbound(t, "someone@example.org", "dave@plain.test", "Subject: pulito\r\n\r\nniente virus\r\n"); err != nil {
			t.Fatalf("a clean message: %v", err)
		}
		// And an ordinary domain's user submitting it.
		msg := filepath.Join(w.dir, "eicar-plain.eml")
		os.WriteFile(msg, []byte(eicarMessage("dave@plain.test", "someone@example.org", "ordinario")), 0o600)
		if reply := w.b.pecClient(t, "send", "dave@plain.test", password("dave@plain.test"), msg, "someone@example.org"); !strings.Contains(reply, `"code": 554`) {
			t.Fatalf("ordinary submission with EICAR: %s", reply)
		}
	})

	t.Run("clamd down, required: 451; not required: passes marked", func(t *testing.T) {
		clamd.Stop()
		err := w.b.plainInbound(t, "someone@example.org", "dave@plain.test", "Subject: during the outage\r\n\r\ntesto\r\n")
		if err == nil || !strings.Contains(err.Error(), "451") {
			t.Fatalf("clamd down, required: %v", err)
		}
		if out, err := w.b.try("", "scan", "status"); err == nil || !strings.Contains(out, "NOT ANSWERING") {
			t.Fatalf("scan status with clamd down: %v %s", err, out)
		}
		w.b.stop(syscall.SIGTERM)
		w.b.extra = strings.Replace(w.b.extra, "required = true", "required = false", 1)
		w.b.saveConfig()
		w.b.start()
		if err := w.b.plainInbound(t, "someone@example.org", "dave@plain.test", "Subject: unscanned\r\n\r\ntesto\r\n"); err != nil {
			t.Fatalf("clamd down, not required: %v", err)
		}
		var found bool
		for _, m := range w.b.inbox(t, "dave@plain.test", 1) {
			data, _ := os.ReadFile(m.File)
			if m.Subject == "unscanned" && strings.Contains(string(data), "X-Sigillo-Scan: skipped (clamd unavailable)") {
				found = true
			}
		}
		if !found {
			t.Fatalf("the unscanned message is not marked")
		}
	})

	t.Run("larger than max_scan_bytes: passes marked", func(t *testing.T) {
		clamd = apptest.StartClamd(t)
		w.b.stop(syscall.SIGTERM)
		w.b.extra = w.b.extra[:strings.Index(w.b.extra, "[scan]")] + scanConf(true, 2000)
		w.b.saveConfig()
		w.b.start()
		big := "Subject: grande\r\n\r\n" + strings.Repeat("x", 3000) + "\r\n"
		if err := w.b.plainInbound(t, "someone@example.org", "dave@plain.test", big); err != nil {
			t.Fatalf("big message: %v", err)
		}
		var found bool
		for _, m := range w.b.inbox(t, "dave@plain.test", 1) {
			data, _ := os.ReadFile(m.File)
			if m.Subject == "grande" && strings.Contains(string(data), "X-Sigillo-Scan: skipped (larger than max_scan_bytes") {
				found = true
			}
		}
		if !found {
			t.Fatalf("the big message is not marked")
		}
	})
}
