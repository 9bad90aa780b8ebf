package archive_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/backup/archive"
)

// gestore is a signing key with a certificate issued by its own CA, as the gestore's HSM key is.
type gestore struct {
	key   crypto.Signer
	chain []*x509.Certificate
	roots *x509.CertPool
}

func newGestore(t *testing.T, key crypto.Signer) gestore {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: taken.Add(-time.Hour), NotAfter: taken.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "gestore test"},
		NotBefore: taken.Add(-time.Hour), NotAfter: taken.Add(time.Hour), // expired by the time the test runs
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return gestore{key: key, chain: []*x509.Certificate{cert, caCert}, roots: roots}
}

// A set signed with the gestore key (ECDSA or RSA) verifies, also against the CA as of the
// backup's time, and a manifest changed after signing (its index) is refused by ReadManifest,
// Sets and VerifySignature.
func TestASignedManifestVerifiesAndATamperedOneDoesNot(t *testing.T) {
	ctx := context.Background()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alg string
		key crypto.Signer
	}{{archive.AlgECDSA, ecKey}, {archive.AlgRSA, rsaKey}} {
		t.Run(tc.alg, func(t *testing.T) {
			g := newGestore(t, tc.key)
			root := t.TempDir()
			st := dirStore{root}
			m, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{Signer: g.key, Chain: g.chain})
			if err != nil {
				t.Fatal(err)
			}
			if m.Signature == nil || m.Signature.Algorithm != tc.alg || len(m.Signature.Certificates) != 2 {
				t.Fatalf("signature %+v", m.Signature)
			}
			read, err := archive.ReadManifest(ctx, st, archive.KindSnapshot, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if err := archive.VerifySignature(read, g.roots); err != nil {
				t.Errorf("against the CA: %v", err)
			}
			other := newGestore(t, tc.key)
			if err := archive.VerifySignature(read, other.roots); err == nil {
				t.Error("verified against a CA that did not issue the certificate")
			}

			// Someone changes the index in the stored manifest.
			path := filepath.Join(root, "snapshots", m.ID, "manifest.json")
			body, _ := os.ReadFile(path)
			tampered := bytes.Replace(body, []byte(`"index": 48213`), []byte(`"index": 48214`), 1)
			if bytes.Equal(tampered, body) {
				t.Fatal("index not found in the manifest")
			}
			os.WriteFile(path, tampered, 0o600)
			_, err = archive.ReadManifest(ctx, st, archive.KindSnapshot, m.ID)
			if err == nil || !strings.Contains(err.Error(), "snapshot "+m.ID+": signature does not match the manifest") {
				t.Errorf("ReadManifest of a tampered manifest: %v", err)
			}
			if sets, err := archive.Sets(ctx, st, archive.KindSnapshot); len(sets) != 0 || err == nil {
				t.Errorf("Sets lists a tampered set: %v, %v", sets, err)
			}
			m2 := read
			m2.Index++
			if err := archive.VerifySignature(m2, nil); err == nil {
				t.Error("VerifySignature of a changed index passed")
			}
			m2 = read
			m2.Parts[0].SHA256 = strings.Repeat("0", 64)
			if err := archive.VerifySignature(m2, nil); err == nil {
				t.Error("VerifySignature of a changed part hash passed")
			}
		})
	}
}

func TestSignerMistakesAreRefused(t *testing.T) {
	ctx := context.Background()
	st := dirStore{t.TempDir()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g := newGestore(t, key)
	if _, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{Signer: key}); err == nil {
		t.Error("a signer without a certificate was accepted")
	}
	if _, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{Signer: otherKey, Chain: g.chain}); err == nil {
		t.Error("a signer with another key's certificate was accepted")
	}
	m, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.VerifySignature(m, nil); !errors.Is(err, archive.ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}
