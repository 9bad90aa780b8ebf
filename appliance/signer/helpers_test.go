package signer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

const (
	testProvider = "Example PEC S.p.A."
	testAddress  = "posta-certificata@pec.example.it"
)

// softhsmModule returns the path of SoftHSM2's PKCS#11 library; without
// it the test is skipped, loudly, or fails under CI=true.
func softhsmModule(t testing.TB) string {
	t.Helper()
	for _, p := range []string{
		os.Getenv("SIGILLO_SOFTHSM_MODULE"),
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("libsofthsm2.so not found: %s cannot run, and in CI that is a failure (apt-get install softhsm2)", t.Name())
	}
	t.Skipf("!!! SKIPPING %s: libsofthsm2.so not found; install softhsm2 to run it !!!", t.Name())
	return ""
}

// newToken makes a fresh SoftHSM2 token labelled "sigillo" (PIN 1234) in a
// temporary directory, points SOFTHSM2_CONF at it for the rest of the
// test, and returns the Config that reaches it.
func newToken(t testing.TB) Config {
	t.Helper()
	util := apptest.NeedTool(t, "softhsm2-util")
	module := softhsmModule(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", "sigillo", "--pin", "1234", "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return Config{PKCS11Module: module, TokenLabel: "sigillo", PIN: "1234", KeyLabel: "gestore"}
}

func initOpts() InitOptions {
	return InitOptions{ProviderName: testProvider, ServiceAddress: testAddress}
}

func mustInit(t testing.TB, cfg Config, opts InitOptions) *x509.Certificate {
	t.Helper()
	c, err := Init(cfg, opts)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return c
}

func mustOpen(t testing.TB, cfg Config) *Signer {
	t.Helper()
	s, err := Open(cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// samplePart is the first part of a PEC receipt, with LF line ends as a
// Go literal has them: SignMIME makes them CRLF.
const samplePart = `Content-Type: multipart/mixed; boundary="----------=_inner_42"
MIME-Version: 1.0

This is a multi-part message in MIME format.

------------=_inner_42
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Ricevuta di accettazione
Il giorno 23/11/2026 alle ore 10:00:00 (+0100) il messaggio "Prova" =E8 stato
accettato dal sistema ed inoltrato.

------------=_inner_42
Content-Type: application/xml; name="daticert.xml"
Content-Transfer-Encoding: base64
Content-Disposition: inline; filename="daticert.xml"

PD94bWwgdmVyc2lvbj0iMS4wIiBlbmNvZGluZz0iVVRGLTgiPz4KPHBvc3RhY2VydCB0aXBvPSJh
Y2NldHRhemlvbmUiIGVycm9yZT0ibmVzc3VubyI+PC9wb3N0YWNlcnQ+Cg==

------------=_inner_42--
`

// message puts top-level header fields in front of a signed entity, as
// the PEC code will.
func message(from, contentType string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: \"Per conto di: mario@pec.example.it\" <%s>\r\n", from)
	b.WriteString("To: anna@pec.example.it\r\nSubject: ACCETTAZIONE: Prova\r\n")
	b.WriteString("Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nX-Ricevuta: accettazione\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: " + contentType + "\r\n\r\n")
	b.Write(body)
	return b.Bytes()
}

// openssl runs openssl with args and returns its combined output.
func openssl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := apptest.NeedTool(t, "openssl")
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func certPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// newCA makes a throw-away ECDSA CA and returns its certificate and key
// in PEM.
func newCA(t testing.TB, name string) (cert *x509.Certificate, certPEMBytes, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{Country: []string{"IT"}, Organization: []string{name}, CommonName: name + " CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM(cert), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// tamper changes one byte of the signed text in msg.
func tamper(t testing.TB, msg []byte) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("accettato dal sistema"))
	if i < 0 {
		t.Fatal("no text to tamper with")
	}
	out := bytes.Clone(msg)
	out[i] = 'A'
	return out
}

func mustContain(t testing.TB, what, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%s: %q does not contain %q", what, s, sub)
	}
}
