package pec

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigillo/appliance/apptest"
	"sigillo/appliance/pecverify"
)

// dtdPath finds the official daticert DTD among the shared PEC samples.
func dtdPath(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SIGILLO_PEC_SAMPLES")
	if dir == "" {
		dir = "../../../shared/pec-samples"
	}
	p := filepath.Join(dir, "aleven_jpec-server__daticert.dtd")
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no daticert DTD at %s (set SIGILLO_PEC_SAMPLES): %v", p, err)
		}
		t.Skipf("!!! SKIPPING %s: no daticert DTD at %s; set SIGILLO_PEC_SAMPLES !!!", t.Name(), p)
	}
	return p
}

// TestEveryDaticertWeWriteIsValidAgainstTheDTD renders each kind of
// daticert.xml the gestore emits, with awkward text in it, and has xmllint
// validate it against the official DTD; pecverify must read back what was
// written.
func TestEveryDaticertWeWriteIsValidAgainstTheDTD(t *testing.T) {
	xmllint := apptest.NeedTool(t, "xmllint")
	dtd := dtdPath(t)
	base := Daticert{Mittente: "alice@a.test", Risposte: "alice@a.test", Oggetto: `Fattura <n. 1> & "2" – città €`,
		Destinatari: []Destinatario{{Address: "bob@b.test", Certificato: true}, {Address: "x@plain.test"}},
		Gestore:     "Gestore A S.p.A.", Time: t0, ID: "sigillo.1@a.test", MsgID: "<c1@client>"}
	kinds := map[string]func(d *Daticert){
		"accettazione":      func(d *Daticert) {},
		"non-accettazione":  func(d *Daticert) { d.Errore, d.ErroreEsteso = "altro", "il campo Bcc non deve contenere indirizzi" },
		"posta-certificata": func(d *Daticert) { d.Ricevuta = "breve" },
		"presa-in-carico":   func(d *Daticert) { d.Ricezione = []string{"bob@b.test", "carol@b.test"} },
		"avvenuta-consegna": func(d *Daticert) { d.Ricevuta, d.Consegna = "sintetica", "bob@b.test" },
		"errore-consegna": func(d *Daticert) {
			d.Errore, d.Consegna, d.ErroreEsteso = "no-dest", "bob@b.test", "5.1.1 - indirizzo non valido"
		},
		"preavviso-errore-consegna": func(d *Daticert) { d.Consegna = "bob@b.test" },
		"rilevazione-virus":         func(d *Daticert) { d.Errore, d.Consegna = "virus", "bob@b.test" },
	}
	dir := t.TempDir()
	for tipo, set := range kinds {
		d := base
		d.Tipo = tipo
		set(&d)
		xml := d.XML()
		path := filepath.Join(dir, tipo+".xml")
		must(t, os.WriteFile(path, xml, 0o600))
		if out, err := exec.Command(xmllint, "--noout", "--dtdvalid", dtd, path).CombinedOutput(); err != nil {
			t.Errorf("%s: xmllint: %v\n%s\n%s", tipo, err, out, xml)
		}
		back, err := pecverify.ParseDaticert(xml)
		if err != nil || back.Tipo != tipo || back.Oggetto != base.Oggetto || back.MsgID != "<c1@client>" || back.Zona != "+0100" {
			t.Errorf("%s: read back %+v, %v", tipo, back, err)
		}
	}
}

// failingSigner is a token that has gone away.
type failingSigner struct{}

func (failingSigner) SignMIME([]byte) (string, []byte, error) {
	return "", nil, errors.New("pkcs11: CKR_DEVICE_REMOVED")
}

// TestAnHSMThatFailsIsATemporaryErrorAndStoresNothing: with the token
// gone, a submission is neither accepted nor refused: the client is told
// to retry, and nothing was stored.
func TestAnHSMThatFailsIsATemporaryErrorAndStoresNothing(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	a.g.Signer = failingSigner{}
	_, err := a.g.Submit(context.Background(), Transaction{Sender: "alice@a.test", Recipients: []string{"bob@a.test"},
		Data: []byte(userMessage("alice@a.test", "bob@a.test", "", "x", "", "b\r\n"))})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "CKR_DEVICE_REMOVED") {
		t.Fatalf("Submit with the token gone: %v", err)
	}
	if n := len(a.inbox("alice@a.test")) + len(a.inbox("bob@a.test")); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}
