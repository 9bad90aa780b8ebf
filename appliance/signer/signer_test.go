package signer

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
)

// checkProfile checks the certificate profile of PEC.md §2.1.
func checkProfile(t *testing.T, c *x509.Certificate) {
	t.Helper()
	if len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != testProvider ||
		c.Subject.CommonName != "Posta Certificata "+testProvider {
		t.Errorf("subject %q: want the provider name in O and CN", c.Subject)
	}
	if len(c.EmailAddresses) != 1 || c.EmailAddresses[0] != testAddress {
		t.Errorf("rfc822Name %q, want %q", c.EmailAddresses, testAddress)
	}
	if strings.Contains(c.Subject.String(), "@") {
		t.Errorf("subject %q carries a mail address", c.Subject)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment {
		t.Errorf("key usage %b, want digitalSignature and nonRepudiation", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageEmailProtection {
		t.Errorf("extended key usage %v, want emailProtection", c.ExtKeyUsage)
	}
	if c.PublicKeyAlgorithm != x509.RSA || c.PublicKey.(interface{ Size() int }).Size() != 256 {
		t.Errorf("key %s, want RSA 2048", c.PublicKeyAlgorithm)
	}
	seen := map[string]bool{}
	for _, e := range c.Extensions {
		seen[e.Id.String()] = true
		switch {
		case e.Id.Equal(oidBasicConstraints):
			t.Error("basicConstraints present; PEC.md §2.1: MUST NOT")
		case e.Id.Equal(oidKeyUsage):
			if !e.Critical {
				t.Error("keyUsage not critical")
			}
		case e.Critical:
			t.Errorf("extension %s is critical", e.Id)
		}
	}
	for _, id := range []asn1.ObjectIdentifier{oidKeyUsage, oidSubjectAltName, oidSubjectKeyID, oidAuthorityKeyID} {
		if !seen[id.String()] {
			t.Errorf("extension %s missing", id)
		}
	}
}

// TestSignAndVerifyOnSoftHSM: a key and certificate made in a SoftHSM
// token sign a receipt that openssl (smime and cms, with the certificate
// as the trust anchor and the S/MIME signing purpose) and VerifyMIME
// accept; one byte changed in the signed part, none of them does.
func TestSignAndVerifyOnSoftHSM(t *testing.T) {
	cfg := newToken(t)
	cert := mustInit(t, cfg, initOpts())
	checkProfile(t, cert)
	if !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		t.Errorf("issuer %q: want self-signed", cert.Issuer)
	}
	s := mustOpen(t, cfg)
	if !s.Certificate().Equal(cert) || len(s.Chain()) != 1 {
		t.Fatalf("Open found %q and a chain of %d, want the certificate of Init alone", s.Certificate().Subject, len(s.Chain()))
	}

	ct, body, err := s.SignMIME([]byte(samplePart))
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "Content-Type", ct, `multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="`)
	if bytes.Contains(bytes.ReplaceAll(body, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("the body has bare LFs")
	}
	for _, want := range []string{"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"", "Content-Transfer-Encoding: base64", "filename=\"smime.p7s\""} {
		mustContain(t, "body", string(body), want)
	}
	msg := message(cert.EmailAddresses[0], ct, body)
	file := writeFile(t, "accettazione.eml", msg)
	caFile := writeFile(t, "gestore.pem", certPEM(cert))
	content := filepath.Join(t.TempDir(), "content")

	out, err := openssl(t, "smime", "-verify", "-noverify", "-in", file, "-out", content)
	if err != nil {
		t.Fatalf("openssl smime -verify -noverify: %v\n%s", err, out)
	}
	t.Logf("openssl smime -verify -noverify: %s", strings.TrimSpace(out))
	got, err := os.ReadFile(content)
	if err != nil || !bytes.Contains(got, []byte("daticert.xml")) {
		t.Fatalf("openssl's content %q (%v) is not the part", got, err)
	}
	out, err = openssl(t, "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign", "-in", file, "-out", os.DevNull)
	if err != nil {
		t.Fatalf("openssl cms -verify -CAfile -purpose smimesign: %v\n%s", err, out)
	}
	t.Logf("openssl cms -verify -CAfile gestore.pem -purpose smimesign: %s", strings.TrimSpace(out))

	v := VerifyMIME(msg, pool(cert), time.Time{})
	if !v.Signed || !v.Valid || v.Err != nil {
		t.Fatalf("VerifyMIME: %+v", v)
	}
	if !v.Signer.Equal(cert) || v.Digest != "sha256" || !bytes.Equal(v.Content, toCRLF([]byte(samplePart))) {
		t.Fatalf("VerifyMIME: signer %q digest %s content %q", v.Signer.Subject, v.Digest, v.Content)
	}
	if d := time.Since(v.SigningTime); d < -time.Minute || d > time.Minute {
		t.Errorf("signing time %s, want now", v.SigningTime)
	}
	// Long after the certificate expired, the message is still judged at
	// its signing time.
	if v := VerifyMIME(msg, pool(cert), cert.NotAfter.AddDate(5, 0, 0)); !v.Valid {
		t.Errorf("after expiry: %v", v.Err)
	}
	// The same entity nested (its own header only), or saved with LF
	// line ends, still verifies.
	if v := VerifyMIME(append([]byte("Content-Type: "+ct+"\r\n\r\n"), body...), nil, time.Time{}); !v.Valid {
		t.Errorf("nested entity: %v", v.Err)
	}
	lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	if v := VerifyMIME(lf, pool(cert), time.Time{}); !v.Valid {
		t.Errorf("with LF line ends: %v", v.Err)
	}
	if out, err := openssl(t, "smime", "-verify", "-noverify", "-in", writeFile(t, "lf.eml", lf), "-out", os.DevNull); err != nil {
		t.Errorf("openssl, LF line ends: %v\n%s", err, out)
	}
	// Another root: the signature is good, the chain is not.
	other, _, _ := newCA(t, "Other")
	if v := VerifyMIME(msg, pool(other), time.Time{}); v.Valid || !v.Signed || v.Err == nil {
		t.Errorf("with a foreign root: valid %v, err %v", v.Valid, v.Err)
	}

	// Concurrent signing shares the token's sessions.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				ct, body, err := s.SignMIME([]byte(samplePart))
				if err != nil {
					t.Error(err)
					return
				}
				if v := VerifyMIME(message(testAddress, ct, body), pool(cert), time.Time{}); !v.Valid {
					t.Error(v.Err)
					return
				}
			}
		})
	}
	wg.Wait()

	bad := tamper(t, msg)
	if v := VerifyMIME(bad, nil, time.Time{}); v.Valid || !v.Signed || v.Err == nil {
		t.Fatalf("tampered: %+v", v)
	} else {
		t.Logf("VerifyMIME, one byte changed: %v", v.Err)
	}
	badFile := writeFile(t, "tampered.eml", bad)
	if out, err := openssl(t, "smime", "-verify", "-noverify", "-in", badFile, "-out", os.DevNull); err == nil {
		t.Fatalf("openssl smime verified a tampered message: %s", out)
	}
	if out, err := openssl(t, "cms", "-verify", "-CAfile", caFile, "-purpose", "smimesign", "-in", badFile, "-out", os.DevNull); err == nil {
		t.Fatalf("openssl cms verified a tampered message: %s", out)
	}
}

// TestInitIsIdempotent: Init again with the same options changes nothing;
// with a CA, or another address, it issues a new certificate for the same
// key, which Open then uses, with the CA in the chain that openssl and
// VerifyMIME check.
func TestInitIsIdempotent(t *testing.T) {
	cfg := newToken(t)
	first := mustInit(t, cfg, initOpts())
	if again := mustInit(t, cfg, initOpts()); !again.Equal(first) {
		t.Fatalf("second Init made serial %s, want %s unchanged", again.SerialNumber, first.SerialNumber)
	}

	ca, caPEM, caKey := newCA(t, "Test AgID")
	opts := initOpts()
	opts.CACertPEM, opts.CAKeyPEM = caPEM, caKey
	issued := mustInit(t, cfg, opts)
	checkProfile(t, issued)
	if issued.Equal(first) || !samePublicKey(issued.PublicKey, first.PublicKey) {
		t.Fatal("Init with a CA did not issue a new certificate for the same key")
	}
	if err := issued.CheckSignatureFrom(ca); err != nil || !bytes.Equal(issued.AuthorityKeyId, ca.SubjectKeyId) {
		t.Fatalf("not issued by the CA: %v (authority key id %x, CA %x)", err, issued.AuthorityKeyId, ca.SubjectKeyId)
	}
	if again := mustInit(t, cfg, opts); !again.Equal(issued) {
		t.Fatal("Init with the same CA again issued a new certificate")
	}

	s := mustOpen(t, cfg)
	if ch := s.Chain(); len(ch) != 2 || !ch[0].Equal(issued) || !ch[1].Equal(ca) {
		t.Fatalf("chain of %d, want the certificate and the CA", len(ch))
	}
	ct, body, err := s.SignMIME([]byte(samplePart))
	if err != nil {
		t.Fatal(err)
	}
	msg := message(testAddress, ct, body)
	out, err := openssl(t, "cms", "-verify", "-CAfile", writeFile(t, "ca.pem", caPEM), "-purpose", "smimesign",
		"-in", writeFile(t, "m.eml", msg), "-out", os.DevNull)
	if err != nil {
		t.Fatalf("openssl cms -verify with the CA: %v\n%s", err, out)
	}
	v := VerifyMIME(msg, pool(ca), time.Time{})
	if !v.Valid || len(v.Chain) != 2 || !v.Chain[1].Equal(ca) {
		t.Fatalf("VerifyMIME with the CA: valid %v, chain %d, %v", v.Valid, len(v.Chain), v.Err)
	}
	if v := VerifyMIME(msg, nil, time.Time{}); !v.Valid || len(v.Chain) != 2 {
		t.Fatalf("the signature does not carry the chain: %d certificates", len(v.Chain))
	}
	s.Close()

	opts.ServiceAddress = "posta-certificata@pec2.example.it"
	moved := mustInit(t, cfg, opts)
	if moved.Equal(issued) || moved.EmailAddresses[0] != opts.ServiceAddress || !samePublicKey(moved.PublicKey, first.PublicKey) {
		t.Fatal("a new service address did not give a new certificate for the same key")
	}
}

// TestOpenErrors: what is missing is said clearly.
func TestOpenErrors(t *testing.T) {
	cfg := newToken(t)
	_, err := Open(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "no key pair") {
		t.Errorf("empty token: %v", err)
	}
	t.Logf("empty token: %v", err)
	wrong := cfg
	wrong.PIN = "0000"
	_, err = Open(wrong, nil)
	if err == nil {
		t.Error("wrong PIN: no error")
	}
	t.Logf("wrong PIN: %v", err)
	wrong = cfg
	wrong.TokenLabel = "nope"
	_, err = Open(wrong, nil)
	if err == nil {
		t.Error("unknown token: no error")
	}
	t.Logf("unknown token: %v", err)
	wrong = cfg
	wrong.KeyFile = "/tmp/k.pem"
	if _, err := Open(wrong, nil); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("module and key file: %v", err)
	}
	if _, err := Init(cfg, InitOptions{ProviderName: testProvider, ServiceAddress: "Gestore <x@y.it>"}); err == nil {
		t.Error("Init with a display name in the address: no error")
	}

	// A key without its certificate (deleted with pkcs11-tool).
	mustInit(t, cfg, initOpts())
	tool := apptest.NeedTool(t, "pkcs11-tool")
	out, err := exec.Command(tool, "--module", cfg.PKCS11Module, "--token-label", "sigillo", "--login", "--pin", "1234",
		"--delete-object", "--type", "cert", "--label", "gestore").CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool --delete-object: %v\n%s", err, out)
	}
	_, err = Open(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Errorf("key without certificate: %v", err)
	}
	t.Logf("key without certificate: %v", err)
	// Init puts it back, for the same key.
	mustInit(t, cfg, initOpts())
	mustOpen(t, cfg)
}

// TestKeyFileWarns: a PEM key file works, for development, and Open says
// so in a warning.
func TestKeyFileWarns(t *testing.T) {
	cfg := Config{KeyFile: filepath.Join(t.TempDir(), "gestore.pem")}
	cert := mustInit(t, cfg, initOpts())
	checkProfile(t, cert)
	if st, err := os.Stat(cfg.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v (%v), want mode 0600", st, err)
	}
	if again := mustInit(t, cfg, initOpts()); !again.Equal(cert) {
		t.Fatal("second Init changed the key file's certificate")
	}
	var logs bytes.Buffer
	s, err := Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustContain(t, "log", logs.String(), "level=WARN")
	mustContain(t, "log", logs.String(), "key_file="+cfg.KeyFile)
	ct, body, err := s.SignMIME([]byte(samplePart))
	if err != nil {
		t.Fatal(err)
	}
	if v := VerifyMIME(message(testAddress, ct, body), pool(cert), time.Time{}); !v.Valid {
		t.Fatal(v.Err)
	}
}

// TestSignMIMERefusesNonEntities: a part must be header fields, an empty
// line and a body.
func TestSignMIMERefusesNonEntities(t *testing.T) {
	cfg := Config{KeyFile: filepath.Join(t.TempDir(), "gestore.pem")}
	mustInit(t, cfg, initOpts())
	s := mustOpen(t, cfg)
	for _, part := range []string{"", "just text\n", "Content-Type: text/plain\n", "not a header\n\nbody\n", "\nbody only\n"} {
		if _, _, err := s.SignMIME([]byte(part)); err == nil {
			t.Errorf("SignMIME(%q): no error", part)
		}
	}
	if _, _, err := s.SignMIME([]byte("Content-Type: text/plain\n\n")); err != nil {
		t.Errorf("empty body: %v", err)
	}
}

// BenchmarkSignSoftHSM measures SignMIME on a SoftHSM RSA 2048 key: one
// goroutine, and as many as GOMAXPROCS.
func BenchmarkSignSoftHSM(b *testing.B) {
	cfg := newToken(b)
	mustInit(b, cfg, initOpts())
	s := mustOpen(b, cfg)
	part := []byte(samplePart)
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(part)))
		for b.Loop() {
			if _, _, err := s.SignMIME(part); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(part)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := s.SignMIME(part); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signatures/s")
	})
}
