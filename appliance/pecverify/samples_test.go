package pecverify

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The real messages live outside the project (../shared/pec-samples, see its
// README) and must not be copied into it: the tests read them from the
// folder named by SIGILLO_PEC_SAMPLES, which .ci/run sets.

const (
	sArubaBusta1  = "OCA_l10n-italy__message1"
	sArubaBusta2  = "OCA_l10n-italy__message2"
	sArubaAccett  = "OCA_l10n-italy__message2_accettazione"
	sArubaConsegn = "OCA_l10n-italy__message2_consegna"
	sArubaChain   = "OCA_l10n-italy__aruba-2014-signer-chain.pem"
	sNamirial     = "linux-mailinglist-archives_osst-users.lists.sourceforge.net.0__6919bccf_m.signed-part.eml"
	sNamirialPEM  = "linux-mailinglist-archives_osst-users__namirial-signer-chain.pem"
	sDocway       = "agenziaentrateriscossione_docway-msa__partNull.eml"
)

// sampleTable is the README's table: kind and verdict of every message.
var sampleTable = map[string]struct{ kind, signature string }{
	sArubaBusta1:                        {"posta-certificata", SignatureValid},
	sArubaBusta2:                        {"posta-certificata", SignatureValid},
	sArubaAccett:                        {"accettazione", SignatureValid},
	sArubaConsegn:                       {"avvenuta-consegna", SignatureValid},
	sNamirial:                           {"posta-certificata", SignatureValid}, // no X-Trasporto (a signed part saved alone): kind from daticert
	sDocway:                             {"posta-certificata", SignatureInvalid},
	"danzipie_go-pec__accettazione.eml": {"accettazione", SignatureInvalid},
	"danzipie_go-pec__consegna.eml":     {"errore-consegna", SignatureInvalid},
	"danzipie_go-pec__email_2.eml":      {"avvenuta-consegna", SignatureInvalid},
	"danzipie_go-pec__email_3.eml":      {"posta-certificata", SignatureInvalid},
}

// samplesDir returns the samples folder. Unset, the test is skipped loudly,
// except under CI=true where that is a failure: CI must run every
// interoperability test.
func samplesDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("SIGILLO_PEC_SAMPLES")
	if dir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SIGILLO_PEC_SAMPLES is not set: %s cannot run, and in CI that is a failure", t.Name())
		}
		t.Skipf("!!! SKIPPING %s: SIGILLO_PEC_SAMPLES is not set; set it to the shared pec-samples folder (../shared/pec-samples) to run it !!!", t.Name())
	}
	if !filepath.IsAbs(dir) {
		// go test runs in the package folder; .ci/run and make work from the
		// module root. Accept a path relative to either.
		if _, err := os.Stat(dir); err != nil {
			if root := moduleRoot(); root != "" {
				dir = filepath.Join(root, dir)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Fatalf("SIGILLO_PEC_SAMPLES=%s does not look like the pec-samples folder: %v", dir, err)
	}
	return dir
}

// moduleRoot is the nearest folder above the working directory with a go.mod.
func moduleRoot() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		up := filepath.Dir(d)
		if up == d {
			return ""
		}
		d = up
	}
}

func readSample(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pemCerts returns the certificates of a PEM file, in order.
func pemCerts(t testing.TB, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM")
	}
	return out
}

func poolOf(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// sampleMessages lists the messages in the folder: every .eml and every file
// without an extension (the OCA ones).
func sampleMessages(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && (filepath.Ext(e.Name()) == ".eml" || filepath.Ext(e.Name()) == "") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func TestSamplesKindAndVerdict(t *testing.T) {
	dir := samplesDir(t)
	files := sampleMessages(t, dir)
	if len(files) < len(sampleTable) {
		t.Errorf("found %d messages in %s, the README lists %d", len(files), dir, len(sampleTable))
	}
	for _, name := range files {
		want, ok := sampleTable[name]
		if !ok {
			t.Errorf("%s is not in the README table this test knows: add it", name)
			continue
		}
		r := Verify(name, readSample(t, dir, name), Options{})
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", line)
		if r.Kind != want.kind || r.Signature != want.signature {
			t.Errorf("%s: kind %q signature %q (%s), want %q %q", name, r.Kind, r.Signature, r.SignatureError, want.kind, want.signature)
		}
		if r.Daticert == nil || r.Identificativo == "" {
			t.Errorf("%s: no daticert or identificativo: %s", name, line)
		}
		if r.Signature == SignatureValid {
			if r.Error != "" || r.SignatureError != "" || r.Digest != "sha1" || r.SigningTime == nil || len(r.SignerSHA1) != 40 ||
				!strings.HasPrefix(r.Signer, "posta-certificata@") {
				t.Errorf("%s: valid but incomplete report: %s", name, line)
			}
		} else if r.SignatureError == "" {
			t.Errorf("%s: %s without signature_error", name, r.Signature)
		}
	}
}

// The valid samples, verified with Roots from their *-signer-chain.pem: the
// certificates expired long ago, the chain is judged at signing time. The
// Aruba chain is SHA-1 signed (DigitPA CA1), which crypto/x509 alone refuses.
func TestSamplesChainAtSigningTime(t *testing.T) {
	dir := samplesDir(t)
	aruba := pemCerts(t, readSample(t, dir, sArubaChain))
	namirial := pemCerts(t, readSample(t, dir, sNamirialPEM))
	cases := []struct {
		files []string
		chain []*x509.Certificate
		other []*x509.Certificate
	}{
		{[]string{sArubaBusta1, sArubaBusta2, sArubaAccett, sArubaConsegn}, aruba, namirial},
		{[]string{sNamirial}, namirial, aruba},
	}
	for i, c := range cases {
		leaf, ca := c.chain[0], c.chain[len(c.chain)-1]
		sum := sha1.Sum(leaf.Raw)
		if i == 0 {
			// What the SHA-1 path is for: crypto/x509 alone refuses the chain.
			at := ca.NotBefore.AddDate(3, 10, 0) // Nov 2014
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(ca), CurrentTime: at}); err == nil {
				t.Error("crypto/x509 now verifies the SHA-1 Aruba chain: verifyChainSHA1 may be unneeded")
			} else {
				t.Logf("crypto/x509 alone on the Aruba chain: %v", err)
			}
		}
		for _, name := range c.files {
			msg := readSample(t, dir, name)
			for label, roots := range map[string]*x509.CertPool{"CA only": poolOf(ca), "whole PEM": poolOf(c.chain...)} {
				r := Verify(name, msg, Options{Roots: roots})
				if r.Signature != SignatureValid {
					t.Errorf("%s with roots %s: %s (%s)", name, label, r.Signature, r.SignatureError)
				}
				if r.SignerSHA1 != hex.EncodeToString(sum[:]) {
					t.Errorf("%s: signer SHA-1 %s is not that of the PEM's first certificate", name, r.SignerSHA1)
				}
				if r.SigningTime == nil || r.SigningTime.Before(leaf.NotBefore) || r.SigningTime.After(leaf.NotAfter) {
					t.Errorf("%s: signing time %v outside the signer's validity", name, r.SigningTime)
				}
			}
			r := Verify(name, msg, Options{Roots: poolOf(c.other[len(c.other)-1])})
			if r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "certificate chain") {
				t.Errorf("%s with another gestore's CA as root: %s (%s), want invalid chain", name, r.Signature, r.SignatureError)
			}
		}
	}
}

func TestSamplesDaticert(t *testing.T) {
	dir := samplesDir(t)

	r := Verify(sArubaAccett, readSample(t, dir, sArubaAccett), Options{})
	d := r.Daticert
	if d == nil {
		t.Fatalf("accettazione: no daticert (%s)", r.Error)
	}
	if d.Tipo != "accettazione" || d.Errore != "nessuno" || d.Mittente != "l.battistini@pec.it" ||
		len(d.Destinatari) != 1 || d.Destinatari[0] != (Destinatario{Tipo: "certificato", Address: "thinkstudio@pec.it"}) ||
		d.GestoreEmittente != "ARUBA PEC S.p.A." || d.Oggetto != "test private" ||
		d.Identificativo != "opec275.20141114182632.23219.07.1.48@pec.aruba.it" || r.Identificativo != d.Identificativo ||
		d.MsgID != "<1415985992.182905912399292.346704098667155-openerp-private@elbati-Vostro-3550>" ||
		d.Ricevuta != "" || d.Consegna != "" {
		t.Errorf("accettazione daticert: %+v", d)
	}
	// One time reference per transaction: daticert time = signing time.
	if tm, err := d.Time(); err != nil || r.SigningTime == nil || !tm.Equal(*r.SigningTime) {
		t.Errorf("accettazione time %v %v, signing time %v", tm, err, r.SigningTime)
	}

	r = Verify(sArubaConsegn, readSample(t, dir, sArubaConsegn), Options{})
	if d := r.Daticert; d == nil || d.Tipo != "avvenuta-consegna" || d.Ricevuta != "completa" || d.Consegna != "thinkstudio@pec.it" {
		t.Errorf("consegna daticert: %+v", d)
	}

	r = Verify(sNamirial, readSample(t, dir, sNamirial), Options{})
	if d := r.Daticert; d == nil || d.Tipo != "posta-certificata" || len(d.Destinatari) != 7 {
		t.Fatalf("Namirial daticert: %+v (%s)", d, r.Error)
	}
	for _, de := range r.Daticert.Destinatari {
		if de.Tipo != "esterno" || !strings.Contains(de.Address, "@") {
			t.Errorf("Namirial destinatario %+v, want tipo esterno", de)
		}
	}
	if r.Identificativo != "opec21192.20241205000210.24820.46.1.184@sicurezzapostale.it" {
		t.Errorf("Namirial identificativo %q", r.Identificativo)
	}

	// Legalmail: postacert.eml before daticert.xml, the XML quoted-printable
	// with soft line breaks inside addresses and the identificativo.
	raw := readSample(t, dir, sDocway)
	if !bytes.Contains(raw, []byte("name=daticert.xml\r\nContent-Transfer-Encoding: quoted-printable")) {
		t.Fatal("docway sample no longer has a quoted-printable daticert")
	}
	r = Verify(sDocway, raw, Options{})
	d = r.Daticert
	if d == nil || len(d.Destinatari) != 18 {
		t.Fatalf("docway daticert: %+v (%s)", d, r.Error)
	}
	if d.Tipo != "posta-certificata" || d.GestoreEmittente != "InfoCert S.p.A." ||
		d.Identificativo != "9A5F8066.00842780.414D4BB9.7ED2F3D1.posta-certificata@legalmail.it" ||
		d.Destinatari[2].Address != "ads.bo@mailcert.avvocaturastato.it" ||
		d.Destinatari[17].Address != "protocollo.notifica.attigiudiziari@pec.comune.roma.it" ||
		d.MsgID != "<638878321.34176.1542988838060.JavaMail.fabriziobarberini@ordineavvocatiroma.org>" ||
		d.Oggetto != "Notificazione ai sensi della legge n. 53 del 1994" || d.Ricevuta != "completa" {
		t.Errorf("docway daticert: %+v", d)
	}
	if r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "digest mismatch") {
		t.Errorf("docway: %s (%s), want a digest mismatch", r.Signature, r.SignatureError)
	}

	// The errore-consegna sample carries errore, consegna and errore-esteso.
	r = Verify("consegna", readSample(t, dir, "danzipie_go-pec__consegna.eml"), Options{})
	if d := r.Daticert; d == nil || d.Tipo != "errore-consegna" || d.Errore != "no-dest" || d.Consegna == "" ||
		!strings.HasPrefix(d.ErroreEsteso, "5.1.1") {
		t.Errorf("errore-consegna daticert: %+v", d)
	}
}

// Run over the whole folder: one JSON line per file, false because of the
// negative cases.
func TestSamplesRun(t *testing.T) {
	dir := samplesDir(t)
	var files []string
	for _, n := range sampleMessages(t, dir) {
		files = append(files, filepath.Join(dir, n))
	}
	var out bytes.Buffer
	if Run(files, &out, Options{}) {
		t.Error("Run reported all valid, but the folder has negative cases")
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d lines for %d files", len(lines), len(files))
	}
	for i, l := range lines {
		var r Report
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.File != files[i] {
			t.Errorf("line %d: %v %q", i, err, l)
		}
	}
	valid := []string{sArubaBusta1, sArubaBusta2, sArubaAccett, sArubaConsegn, sNamirial}
	for i := range valid {
		valid[i] = filepath.Join(dir, valid[i])
	}
	out.Reset()
	if !Run(valid, &out, Options{}) {
		t.Errorf("Run on the valid samples reported a failure:\n%s", out.String())
	}
}
