package signer

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// samples returns the folder of the real PEC messages (../shared/pec-samples),
// named by SIGILLO_PEC_SAMPLES, or skips the test saying so.
func samples(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SIGILLO_PEC_SAMPLES")
	if dir == "" {
		t.Skipf("!!! SKIPPING %s: SIGILLO_PEC_SAMPLES is unset; point it at shared/pec-samples to verify real gestori's messages !!!", t.Name())
	}
	return dir
}

func readSample(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// caRoots returns a pool of the CA certificates (not the signer's) in a
// *-signer-chain.pem file of the samples.
func caRoots(t *testing.T, dir, name string) *x509.CertPool {
	t.Helper()
	certs, _, err := parsePEM(readSample(t, dir, name))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		if c.IsCA {
			p.AddCert(c)
		}
	}
	return p
}

// TestVerifyRealGestori: messages signed by Aruba in 2014 (SHA-1, a
// certificate signed with SHA-1 that expired in 2017) and by Namirial in
// 2024 (certificate expired since) verify, with their chains, at signing
// time; the Legalmail busta altered in its repository does not.
func TestVerifyRealGestori(t *testing.T) {
	dir := samples(t)
	aruba := caRoots(t, dir, "OCA_l10n-italy__aruba-2014-signer-chain.pem")
	namirial := caRoots(t, dir, "linux-mailinglist-archives_osst-users__namirial-signer-chain.pem")
	for _, tc := range []struct {
		file, signer, email string
		roots               *x509.CertPool
		year                int
	}{
		{"OCA_l10n-italy__message1", "Posta Certificata ARUBA PEC", "posta-certificata@pec.aruba.it", aruba, 2014},
		{"linux-mailinglist-archives_osst-users.lists.sourceforge.net.0__6919bccf_m.signed-part.eml",
			"Posta Certificata Namirial S.p.A.", "posta-certificata@sicurezzapostale.it", namirial, 2024},
	} {
		msg := readSample(t, dir, tc.file)
		v := VerifyMIME(msg, nil, time.Time{})
		if !v.Signed || !v.Valid || v.Digest != "sha1" || v.Signer == nil || v.Signer.Subject.CommonName != tc.signer {
			t.Fatalf("%s, signature alone: %+v", tc.file, v)
		}
		v = VerifyMIME(msg, tc.roots, time.Time{})
		if !v.Valid || len(v.Chain) != 2 || v.SigningTime.Year() != tc.year ||
			len(v.Signer.EmailAddresses) != 1 || v.Signer.EmailAddresses[0] != tc.email {
			t.Fatalf("%s with its CA: valid %v, chain %d, signed %s, err %v", tc.file, v.Valid, len(v.Chain), v.SigningTime, v.Err)
		}
		if !bytes.HasPrefix(v.Content, []byte("MIME-Version: 1.0\r\nContent-Type: multipart/mixed")) &&
			!bytes.HasPrefix(v.Content, []byte("Content-Type: multipart/mixed")) {
			t.Errorf("%s: content starts %q", tc.file, v.Content[:min(60, len(v.Content))])
		}
		t.Logf("%s: valid, %s, signed %s by %q, chain to %q", tc.file, v.Digest, v.SigningTime.Format(time.RFC3339),
			v.Signer.Subject.CommonName, v.Chain[len(v.Chain)-1].Subject.CommonName)
	}
	// Trust in the wrong CA fails.
	if v := VerifyMIME(readSample(t, dir, "OCA_l10n-italy__message1"), namirial, time.Time{}); v.Valid {
		t.Error("Aruba's message verified against Namirial's CA")
	}
	v := VerifyMIME(readSample(t, dir, "agenziaentrateriscossione_docway-msa__partNull.eml"), nil, time.Time{})
	if !v.Signed || v.Valid || v.Err == nil {
		t.Fatalf("the altered Legalmail busta: signed %v valid %v err %v", v.Signed, v.Valid, v.Err)
	}
	t.Logf("altered Legalmail busta: %v", v.Err)
	// The anonymized samples are broken: no crash, no valid signature.
	for _, f := range []string{"danzipie_go-pec__accettazione.eml", "danzipie_go-pec__consegna.eml",
		"danzipie_go-pec__email_2.eml", "danzipie_go-pec__email_3.eml"} {
		if v := VerifyMIME(readSample(t, dir, f), nil, time.Time{}); v.Valid {
			t.Errorf("%s verified", f)
		} else {
			t.Logf("%s: signed %v: %v", f, v.Signed, v.Err)
		}
	}
}

// TestVerifyOpenSSLSigned: what openssl signs verifies here: detached with
// SHA-1 (as real gestori sign) and opaque application/pkcs7-mime.
func TestVerifyOpenSSLSigned(t *testing.T) {
	apptest.NeedTool(t, "openssl")
	cfg := Config{KeyFile: filepath.Join(t.TempDir(), "gestore.pem")}
	cert := mustInit(t, cfg, initOpts())
	part := writeFile(t, "part.eml", []byte(samplePart))
	for _, tc := range []struct {
		name   string
		args   []string
		digest string
	}{
		{"detached sha1", []string{"-md", "sha1"}, "sha1"},
		{"detached sha256", []string{"-md", "sha256"}, "sha256"},
		{"opaque", []string{"-nodetach"}, "sha256"},
		{"no signed attributes", []string{"-noattr"}, "sha256"},
	} {
		out := filepath.Join(t.TempDir(), "signed.eml")
		args := append([]string{"cms", "-sign", "-signer", cfg.KeyFile, "-in", part, "-out", out}, tc.args...)
		if o, err := openssl(t, args...); err != nil {
			t.Fatalf("%s: openssl %s: %v\n%s", tc.name, strings.Join(args, " "), err, o)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		v := VerifyMIME(b, pool(cert), time.Time{})
		if !v.Valid || v.Digest != tc.digest || !v.Signer.Equal(cert) || !bytes.Equal(v.Content, toCRLF([]byte(samplePart))) {
			t.Fatalf("%s: valid %v digest %s err %v content %q", tc.name, v.Valid, v.Digest, v.Err, v.Content)
		}
		if tc.name != "no signed attributes" {
			continue
		}
		// No signingTime: the chain is judged at now.
		if !v.SigningTime.IsZero() {
			t.Fatalf("signing time %s without signed attributes", v.SigningTime)
		}
		if v := VerifyMIME(b, pool(cert), cert.NotAfter.Add(time.Hour)); v.Valid || v.Err == nil {
			t.Fatalf("valid at %s, after the certificate expired", cert.NotAfter.Add(time.Hour))
		}
	}
}

// TestVerifyNotSigned: entities that are not signed, or broken, are
// reported, never valid.
func TestVerifyNotSigned(t *testing.T) {
	for _, tc := range []struct {
		msg    string
		signed bool
	}{
		{"", false},
		{"garbage", false},
		{"Subject: hi\r\n\r\nhello\r\n", false},
		{"Content-Type: text/plain\r\n\r\nhello\r\n", false},
		{"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nAAAA\r\n", false},
		{"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n", false},
		{"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIB\r\n", true},
		{"Content-Type: multipart/signed\r\n\r\n--b\r\n", true},
		{"Content-Type: multipart/signed; boundary=b\r\n\r\nno parts\r\n", true},
		{"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n", true},
		{"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: text/plain\r\n\r\ny\r\n--b--\r\n", true},
		{"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIB\r\n--b--\r\n", true},
	} {
		v := VerifyMIME([]byte(tc.msg), nil, time.Time{})
		if v.Valid || v.Signed != tc.signed || v.Err == nil {
			t.Errorf("%q: signed %v valid %v err %v; want signed %v, invalid, an error", tc.msg, v.Signed, v.Valid, v.Err, tc.signed)
		}
	}
}

// TestDelimiter: the boundary is found only as a whole line at a line
// start, and the line break before it belongs to it.
func TestDelimiter(t *testing.T) {
	body := []byte("pre\r\n--bx\r\n--b \r\nA\r\n--b--x\r\nB\r\n\r\n--b--\r\n")
	end, next, closing, ok := delimiter(body, 0, "b")
	if !ok || closing || string(body[next:next+1]) != "A" || end != 9 {
		t.Fatalf("first: end %d next %d closing %v ok %v", end, next, closing, ok)
	}
	end2, _, closing, ok := delimiter(body, next, "b")
	if !ok || !closing || string(body[next:end2]) != "A\r\n--b--x\r\nB\r\n" {
		t.Fatalf("second: %q closing %v ok %v", body[next:end2], closing, ok)
	}
}
