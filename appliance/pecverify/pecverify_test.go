package pecverify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"
)

// testPKI is a throw-away gestore: an ECDSA CA and an RSA signing
// certificate with the service address as rfc822Name, plus another CA that
// trusts nothing of it.
type testPKI struct {
	ca, other *x509.Certificate
	caKey     crypto.Signer
	leaf      *x509.Certificate
	key       *rsa.PrivateKey
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
	pkiErr  error
)

const testService = "posta-certificata@pec.example.test"

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { pkiVal, pkiErr = newPKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiVal
}

func newCA(cn string) (*x509.Certificate, crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Country: []string{"IT"}, Organization: []string{"Test"}, CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, k, err
}

// newLeaf issues a signing certificate (PEC.md §2.1 profile) valid from nb to na.
func newLeaf(ca *x509.Certificate, caKey crypto.Signer, key *rsa.PrivateKey, serial int64, nb, na time.Time) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(serial),
		Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{"Example PEC S.p.A."}, CommonName: "Posta Certificata Example"},
		EmailAddresses: []string{testService},
		NotBefore:      nb,
		NotAfter:       na,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func newPKI() (*testPKI, error) {
	p := &testPKI{}
	var err error
	if p.ca, p.caKey, err = newCA("Test PEC CA"); err != nil {
		return nil, err
	}
	if p.other, _, err = newCA("Some Other CA"); err != nil {
		return nil, err
	}
	if p.key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	p.leaf, err = newLeaf(p.ca, p.caKey, p.key, 2, time.Now().Add(-time.Hour), time.Now().AddDate(3, 0, 0))
	return p, err
}

const testDaticert = `<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="accettazione" errore="nessuno">
    <intestazione>
        <mittente>mario.rossi@pec.example.test</mittente>
        <destinatari tipo="certificato">anna.bianchi@pec.other.test</destinatari>
        <destinatari tipo="esterno">someone@example.org</destinatari>
        <risposte>mario.rossi@pec.example.test</risposte>
        <oggetto>Prova di perché</oggetto>
    </intestazione>
    <dati>
        <gestore-emittente>Example PEC S.p.A.</gestore-emittente>
        <data zona="+0100">
            <giorno>07/11/2025</giorno>
            <ora>16:52:00</ora>
        </data>
        <identificativo>sig.20251107165200.1@pec.example.test</identificativo>
        <msgid>&lt;client.1@example.test&gt;</msgid>
    </dati>
</postacert>
`

type msgOpts struct {
	digest     asn1.ObjectIdentifier // nil: SHA-256
	kindHeader string                // "X-Ricevuta: accettazione" by default
	legalmail  bool                  // postacert.eml first, QP daticert with attachment disposition
	noTrailing bool                  // the signed part ends without a line break
	cert       *x509.Certificate     // nil: the PKI's leaf
}

func b64lines(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}

// signedPart builds the first part of a PEC message, the multipart/mixed that
// gets signed, in CRLF form.
func signedPart(o msgOpts) []byte {
	text := "Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Ricevuta di accettazione\r\nIl messaggio =E8 stato accettato dal sistema.\r\n"
	var qp bytes.Buffer
	w := quotedprintable.NewWriter(&qp)
	_, _ = w.Write([]byte(strings.ReplaceAll(testDaticert, "\n", "\r\n")))
	_ = w.Close()
	dati := "Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: inline; filename=\"daticert.xml\"\r\n\r\n" + b64lines([]byte(testDaticert))
	if o.legalmail {
		dati = "Content-Type: application/xml; charset=UTF-8; name=daticert.xml\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
			"Content-Disposition: attachment; filename=\"daticert.xml\"\r\n\r\n" + qp.String() + "\r\n"
	}
	// The user's message: a PEC of its own inside must not be taken for ours.
	orig := "Content-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n" +
		"From: mario.rossi@pec.example.test\r\nSubject: prova\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"user\"\r\n\r\n--user\r\n" +
		"Content-Type: application/xml; name=\"daticert.xml\"\r\n\r\n<postacert tipo=\"rilevazione-virus\"/>\r\n--user--\r\n"
	parts := []string{text, dati, orig}
	if o.legalmail {
		parts = []string{text, orig, dati}
	}
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=\"----------=_inner\"\r\nContent-Transfer-Encoding: binary\r\nMIME-Version: 1.0\r\n\r\n")
	for _, p := range parts {
		b.WriteString("------------=_inner\r\n" + p + "\r\n")
	}
	b.WriteString("------------=_inner--")
	if !o.noTrailing {
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// buildPEC returns a signed PEC message in CRLF form, with the gestore's
// signature made here by digitorus/pkcs7.
func buildPEC(t testing.TB, o msgOpts) []byte {
	t.Helper()
	p := getPKI(t)
	part := signedPart(o)
	sd, err := pkcs7.NewSignedData(part)
	if err != nil {
		t.Fatal(err)
	}
	digest, micalg := o.digest, "sha1"
	if digest == nil {
		digest = pkcs7.OIDDigestAlgorithmSHA256
	}
	if digest.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		micalg = "sha-256"
	}
	sd.SetDigestAlgorithm(digest)
	cert := o.cert
	if cert == nil {
		cert = p.leaf
	}
	if err := sd.AddSignerChain(cert, p.key, []*x509.Certificate{p.ca}, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	kind := o.kindHeader
	if kind == "" {
		kind = "X-Ricevuta: accettazione"
	}
	var b bytes.Buffer
	b.WriteString("Return-Path: <" + testService + ">\r\n" +
		"Date: Fri, 07 Nov 2025 16:52:00 +0100\r\n" +
		"Subject: ACCETTAZIONE: prova\r\n" +
		"From: " + testService + "\r\n" +
		"To: mario.rossi@pec.example.test\r\n" +
		"X-Riferimento-Message-ID: <client.1@example.test>\r\n" +
		kind + "\r\n" +
		"Message-ID: <sig.20251107165200.1.2@pec.example.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=\"" + micalg + "\";\r\n" +
		"\tboundary=\"----OUTER\"\r\n\r\n" +
		"This is an S/MIME signed message\r\n\r\n" +
		"------OUTER\r\n")
	b.Write(part)
	b.WriteString("\r\n------OUTER\r\n" +
		"Content-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" +
		b64lines(der) + "\r\n------OUTER--\r\n")
	return b.Bytes()
}

func mustJSON(t testing.TB, r Report) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSyntheticValid(t *testing.T) {
	p := getPKI(t)
	sum := sha1.Sum(p.leaf.Raw)
	for _, c := range []struct {
		name   string
		o      msgOpts
		digest string
		lf     bool
	}{
		{"sha256", msgOpts{}, "sha256", false},
		{"sha1", msgOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}, "sha1", false},
		{"legalmail layout", msgOpts{legalmail: true}, "sha256", false},
		{"no line break before delimiter", msgOpts{noTrailing: true}, "sha256", false},
		{"stored with LF line ends", msgOpts{}, "sha256", true},
		{"LF, sha1, legalmail", msgOpts{digest: pkcs7.OIDDigestAlgorithmSHA1, legalmail: true}, "sha1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := buildPEC(t, c.o)
			if c.lf {
				msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
			}
			r := Verify("m.eml", msg, Options{})
			if r.Signature != SignatureValid || r.SignatureError != "" || r.Error != "" {
				t.Fatalf("%s", mustJSON(t, r))
			}
			if r.Kind != "accettazione" || r.Signer != testService || r.SignerSHA1 != hex.EncodeToString(sum[:]) ||
				r.Digest != c.digest || r.SigningTime == nil || time.Since(*r.SigningTime) > time.Minute ||
				r.Identificativo != "sig.20251107165200.1@pec.example.test" {
				t.Errorf("%s", mustJSON(t, r))
			}
			d := r.Daticert
			if d == nil || d.Tipo != "accettazione" || d.Mittente != "mario.rossi@pec.example.test" || len(d.Destinatari) != 2 ||
				d.Destinatari[1] != (Destinatario{"esterno", "someone@example.org"}) || d.Oggetto != "Prova di perché" ||
				d.MsgID != "<client.1@example.test>" || d.Zona != "+0100" {
				t.Errorf("daticert %+v", d)
			}
			// With the CA as root; judged at signing time, so a far Now changes nothing.
			for _, now := range []time.Time{{}, time.Now().AddDate(50, 0, 0)} {
				if r := Verify("m.eml", msg, Options{Roots: poolOf(p.ca), Now: now}); r.Signature != SignatureValid {
					t.Errorf("with roots, now %v: %s", now, mustJSON(t, r))
				}
			}
			r = Verify("m.eml", msg, Options{Roots: poolOf(p.other)})
			if r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "certificate chain") || r.Signer != testService {
				t.Errorf("with an unrelated root: %s", mustJSON(t, r))
			}
		})
	}
}

// Headers outside the signed part are not covered by the signature (the
// gestore's own headers are, inside): changing them keeps the verdict.
func TestSyntheticOuterHeadersUnsigned(t *testing.T) {
	msg := buildPEC(t, msgOpts{kindHeader: "X-Trasporto: posta-certificata"})
	msg = bytes.Replace(msg, []byte("Subject: ACCETTAZIONE: prova"), []byte("Subject: something else"), 1)
	r := Verify("m.eml", msg, Options{})
	if r.Signature != SignatureValid || r.Kind != "posta-certificata" {
		t.Errorf("%s", mustJSON(t, r))
	}
}

func TestSyntheticTampered(t *testing.T) {
	msg := buildPEC(t, msgOpts{})
	start := bytes.Index(msg, []byte("------OUTER\r\n")) + len("------OUTER\r\n")
	end := bytes.Index(msg[start:], []byte("\r\n------OUTER")) + start
	cases := map[string][]byte{}
	// One byte changed in the text, in the daticert (base64), in a header of
	// the signed part, and one byte added at the end of the signed part.
	for name, off := range map[string]int{
		"text":          bytes.Index(msg, []byte("stato accettato")),
		"daticert":      bytes.Index(msg, []byte("PD94bWwg")) + 3,
		"signed header": bytes.Index(msg, []byte("binary")),
	} {
		m := bytes.Clone(msg)
		m[off] ^= 0x01
		cases[name] = m
	}
	cases["byte added"] = append(append(bytes.Clone(msg[:end]), 'x'), msg[end:]...)
	// A flipped byte inside the signature value.
	m := bytes.Clone(msg)
	sigAt := bytes.LastIndex(m, []byte("\r\n\r\n------OUTER--")) - 20
	if m[sigAt] == 'A' {
		m[sigAt] = 'B'
	} else {
		m[sigAt] = 'A'
	}
	cases["signature value"] = m
	for name, m := range cases {
		r := Verify("m.eml", m, Options{})
		if r.Signature != SignatureInvalid || r.SignatureError == "" {
			t.Errorf("%s: %s", name, mustJSON(t, r))
		}
	}
	// The same flip in an LF-only copy: invalid over both forms.
	lf := bytes.ReplaceAll(cases["text"], []byte("\r\n"), []byte("\n"))
	if r := Verify("m.eml", lf, Options{}); r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "digest mismatch") {
		t.Errorf("LF tampered: %s", mustJSON(t, r))
	}
}

// A certificate that was not valid when the message was signed fails, even
// though its CA is trusted.
func TestSyntheticCertNotValidAtSigningTime(t *testing.T) {
	p := getPKI(t)
	old, err := newLeaf(p.ca, p.caKey, p.key, 3, time.Date(2014, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	msg := buildPEC(t, msgOpts{cert: old})
	for _, o := range []Options{{}, {Roots: poolOf(p.ca)}} {
		r := Verify("m.eml", msg, o)
		if r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "outside of certificate validity") {
			t.Errorf("%s", mustJSON(t, r))
		}
	}
}

func TestMissingSignature(t *testing.T) {
	daticertB64 := b64lines([]byte(testDaticert))
	for name, msg := range map[string]string{
		"plain text": "From: a@example.test\r\nSubject: hi\r\n\r\nhello\r\n",
		"mixed with daticert": "From: a@example.test\r\nX-Ricevuta: accettazione\r\nMessage-ID: <m1@x>\r\n" +
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n" +
			"Content-Type: application/xml; name=daticert.xml\r\nContent-Transfer-Encoding: base64\r\n\r\n" + daticertB64 + "--b--\r\n",
		"signed, one part": "X-Trasporto: errore\r\nMessage-ID: <orig@x>\r\nContent-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n" +
			"Content-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
		"signed, no parts": "Content-Type: multipart/signed; boundary=b\r\n\r\n--b--\r\n",
		"headers only":     "X-Ricevuta: presa-in-carico\r\nX-Riferimento-Message-ID: <ref@x>",
		"empty":            "",
	} {
		r := Verify(name, []byte(msg), Options{})
		if r.Signature != SignatureMissing {
			t.Errorf("%s: %s", name, mustJSON(t, r))
		}
		switch name {
		case "mixed with daticert":
			if r.Kind != "accettazione" || r.Daticert == nil || r.Identificativo != "sig.20251107165200.1@pec.example.test" {
				t.Errorf("%s: %s", name, mustJSON(t, r))
			}
		case "signed, one part":
			if r.Kind != "errore" || r.Identificativo != "orig@x" {
				t.Errorf("%s: %s", name, mustJSON(t, r))
			}
		case "headers only":
			if r.Kind != "presa-in-carico" || r.Identificativo != "ref@x" {
				t.Errorf("%s: %s", name, mustJSON(t, r))
			}
		}
	}
}

func TestGarbageAndTruncated(t *testing.T) {
	msg := buildPEC(t, msgOpts{})
	sigEnd := bytes.LastIndex(msg, []byte("\r\n\r\n------OUTER--"))
	sigStart := bytes.LastIndex(msg, []byte("filename=\"smime.p7s\"\r\n\r\n")) + len("filename=\"smime.p7s\"\r\n\r\n")
	cuts := []int{}
	for n := 0; n < sigEnd-10; n += 7 {
		cuts = append(cuts, n)
	}
	for n := sigEnd - 10; n <= len(msg); n++ {
		cuts = append(cuts, n)
	}
	for _, n := range cuts {
		r := Verify("t.eml", msg[:n], Options{})
		if r.Signature != SignatureValid && r.Signature != SignatureInvalid && r.Signature != SignatureMissing {
			t.Fatalf("cut at %d: signature %q", n, r.Signature)
		}
		// Valid only when the signature value is whole and what follows it
		// is white space or a whole delimiter: a partial "---" line is
		// part of the signature body.
		wantValid := false
		if n >= len(bytes.TrimRight(msg[:sigEnd], "=")) { // padding is optional
			tail := string(msg[sigEnd+4 : max(n, sigEnd+4)])
			wantValid = n <= sigEnd+4 || tail == "------OUTER" || strings.HasPrefix(tail, "------OUTER--")
		}
		if wantValid != (r.Signature == SignatureValid) {
			t.Errorf("cut at %d (signature %d–%d): %s", n, sigStart, sigEnd, mustJSON(t, r))
		}
	}
	garbage := [][]byte{
		{0, 1, 2, 3, 0xff, 0xfe},
		bytes.Repeat([]byte{0xff}, 5000),
		[]byte("Content-Type: multipart/signed; boundary=\"\"\r\n\r\n--\r\n--\r\n"),
		[]byte("Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIB\r\n--x--"),
		[]byte("Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x\r\nContent-Type: application/pkcs7-signature\r\n\r\n\x30\x80\x30\x80\x30\x80\r\n--x--"),
		[]byte("Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nnot a signature\r\n--x--"),
		[]byte(":\n:\n\t\n \n"),
		[]byte("Content-Type: ;;;===\r\n\r\n"),
	}
	for i, g := range garbage {
		r := Verify("g", g, Options{})
		if r.Signature == SignatureValid {
			t.Errorf("garbage %d: %s", i, mustJSON(t, r))
		}
		_ = mustJSON(t, r)
	}
}

// Hostile structure must cost bounded time and give an answer, not a hang.
func TestHostileInputBounded(t *testing.T) {
	deep := strings.Builder{}
	for i := 0; i < 5000; i++ {
		deep.WriteString("Content-Type: multipart/mixed; boundary=\"b" + string(rune('a'+i%26)) + "\"\r\n\r\n--b" + string(rune('a'+i%26)) + "\r\n")
	}
	many := "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\n\r\n", 200000)
	longHeader := "Subject: " + strings.Repeat("x", 3<<20) + "\r\n\r\n"
	manyHeaders := strings.Repeat("X-A: b\r\n", 20000) + "\r\n"
	signedMany := "Content-Type: multipart/signed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\n", 300000)
	for name, m := range map[string]string{
		"deep nesting": deep.String(), "many parts": many, "long header": longHeader,
		"many headers": manyHeaders, "signed, many parts": signedMany,
	} {
		start := time.Now()
		r := Verify(name, []byte(m), Options{})
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", name, d)
		}
		if r.Signature == SignatureValid {
			t.Errorf("%s: valid", name)
		}
		t.Logf("%s: %s / %s", name, r.SignatureError, r.Error)
	}
	if r := Verify("big", make([]byte, MaxMessageSize+1), Options{}); r.Error == "" {
		t.Error("oversized message without error")
	}
}

func TestParseDaticertCharsets(t *testing.T) {
	const body = `<postacert tipo="avvenuta-consegna"><intestazione><mittente>a@x</mittente>` +
		`<destinatari>b@y</destinatari><risposte>a@x</risposte><oggetto>Citt%s d%sItalia</oggetto></intestazione>` +
		`<dati><gestore-emittente>G</gestore-emittente><data zona="+0200"><giorno>01/06/2025</giorno><ora>10:00:00</ora></data>` +
		`<identificativo>id@x</identificativo><ricevuta tipo="breve"/><consegna>b@y</consegna></dati></postacert>`
	cases := map[string]struct {
		doc  string
		want string
	}{
		"utf-8":                     {`<?xml version="1.0" encoding="UTF-8"?>` + sprintf(body, "à", "’"), "Città d’Italia"},
		"iso-8859-1":                {`<?xml version="1.0" encoding="ISO-8859-1"?>` + sprintf(body, "\xe0", "'"), "Città d'Italia"},
		"windows-1252":              {`<?xml version='1.0' encoding='windows-1252'?>` + sprintf(body, "\xe0", "\x92"), "Città d’Italia"},
		"undeclared latin1":         {sprintf(body, "\xe0", "'"), "Città d'Italia"},
		"utf-8 declared, latin1":    {`<?xml version="1.0" encoding="utf-8"?>` + sprintf(body, "\xe0", "'"), "Città d'Italia"},
		"latin1 declared, utf-8":    {`<?xml version="1.0" encoding="iso-8859-1"?>` + sprintf(body, "à", "'"), "Città d'Italia"},
		"BOM":                       {"\xef\xbb\xbf" + sprintf(body, "à", "'"), "Città d'Italia"},
		"HTML entity":               {sprintf(body, "&agrave;", "&#39;"), "Città d'Italia"},
		"character references only": {sprintf(body, "&#224;", "&apos;"), "Città d'Italia"},
	}
	for name, c := range cases {
		d, err := ParseDaticert([]byte(c.doc))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d.Oggetto != c.want || d.Tipo != "avvenuta-consegna" || d.Errore != "nessuno" || d.Ricevuta != "breve" ||
			len(d.Destinatari) != 1 || d.Destinatari[0].Tipo != "certificato" || d.Consegna != "b@y" {
			t.Errorf("%s: %+v", name, d)
		}
		if tm, err := d.Time(); err != nil || tm.UTC() != time.Date(2025, 6, 1, 8, 0, 0, 0, time.UTC) {
			t.Errorf("%s: time %v %v", name, tm, err)
		}
	}
	for name, doc := range map[string]string{
		"wrong root":       `<html><body/></html>`,
		"not xml":          "\x00\x01garbage",
		"unknown charset":  `<?xml version="1.0" encoding="EBCDIC-XYZ"?><postacert tipo="x"/>`,
		"no tipo":          `<postacert><intestazione/></postacert>`,
		"unclosed":         `<postacert tipo="accettazione"><intestazione>`,
		"empty":            ``,
		"too large":        `<postacert tipo="a">` + strings.Repeat(" ", maxDaticert) + `</postacert>`,
		"entity expansion": `<!DOCTYPE p [<!ENTITY a "aaaaaaaa">]><postacert tipo="a"><intestazione><mittente>&a;&a;</mittente></intestazione></postacert>`,
	} {
		if _, err := ParseDaticert([]byte(doc)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func sprintf(format string, a ...string) string {
	for _, s := range a {
		format = strings.Replace(format, "%s", s, 1)
	}
	return format
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.eml")
	bad := filepath.Join(dir, "bad.eml")
	if err := os.WriteFile(good, buildPEC(t, msgOpts{}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("Subject: x\r\n\r\nno"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if !Run([]string{good, good}, &out, Options{}) {
		t.Errorf("all valid reported false:\n%s", out.String())
	}
	out.Reset()
	if Run(nil, &out, Options{}) || out.Len() != 0 {
		t.Error("no files: want false and no output")
	}
	files := []string{good, bad, filepath.Join(dir, "missing.eml"), dir}
	if Run(files, &out, Options{}) {
		t.Error("want false")
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(files) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var r Report
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if r.File != files[i] {
			t.Errorf("line %d: file %q", i, r.File)
		}
		want := SignatureMissing
		if i == 0 {
			want = SignatureValid
		}
		if r.Signature != want || (i >= 2) != (r.Error != "") {
			t.Errorf("line %d: %s", i, l)
		}
	}
	if !strings.Contains(lines[0], `"msgid":"<client.1@example.test>"`) {
		t.Errorf("angle brackets escaped in JSON: %s", lines[0])
	}
}

// Sloppy but readable structure, as some writers produce: a duplicated
// Content-Type parameter, a signature part without Content-Transfer-Encoding,
// an mbox "From " line, LF line ends.
func TestLenientStructure(t *testing.T) {
	msg := string(buildPEC(t, msgOpts{}))
	msg = strings.Replace(msg, "micalg=\"sha-256\";", "micalg=\"sha-256\"; micalg=sha-256;", 1)
	msg = strings.Replace(msg, "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"", "Content-Disposition: attachment; filename=\"smime.p7s\"", 1)
	msg = "From posta-certificata@pec.example.test Fri Nov  7 16:52:00 2025\r\n" + msg
	msg = strings.ReplaceAll(msg, "\r\n", "\n")
	r := Verify("sloppy.eml", []byte(msg), Options{})
	if r.Signature != SignatureValid || r.Kind != "accettazione" || r.Daticert == nil {
		t.Errorf("%s", mustJSON(t, r))
	}
}

// toIndefinite re-encodes a definite-length constructed element (DER) with
// the BER indefinite length, as streaming signers (openssl cms -stream, Java)
// write it.
func toIndefinite(t *testing.T, der []byte) []byte {
	t.Helper()
	if len(der) < 2 || der[0]&0x20 == 0 {
		t.Fatalf("not a constructed element: % x", der[:min(4, len(der))])
	}
	hdr := 2
	if der[1]&0x80 != 0 {
		hdr += int(der[1] & 0x7f)
	}
	out := append([]byte{der[0], 0x80}, der[hdr:]...)
	return append(out, 0, 0)
}

func TestBERSignature(t *testing.T) {
	msg := buildPEC(t, msgOpts{})
	start := bytes.Index(msg, []byte("filename=\"smime.p7s\"\r\n\r\n")) + len("filename=\"smime.p7s\"\r\n\r\n")
	end := bytes.LastIndex(msg, []byte("\r\n\r\n------OUTER--"))
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(msg[start:end]), "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	// ContentInfo and its [0] wrapper in indefinite form: still valid.
	outer := toIndefinite(t, der)
	oidLen := 2 + int(outer[3])
	ber := append(append(bytes.Clone(outer[:2+oidLen]), toIndefinite(t, outer[2+oidLen:len(outer)-2])...), 0, 0)
	m := append(append(bytes.Clone(msg[:start]), b64lines(ber)...), msg[end+2:]...)
	if r := Verify("ber.eml", m, Options{}); r.Signature != SignatureValid {
		t.Errorf("indefinite-length CMS: %s", mustJSON(t, r))
	}
	// The BER walk itself is tested in signer (TestCheckBER); here, what
	// Verify reports for a signature that is not whole or nests too deep.
	for name, b := range map[string][]byte{
		"truncated": der[:len(der)/2],
		"overrun":   {0x30, 0x03, 0x04, 0x05, 0x00},
	} {
		m := append(append(bytes.Clone(msg[:start]), b64lines(b)...), msg[end+2:]...)
		if r := Verify(name, m, Options{}); r.Signature != SignatureInvalid || !strings.Contains(r.SignatureError, "not a CMS signature") {
			t.Errorf("%s: %s", name, mustJSON(t, r))
		}
	}
	deep := "Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x\r\nContent-Type: application/pkcs7-signature\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x30, 0x80}, 400000)) + "\r\n--x--\r\n"
	if r := Verify("deep", []byte(deep), Options{}); !strings.Contains(r.SignatureError, "nested deeper") {
		t.Errorf("deeply nested BER: %s", mustJSON(t, r))
	}
}
