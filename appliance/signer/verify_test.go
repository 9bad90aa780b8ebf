package signer

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// samples returns the folder of the real PEC messages (../shared/pec-samples),
// named by SIGILLO_PEC_SAMPLES; without it the test fails under CI=true
// and skips loudly elsewhere.
func samples(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SIGILLO_PEC_SAMPLES")
	if dir == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SIGILLO_PEC_SAMPLES is not set: %s cannot run, and in CI that is a failure", t.Name())
		}
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
// start (trailing white space allowed, "--b--x" is no close delimiter),
// and the line break before it belongs to it.
func TestDelimiter(t *testing.T) {
	body := []byte("pre\r\n--bx\r\n--b \r\nA\r\n--b--x\r\nB\r\n\r\n--b--\r\n")
	budget := 10
	parts, err := SplitMultipart(body, "b", &budget)
	if err != nil || len(parts) != 1 || string(parts[0]) != "A\r\n--b--x\r\nB\r\n" {
		t.Fatalf("parts %q, err %v", parts, err)
	}
	// Truncated after a close delimiter's CR, or without one: the parts end
	// there.
	for _, b := range []string{"--b\r\nA\r\n--b\r\nB\r\n--b--\r", "--b\r\nA\r\n--b\r\nB\r\n--b"} {
		budget := 10
		if parts, err := SplitMultipart([]byte(b), "b", &budget); err != nil || len(parts) != 2 || string(parts[1]) != "B" {
			t.Errorf("%q: parts %q, err %v", b, parts, err)
		}
	}
	budget = 2
	if parts, err := SplitMultipart([]byte("--b\nA\n--b\nB\n--b\nC\n--b--\n"), "b", &budget); err == nil || len(parts) != 2 {
		t.Errorf("over budget: parts %q, err %v", parts, err)
	}
}

// TestCheckBER: the BER walk that guards pkcs7.Parse accepts DER and BER
// with indefinite lengths, and refuses deep nesting and bad lengths.
func TestCheckBER(t *testing.T) {
	for name, b := range map[string][]byte{
		"deep indefinite": bytes.Repeat([]byte{0x30, 0x80}, 100000),
		"empty":           {},
		"overrun":         {0x30, 0x03, 0x04, 0x05, 0x00},
		"primitive indef": {0x04, 0x80, 0x00, 0x00},
		"long length":     {0x30, 0x85, 1, 2, 3, 4, 5},
		"truncated":       {0x30, 0x05, 0x04, 0x03, 0x01},
	} {
		if checkBER(b) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, b := range map[string][]byte{
		"der":        {0x30, 0x03, 0x04, 0x01, 0x00},
		"indefinite": {0x30, 0x80, 0x30, 0x80, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00},
	} {
		if err := checkBER(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestVerifyDeepBER: a megabyte of nested indefinite-length "30 80" as the
// signature is refused by the nesting check, quickly and without the
// half-gigabyte goroutine stack pkcs7.Parse's recursion would need.
func TestVerifyDeepBER(t *testing.T) {
	deep := bytes.Repeat([]byte{0x30, 0x80}, 1<<19) // 1 MB
	for name, msg := range map[string]string{
		"detached": "Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x\r\nContent-Type: application/pkcs7-signature\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(deep) + "\r\n--x--\r\n",
		"binary": "Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\nbody\r\n--x\r\nContent-Type: application/pkcs7-signature\r\n\r\n" +
			string(deep) + "\r\n--x--\r\n",
		"opaque": "Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString(deep) + "\r\n",
	} {
		start := time.Now()
		v := VerifyMIME([]byte(msg), nil, time.Time{})
		if v.Valid || !v.Signed || v.Err == nil || !strings.Contains(v.Err.Error(), "nested deeper than 64") {
			t.Errorf("%s: signed %v valid %v err %v", name, v.Signed, v.Valid, v.Err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", name, d)
		}
	}
}
