package clusternet_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/clusternet"
)

var now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, name string) *clusternet.CA {
	t.Helper()
	ca, err := clusternet.NewCA(name, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatalf("no PEM in %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCAIsIssuedAndReadBack: a cluster CA made at bootstrap is a P-256 CA
// valid 10 years; stored as PEM and read back it is the same CA, with the
// same pin; a key of another CA is refused.
func TestCAIsIssuedAndReadBack(t *testing.T) {
	ca := mustCA(t, "mail.example.test")
	if !ca.Cert.IsCA || ca.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("CA certificate: IsCA %v, key %v", ca.Cert.IsCA, ca.Cert.PublicKeyAlgorithm)
	}
	if got := ca.Cert.NotAfter.Sub(now); got < 3649*24*time.Hour || got > 3651*24*time.Hour {
		t.Fatalf("CA valid for %v from now, want 10 years", got)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := clusternet.ParseCA(ca.CertPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(ca.Cert) || clusternet.Pin(back.Cert) != clusternet.Pin(ca.Cert) {
		t.Fatal("the CA read back is not the CA written")
	}
	other := mustCA(t, "other.example.test")
	otherKey, _ := other.KeyPEM()
	if _, err := clusternet.ParseCA(ca.CertPEM, otherKey); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("another CA's key: %v", err)
	}
	if _, err := clusternet.ParseCA([]byte("not pem"), keyPEM); err == nil {
		t.Fatal("a certificate that is not PEM was read")
	}
	if _, err := clusternet.NewCA(" ", now); err == nil {
		t.Fatal("a CA without a cluster name was made")
	}
	if clusternet.Pin(ca.Cert) == clusternet.Pin(other.Cert) {
		t.Fatal("two CAs have the same pin")
	}
}

// TestIssueNodeIDRoundTrip: a joining node makes its key and sends the
// public key (base64 or PEM); the CA issues a certificate for server and
// client auth, 2 years, that verifies against the CA and names the node.
func TestIssueNodeIDRoundTrip(t *testing.T) {
	ca := mustCA(t, "c")
	keyPEM, pub, err := clusternet.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(keyPEM, []byte("PRIVATE KEY")) {
		t.Fatalf("key PEM %q", keyPEM[:30])
	}
	wire, err := clusternet.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := base64.StdEncoding.DecodeString(wire)
	asPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	asURL := base64.RawURLEncoding.EncodeToString(der)
	for _, s := range []string{wire, asPEM, asURL, " " + wire + "\n"} {
		got, err := clusternet.ParsePublicKey(s)
		if err != nil {
			t.Fatalf("ParsePublicKey(%.20q…): %v", s, err)
		}
		if !got.(*ecdsa.PublicKey).Equal(pub) {
			t.Fatal("the public key read back differs")
		}
	}

	certPEM, err := ca.Issue("n2", pub, now)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, certPEM)
	id, err := clusternet.NodeID(cert)
	if err != nil || id != "n2" {
		t.Fatalf("NodeID = %q, %v; want n2", id, err)
	}
	if cert.Subject.CommonName != "n2" || len(cert.URIs) != 1 || cert.URIs[0].String() != "sigillo-node://n2" {
		t.Fatalf("CN %q URIs %v", cert.Subject.CommonName, cert.URIs)
	}
	if got := cert.NotAfter.Sub(now); got < 729*24*time.Hour || got > 731*24*time.Hour {
		t.Fatalf("node certificate valid for %v from now, want 2 years", got)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("usage %v: %v", usage, err)
		}
	}

	if _, err := clusternet.NodeID(ca.Cert); err == nil {
		t.Fatal("the CA certificate named a node")
	}
	if _, err := ca.Issue("bad id/with slash", pub, now); err == nil {
		t.Fatal("a certificate for a malformed node id was issued")
	}
	if _, err := ca.Issue("n3", pub, now.Add(11*365*24*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("issue after the CA's end: %v", err)
	}
}

// TestParsePublicKeyRefusesWhatIsNotANodeKey: garbage, another PEM block,
// RSA and P-224 keys get an error, not a certificate.
func TestParsePublicKeyRefusesWhatIsNotANodeKey(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224DER, _ := x509.MarshalPKIXPublicKey(&p224.PublicKey)
	for name, s := range map[string]string{
		"empty":       "",
		"garbage":     "!!!not a key!!!",
		"base64 junk": base64.StdEncoding.EncodeToString([]byte("hello")),
		"cert PEM":    string(mustCA(t, "c").CertPEM),
		"rsa":         base64.StdEncoding.EncodeToString(rsaDER),
		"p224":        base64.StdEncoding.EncodeToString(p224DER),
		"huge":        strings.Repeat("A", 10000),
	} {
		if _, err := clusternet.ParsePublicKey(s); err == nil {
			t.Errorf("%s: read as a node key", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := clusternet.MarshalPublicKey(&rsaKey.PublicKey); err == nil {
		t.Error("an RSA key was marshalled for a join")
	}
}
