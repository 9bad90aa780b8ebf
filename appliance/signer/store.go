package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ThalesIgnite/crypto11"
)

// store is where the key and its certificate chain live: a PKCS#11 token,
// or a PEM file in development.
type store interface {
	// keyPair returns the key, or nil and no error when there is none.
	keyPair() (crypto.Signer, error)
	// generate creates an RSA 2048 key pair.
	generate() (crypto.Signer, error)
	// chain returns the certificate and its issuers, or nil when there is
	// no certificate.
	chain() ([]*x509.Certificate, error)
	// setChain replaces the certificate chain of key.
	setChain(key crypto.Signer, chain []*x509.Certificate) error
	close() error
	// String names the store in messages.
	String() string
}

func openStore(cfg Config) (store, error) {
	if cfg.KeyFile != "" {
		if cfg.PKCS11Module != "" {
			return nil, errors.New("signer: both a PKCS#11 module and a key file are configured: set one")
		}
		return &fileStore{path: cfg.KeyFile}, nil
	}
	if cfg.PKCS11Module == "" {
		return nil, errors.New("signer: no PKCS#11 module (nor key file) configured")
	}
	if cfg.TokenLabel == "" {
		return nil, errors.New("signer: no token label configured")
	}
	if _, err := os.Stat(cfg.PKCS11Module); err != nil {
		return nil, fmt.Errorf("signer: PKCS#11 module: %w", err)
	}
	label := cfg.KeyLabel
	if label == "" {
		label = DefaultKeyLabel
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: cfg.PKCS11Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		return nil, fmt.Errorf("signer: opening token %q with %s: %w", cfg.TokenLabel, cfg.PKCS11Module, err)
	}
	return &tokenStore{ctx: ctx, token: cfg.TokenLabel, label: label}, nil
}

// tokenStore keeps the key pair (CKA_LABEL label) and the certificate
// (same label and CKA_ID) in a PKCS#11 token; the issuers' certificates
// are labelled label/chain/1, label/chain/2, ...
type tokenStore struct {
	ctx   *crypto11.Context
	token string
	label string
}

func (t *tokenStore) String() string { return fmt.Sprintf("token %q, key %q", t.token, t.label) }

func (t *tokenStore) chainLabel(i int) []byte {
	if i == 0 {
		return []byte(t.label)
	}
	return fmt.Appendf(nil, "%s/chain/%d", t.label, i)
}

func (t *tokenStore) keyPair() (crypto.Signer, error) {
	k, err := t.ctx.FindKeyPair(nil, []byte(t.label))
	if err != nil {
		return nil, fmt.Errorf("signer: finding key %q in token %q: %w", t.label, t.token, err)
	}
	if k == nil {
		return nil, nil
	}
	return k, nil
}

func (t *tokenStore) generate() (crypto.Signer, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("signer: key id: %w", err)
	}
	k, err := t.ctx.GenerateRSAKeyPairWithLabel(id, []byte(t.label), 2048)
	if err != nil {
		return nil, fmt.Errorf("signer: generating RSA 2048 key %q in token %q: %w", t.label, t.token, err)
	}
	return k, nil
}

func (t *tokenStore) chain() ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for i := 0; i < 16; i++ {
		c, err := t.ctx.FindCertificate(nil, t.chainLabel(i), nil)
		if err != nil {
			return nil, fmt.Errorf("signer: reading certificate %q from token %q: %w", t.chainLabel(i), t.token, err)
		}
		if c == nil {
			break
		}
		chain = append(chain, c)
	}
	return chain, nil
}

func (t *tokenStore) setChain(key crypto.Signer, chain []*x509.Certificate) error {
	attr, err := t.ctx.GetAttribute(key, crypto11.CkaId)
	if err != nil {
		return fmt.Errorf("signer: reading the id of key %q in token %q: %w", t.label, t.token, err)
	}
	if attr == nil || len(attr.Value) == 0 {
		return fmt.Errorf("signer: key %q in token %q has no CKA_ID", t.label, t.token)
	}
	// Remove what is there (the old chain may be longer), then import.
	// Deleting first keeps one certificate per label; a crash in between
	// leaves no certificate, which Open reports and Init repairs.
	for i := 0; i < 16; i++ {
		found := false
		for range 16 { // duplicates, if any
			c, err := t.ctx.FindCertificate(nil, t.chainLabel(i), nil)
			if err != nil {
				return fmt.Errorf("signer: reading certificate %q from token %q: %w", t.chainLabel(i), t.token, err)
			}
			if c == nil {
				break
			}
			found = true
			if err := t.ctx.DeleteCertificate(nil, t.chainLabel(i), c.SerialNumber); err != nil {
				return fmt.Errorf("signer: deleting certificate %q from token %q: %w", t.chainLabel(i), t.token, err)
			}
		}
		if !found && i >= len(chain) {
			break
		}
	}
	for i, c := range chain {
		id := attr.Value
		if i > 0 {
			h := sha1.Sum(c.Raw)
			id = h[:]
		}
		if err := t.ctx.ImportCertificateWithLabel(id, t.chainLabel(i), c); err != nil {
			return fmt.Errorf("signer: storing certificate %q in token %q: %w", t.chainLabel(i), t.token, err)
		}
	}
	return nil
}

func (t *tokenStore) close() error {
	if err := t.ctx.Close(); err != nil {
		return fmt.Errorf("signer: closing token %q: %w", t.token, err)
	}
	return nil
}

// fileStore keeps the key and the certificate chain in one PEM file
// (development only).
type fileStore struct {
	path string
}

func (f *fileStore) String() string { return fmt.Sprintf("key file %s", f.path) }

func (f *fileStore) read() (crypto.Signer, []*x509.Certificate, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("signer: %w", err)
	}
	certs, keys, err := parsePEM(b)
	if err != nil {
		return nil, nil, fmt.Errorf("signer: %s: %w", f.path, err)
	}
	if len(keys) != 1 {
		return nil, nil, fmt.Errorf("signer: %s holds %d private keys, want 1", f.path, len(keys))
	}
	return keys[0], certs, nil
}

func (f *fileStore) keyPair() (crypto.Signer, error) {
	k, _, err := f.read()
	return k, err
}

func (f *fileStore) chain() ([]*x509.Certificate, error) {
	_, c, err := f.read()
	return c, err
}

func (f *fileStore) generate() (crypto.Signer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("signer: generating RSA 2048 key: %w", err)
	}
	if err := f.write(k, nil); err != nil {
		return nil, err
	}
	return k, nil
}

func (f *fileStore) setChain(key crypto.Signer, chain []*x509.Certificate) error {
	return f.write(key, chain)
}

// write replaces the file, atomically, with the key and the chain.
func (f *fileStore) write(key crypto.Signer, chain []*x509.Certificate) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("signer: encoding the key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, c := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".signer-*.pem")
	if err != nil {
		return fmt.Errorf("signer: writing %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return fmt.Errorf("signer: writing %s: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("signer: writing %s: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("signer: writing %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("signer: writing %s: %w", f.path, err)
	}
	return nil
}

func (f *fileStore) close() error { return nil }

// parsePEM returns the certificates and the private keys in b, in order.
func parsePEM(b []byte) ([]*x509.Certificate, []crypto.Signer, error) {
	var certs []*x509.Certificate
	var keys []crypto.Signer
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return certs, keys, nil
		}
		switch blk.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			k, err := parseKey(blk)
			if err != nil {
				return nil, nil, err
			}
			keys = append(keys, k)
		}
	}
}

func parseKey(blk *pem.Block) (crypto.Signer, error) {
	var k any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("private key of type %T: want RSA or ECDSA", k)
}
