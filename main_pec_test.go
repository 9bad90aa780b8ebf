package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/config"
)

// pecWorld is two gestori on loopback, each with its own SoftHSM2 token,
// trusting each other through `directory export` / `directory import`, with
// [routes] between them.
type pecWorld struct {
	a, b    *instance
	dir     string
	certA   string // PEM of each gestore's certificate, for openssl
	certB   string
	certs   string // both
	dtd     string
	openssl string
	xmllint string
	module  string
	pins    map[string]string // token label → PIN file
}

// softhsmTokens makes a SoftHSM2 configuration in dir with one token per
// label (PIN "1234"+label, in the file it returns for that label), points
// SOFTHSM2_CONF at it for the rest of the test, and returns the module.
func softhsmTokens(t testing.TB, dir string, labels ...string) (module string, pinFiles map[string]string) {
	t.Helper()
	softhsm := need(t, "softhsm2-util")
	module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("softhsm2-util is installed but %s is not: %v", module, err)
	}
	tokens := filepath.Join(dir, "tokens")
	os.MkdirAll(tokens, 0o700)
	conf := filepath.Join(dir, "softhsm2.conf")
	os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", conf)
	pinFiles = map[string]string{}
	for _, label := range labels {
		if out, err := exec.Command(softhsm, "--init-token", "--free", "--label", label, "--pin", "1234"+label, "--so-pin", "5678").CombinedOutput(); err != nil {
			t.Fatalf("init token %s: %v %s", label, err, out)
		}
		pinFiles[label] = filepath.Join(dir, label+".pin")
		os.WriteFile(pinFiles[label], []byte("1234"+label+"\n"), 0o600)
	}
	return module, pinFiles
}

// pecGestoreConfig is the [signer] and [pec] tables of one gestore.
func pecGestoreConfig(module, token, pinFile, provider, service string) string {
	return fmt.Sprintf("[signer]\npkcs11_module = %q\ntoken_label = %q\npin_file = %q\nkey_label = \"gestore\"\n"+
		"[pec]\nprovider_name = %q\nservice_address = %q\n", module, token, pinFile, provider, service)
}

// newPECWorld starts the two gestori; extra[0] and extra[1], if given, are
// more configuration for A and B (a [scan] table, say).
func newPECWorld(t testing.TB, extra ...string) *pecWorld {
	t.Helper()
	w := &pecWorld{openssl: need(t, "openssl"), xmllint: need(t, "xmllint"), dir: t.TempDir()}
	need(t, "python3")
	samples := os.Getenv("SIGILLO_PEC_SAMPLES")
	if samples == "" {
		samples = "../shared/pec-samples"
	}
	w.dtd = filepath.Join(samples, "aleven_jpec-server__daticert.dtd")
	if _, err := os.Stat(w.dtd); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the daticert DTD is not at %s (set SIGILLO_PEC_SAMPLES): %v", w.dtd, err)
		}
		t.Skipf("!!! SKIPPING %s: no daticert DTD at %s; set SIGILLO_PEC_SAMPLES !!!", t.Name(), w.dtd)
	}

	// One SoftHSM2 configuration, two tokens: one per gestore.
	module, pins := softhsmTokens(t, w.dir, "gestore-a", "gestore-b")
	w.module, w.pins = module, pins

	w.a = newInstance(t, "mail.a.test", pecGestoreConfig(module, "gestore-a", pins["gestore-a"], "Gestore A S.p.A.", "posta-certificata@a.test"))
	w.b = newInstance(t, "mail.b.test", pecGestoreConfig(module, "gestore-b", pins["gestore-b"], "Gestore B S.p.A.", "posta-certificata@b.test"))
	routes := func(to *instance, domains ...string) string {
		var b strings.Builder
		b.WriteString("[routes]\n")
		for _, d := range domains {
			fmt.Fprintf(&b, "%q = \"127.0.0.1:%d\"\n", d, to.ports["smtp"])
		}
		return b.String()
	}
	baseA, baseB := w.a.extra, w.b.extra
	routedTo := map[*instance]int{} // the peer's smtp port each config routes to
	configure := func() {
		w.a.extra = baseA + routes(w.b, "b.test", "plain.test")
		w.b.extra = baseB + routes(w.a, "a.test")
		for i, in := range []*instance{w.a, w.b} {
			if i < len(extra) {
				in.extra += extra[i]
			}
		}
		w.a.saveConfig()
		w.b.saveConfig()
		routedTo[w.a], routedTo[w.b] = w.b.ports["smtp"], w.a.ports["smtp"]
	}
	configure()
	for _, in := range []*instance{w.a, w.b} {
		in.cli("", "gestore", "init")
	}
	w.certA = filepath.Join(w.dir, "a.pem")
	w.certB = filepath.Join(w.dir, "b.pem")
	os.WriteFile(w.certA, []byte(w.a.cli("", "gestore", "cert")), 0o600)
	os.WriteFile(w.certB, []byte(w.b.cli("", "gestore", "cert")), 0o600)
	w.certs = filepath.Join(w.dir, "both.pem")
	os.WriteFile(w.certs, []byte(w.a.cli("", "gestore", "cert")+w.b.cli("", "gestore", "cert")), 0o600)
	w.a.start()
	w.b.start()
	// start picks new ports when one was taken meanwhile: then the
	// other's route is stale, so both are configured and started again.
	for try := 0; routedTo[w.a] != w.b.ports["smtp"] || routedTo[w.b] != w.a.ports["smtp"]; try++ {
		if try == 3 {
			t.Fatal("the two gestori's routes keep going stale")
		}
		t.Logf("a port changed at start; routing the gestori to each other again")
		w.a.stop(syscall.SIGTERM)
		w.b.stop(syscall.SIGTERM)
		configure()
		w.a.start()
		w.b.start()
	}

	w.a.cli("", "domain", "add", "a.test", "--pec")
	w.b.cli("", "domain", "add", "b.test", "--pec")
	w.b.cli("", "domain", "add", "plain.test")
	for _, m := range []string{"alice@a.test", "posta-certificata@a.test"} {
		w.a.cli(password(m)+"\n", "mailbox", "add", m, "--password-stdin")
	}
	for _, m := range []string{"bob@b.test", "carol@b.test", "posta-certificata@b.test", "dave@plain.test"} {
		w.b.cli(password(m)+"\n", "mailbox", "add", m, "--password-stdin")
	}
	// Each gestore's directory entry, given to the other.
	for _, p := range [][2]*instance{{w.a, w.b}, {w.b, w.a}} {
		entry := filepath.Join(w.dir, p[0].name+".ldif")
		os.WriteFile(entry, []byte(p[0].cli("", "directory", "export")), 0o600)
		p[1].cli("", "directory", "import", entry)
	}
	return w
}

// pecMessage is what pecclient.py fetch reports about one message.
type pecMessage struct {
	File         string   `json:"file"`
	Subject      string   `json:"subject"`
	From         string   `json:"from"`
	XRicevuta    string   `json:"x_ricevuta"`
	XTrasporto   string   `json:"x_trasporto"`
	ContentType  string   `json:"content_type"`
	Parts        []string `json:"parts"`
	Daticert     string   `json:"daticert"`
	Text         string   `json:"text"`
	PostaMsgID   string   `json:"postacert_message_id"`
	PostaRif     string   `json:"postacert_riferimento"`
	PostaParts   []string `json:"postacert_parts"`
	PostaSubject string   `json:"postacert_subject"`
}

func (in *instance) pecClient(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, need(t, "python3"), append([]string{"testdata/pecclient.py"}, args...)...)
	cmd.Env = append(os.Environ(), in.env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pecclient %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// inbox fetches a mailbox's INBOX, waiting until it holds at least n
// messages.
func (in *instance) inbox(t testing.TB, user string, n int) []pecMessage {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		dir := t.TempDir()
		if keep := os.Getenv("SIGILLO_PEC_KEEP"); keep != "" {
			// Keep what was fetched, to look at it.
			dir = filepath.Join(keep, user)
			os.MkdirAll(dir, 0o700)
		}
		var msgs []pecMessage
		for _, line := range strings.Split(strings.TrimSpace(in.pecClient(t, "fetch", user, password(user), dir)), "\n") {
			if line == "" {
				continue
			}
			var m pecMessage
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("pecclient fetch: %v: %s", err, line)
			}
			msgs = append(msgs, m)
		}
		if len(msgs) >= n || time.Now().After(deadline) {
			if len(msgs) < n {
				t.Fatalf("%s has %d messages after 60 s, want %d: %+v", user, len(msgs), n, msgs)
			}
			return msgs
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func bySubjectPrefix(msgs []pecMessage, prefix string) []pecMessage {
	var out []pecMessage
	for _, m := range msgs {
		if strings.HasPrefix(m.Subject, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// checkSigned verifies a system message with openssl against the gestore
// certificate, and its daticert.xml against the official DTD.
func (w *pecWorld) checkSigned(t *testing.T, m pecMessage, certFile string) {
	t.Helper()
	out, err := exec.Command(w.openssl, "smime", "-verify", "-in", m.File, "-CAfile", certFile, "-purpose", "any", "-out", os.DevNull).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verification successful") {
		t.Errorf("openssl smime -verify %q: %v\n%s", m.Subject, err, out)
	}
	if m.Daticert != "" {
		out, err := exec.Command(w.xmllint, "--noout", "--dtdvalid", w.dtd, m.Daticert).CombinedOutput()
		if err != nil {
			t.Errorf("xmllint --dtdvalid on the daticert.xml of %q: %v\n%s", m.Subject, err, out)
		}
	}
}

func TestTwoGestoriExchangeCertifiedMail(t *testing.T) {
	w := newPECWorld(t)
	msg := filepath.Join(w.dir, "original.eml")
	os.WriteFile(msg, []byte("From: Alice <alice@a.test>\r\nTo: bob@b.test, dave@plain.test\r\nCc: carol@b.test\r\n"+
		"Subject: Contratto n. 42\r\nMessage-ID: <client-42@alice.example>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIn allegato il contratto firmato.\r\n"), 0o600)
	reply := w.a.pecClient(t, "send", "alice@a.test", password("alice@a.test"), msg, "bob@b.test", "carol@b.test", "dave@plain.test")
	if !strings.Contains(reply, `"code": 250`) {
		t.Fatalf("submission: %s", reply)
	}

	// The sender: ACCETTAZIONE, then CONSEGNA completa (bob, To) and
	// sintetica (carol, Cc). dave is ordinary: no consegna from him.
	sender := w.a.inbox(t, "alice@a.test", 3)
	acc := bySubjectPrefix(sender, "ACCETTAZIONE: Contratto n. 42")
	if len(acc) != 1 || acc[0].XRicevuta != "accettazione" {
		t.Fatalf("accettazione: %+v", sender)
	}
	for _, want := range []string{`bob@b.test ("posta certificata")`, `carol@b.test ("posta certificata")`, `dave@plain.test ("posta ordinaria")`} {
		if !strings.Contains(acc[0].Text, want) {
			t.Errorf("the accettazione does not list %s:\n%s", want, acc[0].Text)
		}
	}
	consegne := bySubjectPrefix(sender, "CONSEGNA: Contratto n. 42")
	if len(consegne) != 2 {
		t.Fatalf("want 2 consegne, got %+v", sender)
	}
	kinds := map[string]pecMessage{}
	for _, c := range consegne {
		dc, err := os.ReadFile(c.Daticert)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(string(dc), "<consegna>bob@b.test</consegna>"):
			kinds["bob"] = c
			if !strings.Contains(string(dc), `<ricevuta tipo="completa" />`) || !contains(c.Parts, "postacert.eml") {
				t.Errorf("bob's consegna is not completa: %s %v", dc, c.Parts)
			}
		case strings.Contains(string(dc), "<consegna>carol@b.test</consegna>"):
			kinds["carol"] = c
			if !strings.Contains(string(dc), `<ricevuta tipo="sintetica" />`) || contains(c.Parts, "postacert.eml") {
				t.Errorf("carol's (Cc) consegna is not sintetica: %s %v", dc, c.Parts)
			}
		}
	}
	if len(kinds) != 2 {
		t.Fatalf("consegne for %v, want bob and carol", kinds)
	}
	for _, m := range sender {
		w.checkSigned(t, m, w.certs)
	}

	// The recipients: POSTA CERTIFICATA with postacert.eml and daticert.xml.
	for _, u := range []string{"bob@b.test", "carol@b.test", "dave@plain.test"} {
		got := w.b.inbox(t, u, 1)
		if len(got) != 1 || got[0].Subject != "POSTA CERTIFICATA: Contratto n. 42" || got[0].XTrasporto != "posta-certificata" {
			t.Fatalf("%s got %+v", u, got)
		}
		m := got[0]
		if !contains(m.Parts, "postacert.eml") || !contains(m.Parts, "daticert.xml") {
			t.Errorf("%s: busta parts %v", u, m.Parts)
		}
		if !strings.Contains(m.From, "Per conto di: alice@a.test") || !strings.Contains(m.From, "<posta-certificata@a.test>") {
			t.Errorf("busta From: %q", m.From)
		}
		if m.PostaRif != "<client-42@alice.example>" || !strings.HasPrefix(m.PostaMsgID, "<sigillo.") {
			t.Errorf("postacert.eml Message-ID %q, X-Riferimento-Message-ID %q", m.PostaMsgID, m.PostaRif)
		}
		w.checkSigned(t, m, w.certA)
	}

	// A's service mailbox: PRESA IN CARICO from B, never shown to users.
	svc := w.a.inbox(t, "posta-certificata@a.test", 1)
	pic := bySubjectPrefix(svc, "PRESA IN CARICO: Contratto n. 42")
	if len(pic) != 1 || pic[0].XRicevuta != "presa-in-carico" {
		t.Fatalf("service mailbox: %+v", svc)
	}
	dc, _ := os.ReadFile(pic[0].Daticert)
	for _, want := range []string{"<ricezione>bob@b.test</ricezione>", "<ricezione>carol@b.test</ricezione>", "<gestore-emittente>Gestore B S.p.A.</gestore-emittente>"} {
		if !strings.Contains(string(dc), want) {
			t.Errorf("presa in carico daticert lacks %s:\n%s", want, dc)
		}
	}
	w.checkSigned(t, pic[0], w.certB)

	// Every step is in the legal logs, whose chains verify.
	id := strings.Trim(pic[0].PostaMsgID, "<>")
	if id == "" {
		id = strings.Trim(w.b.inbox(t, "bob@b.test", 1)[0].PostaMsgID, "<>")
	}
	var events []struct {
		Event      string   `json:"event"`
		Recipients []string `json:"recipients"`
	}
	if err := json.Unmarshal([]byte(w.a.cli("", "log", "search", "--msgid", id, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range events {
		names = append(names, e.Event)
	}
	got := strings.Join(names, ",")
	for _, want := range []string{"accettazione", "busta-trasporto", "presa-in-carico", "consegna"} {
		if !strings.Contains(got, want) {
			t.Errorf("A's log for %s: %s (no %s)", id, got, want)
		}
	}
	for _, in := range []*instance{w.a, w.b} {
		if out := in.cli("", "log", "verify"); !strings.Contains(out, "log OK") {
			t.Errorf("%s: log verify: %s", in.name, out)
		}
	}
	t.Logf("A's log for %s: %s", id, got)

	// One byte of one entry changed in A's database file: log verify says
	// where, and exits 1.
	w.a.stop(syscall.SIGTERM)
	cfg, err := config.Load(w.a.config)
	if err != nil {
		t.Fatal(err)
	}
	path := appliance.DatabaseFile(cfg)
	checkpoint(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("busta-trasporto")); n != 1 {
		t.Fatalf("the event name is in the file %d times, want once", n)
	}
	data[bytes.Index(data, []byte("busta-trasporto"))+len("busta-trasport")] = 'i'
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := w.a.try("", "log", "verify")
	if err == nil || !strings.Contains(out+err.Error(), "first problem at seq 2") {
		t.Fatalf("log verify after a one-byte change: %v\n%s", err, out)
	}
	t.Logf("after one byte changed: %s", strings.TrimSpace(strings.Split(out+err.Error(), "\n")[0]))
	t.Logf("alice: %d messages, bob/carol/dave: 1 busta each, A's service mailbox: presa in carico; every signature verified by openssl, every daticert valid against the DTD", len(sender))
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
