// Package tlsmgr gives every listener its TLS configuration and
// certificates. Without ACME settings a local CA, made at first start and
// kept in the replicated store so every node shares it, issues the
// certificate for the configured hostname; `sigillo ca export` hands its
// root to clients. With ACME settings, ACME (certmagic) is the Source: it
// gets and renews certificates from the CA, keeping them in the replicated
// store through package certstore, and falls back on the local CA until
// it has them. It does not do DNS-01 challenges or on-demand issuance.
package tlsmgr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"

	"sigillo/storage"
)

// Source hands out the certificate for a TLS handshake: the local CA, or
// ACME.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// KVReader reads replicated state.
type KVReader interface {
	KV(ctx context.Context, key string) ([]byte, error)
}

// Keys of the replicated store.
const (
	keyCACert = "tls/localca/cert.pem"
	keyCAKey  = "tls/localca/key.pem"
	keyLeaf   = "tls/localca/leaf/" // + hostname: cert and key PEM
)

// LocalCA issues server certificates from a CA of our own.
type LocalCA struct {
	hostname string
	store    KVReader
	proposer storage.Proposer
	now      func() time.Time

	mu   sync.RWMutex
	leaf *tls.Certificate
	root []byte // PEM
}

// NewLocalCA loads the CA and the leaf for hostname from the store, making
// and storing them (through the proposer) if they are missing or the leaf
// is due for renewal.
func NewLocalCA(ctx context.Context, hostname string, store KVReader, proposer storage.Proposer, now func() time.Time) (*LocalCA, error) {
	if now == nil {
		now = time.Now
	}
	ca := &LocalCA{hostname: hostname, store: store, proposer: proposer, now: now}
	if err := ca.Refresh(ctx); err != nil {
		return nil, err
	}
	return ca, nil
}

// Refresh renews the leaf when less than a third of its life is left.
func (ca *LocalCA) Refresh(ctx context.Context) error {
	caCert, caKey, rootPEM, err := ca.loadOrMakeCA(ctx)
	if err != nil {
		return err
	}
	leafPEM, err := ca.store.KV(ctx, keyLeaf+ca.hostname)
	if err != nil && !storage.IsCode(err, storage.ErrNotFound) {
		return fmt.Errorf("local CA: %w", err)
	}
	var leaf *tls.Certificate
	if err == nil {
		if c, perr := parsePair(leafPEM); perr == nil && !ca.dueForRenewal(c.Leaf) && c.Leaf.CheckSignatureFrom(caCert) == nil {
			leaf = c
		}
	}
	if leaf == nil {
		pemPair, err := issue(ca.hostname, caCert, caKey, ca.now())
		if err != nil {
			return fmt.Errorf("local CA: issue for %s: %w", ca.hostname, err)
		}
		if _, err := ca.proposer.Apply(ctx, &storage.PutKV{Key: keyLeaf + ca.hostname, Value: pemPair}); err != nil {
			return fmt.Errorf("local CA: store certificate: %w", err)
		}
		if leaf, err = parsePair(pemPair); err != nil {
			return err
		}
	}
	ca.mu.Lock()
	ca.leaf, ca.root = leaf, rootPEM
	ca.mu.Unlock()
	return nil
}

func (ca *LocalCA) dueForRenewal(c *x509.Certificate) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return ca.now().After(c.NotAfter.Add(-life / 3))
}

func (ca *LocalCA) loadOrMakeCA(ctx context.Context) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPEM, err1 := ca.store.KV(ctx, keyCACert)
	keyPEM, err2 := ca.store.KV(ctx, keyCAKey)
	if err1 == nil && err2 == nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("local CA in store is damaged: %w", err)
		}
		return pair.Leaf, pair.PrivateKey.(crypto.Signer), certPEM, nil
	}
	for _, err := range []error{err1, err2} {
		if err != nil && !storage.IsCode(err, storage.ErrNotFound) {
			return nil, nil, nil, fmt.Errorf("local CA: %w", err)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Sigillo local CA " + ca.hostname, Organization: []string{"Sigillo"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make local CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	// Key first: a CA certificate without its key would be useless.
	if _, err := ca.proposer.Apply(ctx, &storage.PutKV{Key: keyCAKey, Value: keyPEM}); err != nil {
		return nil, nil, nil, fmt.Errorf("store local CA: %w", err)
	}
	if _, err := ca.proposer.Apply(ctx, &storage.PutKV{Key: keyCACert, Value: certPEM}); err != nil {
		return nil, nil, nil, fmt.Errorf("store local CA: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, certPEM, nil
}

func issue(hostname string, caCert *x509.Certificate, caKey crypto.Signer, now time.Time) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: hostname},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{hostname},
	}
	// Loopback names too, so the embedded default works from this machine.
	if hostname != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
	}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})...)
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return out, nil
}

func parsePair(p []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(p, p)
	if err != nil {
		return nil, fmt.Errorf("certificate in store is damaged: %w", err)
	}
	if c.Leaf == nil {
		return nil, errors.New("certificate in store has no leaf")
	}
	return &c, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// GetCertificate implements Source.
func (ca *LocalCA) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.leaf, nil
}

// RootPEM is the CA certificate clients should trust.
func (ca *LocalCA) RootPEM() []byte {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return append([]byte(nil), ca.root...)
}

// ServerConfig is the TLS configuration of every listener: TLS 1.2 and 1.3
// only, Go's default (forward-secret, AEAD) cipher suites.
func ServerConfig(src Source) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: src.GetCertificate,
	}
}
