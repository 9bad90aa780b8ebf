package signer

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/digitorus/pkcs7"
)

// The seed corpus in testdata/fuzz/FuzzVerifyMIME and the root its valid
// seeds chain to, testdata/fuzz/root.pem, are written by
// TestWriteFuzzSeeds under SIGILLO_WRITE_FUZZ_SEEDS=1.
const fuzzRootFile = "testdata/fuzz/root.pem"

// FuzzVerifyMIME: whatever the input, VerifyMIME returns (no panic, no
// hang), and a valid verdict comes with a signer, content and no error.
func FuzzVerifyMIME(f *testing.F) {
	var roots *x509.CertPool
	if b, err := os.ReadFile(fuzzRootFile); err == nil {
		certs, _, err := parsePEM(b)
		if err != nil || len(certs) == 0 {
			f.Fatalf("%s: %v", fuzzRootFile, err)
		}
		roots = pool(certs...)
	}
	f.Add([]byte("Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\n0\x80\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n"))
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, r := range []*x509.CertPool{nil, roots, x509.NewCertPool()} {
			v := verifyMIME(msg, r, at)
			if v.Valid && (!v.Signed || v.Signer == nil || v.Content == nil || v.Err != nil || v.Digest == "") {
				t.Fatalf("valid verdict without its parts: %+v", v)
			}
			if !v.Valid && v.Err == nil {
				t.Fatalf("invalid verdict without a reason: %+v", v)
			}
		}
	})
}

// TestWriteFuzzSeeds writes the seed corpus of FuzzVerifyMIME, with a key
// file signer (no token needed). Run it with SIGILLO_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SIGILLO_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set SIGILLO_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	cfg := Config{KeyFile: filepath.Join(t.TempDir(), "seed.pem")}
	opts := initOpts()
	opts.Now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	opts.Validity = 50 * 365 * 24 * time.Hour
	cert := mustInit(t, cfg, opts)
	s := mustOpen(t, cfg)
	part := []byte("Content-Type: text/plain; charset=us-ascii\n\nRicevuta di accettazione: accettato dal sistema.\n")
	ct, body, err := s.SignMIME(part)
	if err != nil {
		t.Fatal(err)
	}
	signed := message(testAddress, ct, body)

	sd, err := pkcs7.NewSignedData(toCRLF(part))
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSigner(cert, s.key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var opaque bytes.Buffer
	opaque.WriteString("Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	writeBase64Lines(&opaque, der)

	seeds := map[string][]byte{
		"signed":       signed,
		"signed-lf":    bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")),
		"tampered":     tamper(t, signed),
		"opaque":       opaque.Bytes(),
		"unsigned":     []byte("From: a@b.it\r\nContent-Type: text/plain\r\n\r\nhello\r\n"),
		"truncated":    signed[:len(signed)-200],
		"bad-base64":   bytes.Replace(signed, []byte("MII"), []byte("M*I"), 1),
		"raw-der-part": []byte("Content-Type: application/pkcs7-mime\r\n\r\n" + string(der[:120])),
	}
	for name, seed := range seeds {
		want := name == "signed" || name == "signed-lf" || name == "opaque"
		if v := VerifyMIME(seed, pool(cert), time.Time{}); v.Valid != want {
			t.Fatalf("seed %s: valid %v (%v), want %v", name, v.Valid, v.Err, want)
		}
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyMIME")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, seed := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(fuzzRootFile, certPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
}
