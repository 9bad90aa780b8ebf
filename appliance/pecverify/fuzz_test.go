package pecverify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"
)

// FuzzVerify: whatever the bytes, Verify returns a report with one of the
// three verdicts, that marshals to JSON, the same twice; a valid one names its
// signer. The committed seed corpus (testdata/fuzz/FuzzVerify) is synthetic,
// made by TestWriteFuzzSeeds; the real samples are not the project's and
// stay out of it. Run with
//
//	go test -run '^$' -fuzz FuzzVerify -fuzztime 30s ./appliance/pecverify/
func FuzzVerify(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIIB\r\n--b--\r\n"))
	f.Add([]byte("X-Ricevuta: accettazione\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/xml; name=daticert.xml\n\n<postacert tipo=\"accettazione\"/>\n--b--\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		start := time.Now()
		r := Verify("fuzz", msg, Options{})
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%d bytes took %v", len(msg), d)
		}
		switch r.Signature {
		case SignatureValid:
			if r.Signer == "" && r.SignerSHA1 == "" || r.Digest == "" {
				t.Errorf("valid without signer or digest: %+v", r)
			}
		case SignatureInvalid, SignatureMissing:
		default:
			t.Fatalf("signature %q", r.Signature)
		}
		a, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(Verify("fuzz", msg, Options{}))
		if !bytes.Equal(a, b) {
			t.Fatalf("not deterministic:\n%s\n%s", a, b)
		}
	})
}

func FuzzParseDaticert(f *testing.F) {
	f.Add([]byte(testDaticert))
	f.Add([]byte(`<?xml version="1.0" encoding="ISO-8859-1"?><postacert tipo="a"><intestazione><oggetto>Citt` + "\xe0" + `</oggetto></intestazione></postacert>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDaticert(b)
		if err == nil && (d == nil || d.Tipo == "") {
			t.Fatalf("no error but %+v", d)
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus of FuzzVerify
// when PECVERIFY_WRITE_FUZZ_SEEDS=1: synthetic messages only, signed by a
// throw-away key made on the spot.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PECVERIFY_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set PECVERIFY_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzVerify")
	}
	signed := buildPEC(t, msgOpts{})
	lf := bytes.ReplaceAll(buildPEC(t, msgOpts{digest: pkcs7.OIDDigestAlgorithmSHA1, legalmail: true}), []byte("\r\n"), []byte("\n"))
	tampered := bytes.Replace(bytes.Clone(signed), []byte("stato accettato"), []byte("stato rifiutato"), 1)
	busta := buildPEC(t, msgOpts{kindHeader: "X-Trasporto: posta-certificata", noTrailing: true})
	seeds := map[string][]byte{
		"signed-sha256-crlf": signed,
		"signed-sha1-lf-qp":  lf,
		"busta-no-trailing":  busta,
		"tampered":           tampered,
		"truncated-in-sig":   signed[:len(signed)-300],
		"truncated-in-part":  signed[:len(signed)/3],
		"unsigned-mixed":     []byte("From: a@x\r\nX-Ricevuta: presa-in-carico\r\nContent-Type: multipart/mixed; boundary=\"q\"\r\n\r\npreamble\r\n--q\r\nContent-Type: text/plain\r\n\r\nhello\r\n--q\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<postacert tipo=3D\"presa-in-carico\"><dati><ricezione>b@y</ricezione></dati></postacert>\r\n--q--\r\nepilogue\r\n"),
		"anomalia-nested":    []byte("X-Trasporto: errore\r\nMessage-ID: <o@x>\r\nContent-Type: multipart/signed; boundary=s\r\n\r\n--s\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nx\r\n--a--\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n--m--\r\n--s\r\nContent-Type: application/x-pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExADCABgkqhkiG9w0BBwEAAKCAMAAAMQAAAAAAAAA=\r\n--s--\r\n"),
		"garbage":            {0x30, 0x82, 0xff, 0xff, 0x00, '\n', '-', '-', '\r', 0xc3},
		"headers-only":       []byte("Content-Type: multipart/signed; boundary=\"x\"\n"),
		"ber-indefinite-sig": []byte("Content-Type: multipart/signed; boundary=x\n\n--x\n\nbody\n--x\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: binary\n\n\x30\x80\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\x80\x30\x80\x00\x00\x00\x00\x00\x00\n--x--\n"),
		"empty":              {},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The committed seeds are what their names say: the signed ones still verify
// (the seed certificate's validity is judged at signing time), the broken
// ones do not.
func TestFuzzSeedsVerdicts(t *testing.T) {
	want := map[string]string{
		"signed-sha256-crlf": SignatureValid, "signed-sha1-lf-qp": SignatureValid, "busta-no-trailing": SignatureValid,
		"tampered": SignatureInvalid, "truncated-in-sig": SignatureInvalid, "truncated-in-part": SignatureMissing,
		"unsigned-mixed": SignatureMissing, "anomalia-nested": SignatureInvalid, "garbage": SignatureMissing,
		"headers-only": SignatureInvalid, "ber-indefinite-sig": SignatureInvalid, "empty": SignatureMissing,
		"asn1-error-with-pointer": SignatureInvalid, // found by the fuzzer: an error text that changed from run to run
	}
	for name, verdict := range want {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", name))
		if err != nil {
			t.Fatal(err)
		}
		s, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n[]byte(")
		s, ok2 := strings.CutSuffix(s, ")\n")
		if !ok || !ok2 {
			t.Fatalf("%s: not a []byte seed", name)
		}
		msg, err := strconv.Unquote(s)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r := Verify(name, []byte(msg), Options{}); r.Signature != verdict {
			t.Errorf("%s: %s (%s), want %s", name, r.Signature, r.SignatureError, verdict)
		}
	}
}
