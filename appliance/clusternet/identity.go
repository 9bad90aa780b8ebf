package clusternet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The files of an identity directory.
const (
	CertFile   = "node.crt"
	KeyFile    = "node.key"
	CACertFile = "ca.crt"
)

// Identity is what a node that has joined holds: its certificate and key,
// and the cluster CA that signed it (and every peer's).
type Identity struct {
	NodeID string
	// Cert is the node's certificate followed by the CA's, so that a
	// joining node can pin the CA from the chain the port sends.
	Cert tls.Certificate
	CA   *x509.Certificate
}

// NewIdentity checks that certPEM, keyPEM and caPEM make one identity: a
// node certificate that names its node and that the CA signed, and the
// certificate's key.
func NewIdentity(certPEM, keyPEM, caPEM []byte) (*Identity, error) {
	ca, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("cluster CA certificate %q is not a CA certificate", ca.Subject.CommonName)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node certificate and key: %w", err)
	}
	if len(pair.Certificate) != 1 {
		return nil, fmt.Errorf("node certificate: %d certificates, want 1", len(pair.Certificate))
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("node certificate %q is not signed by the cluster CA %q: %w", leaf.Subject.CommonName, ca.Subject.CommonName, err)
	}
	id, err := NodeID(leaf)
	if err != nil {
		return nil, err
	}
	pair.Leaf = leaf
	pair.Certificate = append(pair.Certificate, ca.Raw)
	return &Identity{NodeID: id, Cert: pair, CA: ca}, nil
}

// LoadIdentity reads the identity kept in dir (node.crt, node.key,
// ca.crt). When a file is missing, the error wraps os.ErrNotExist: the node
// has not joined yet. A key that others than its owner may read is refused.
func LoadIdentity(dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("cluster identity: %w", err)
		}
		return b, nil
	}
	keyPath := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("cluster identity: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster identity: %s has mode %v; the node key must be readable by its owner only (chmod 600)", keyPath, fi.Mode().Perm())
	}
	certPEM, err := read(CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(CACertFile)
	if err != nil {
		return nil, err
	}
	id, err := NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster identity in %s: %w", dir, err)
	}
	return id, nil
}

// SaveIdentity checks that the three PEMs make an identity (NewIdentity)
// and writes them in dir, made if needed (0700), each file atomically
// (written aside, synced, renamed); the key with mode 0600. The CA
// certificate and key are written before the node certificate, so a node
// that stops midway is found without node.crt, that is not joined.
func SaveIdentity(dir string, certPEM, keyPEM, caPEM []byte) error {
	if _, err := NewIdentity(certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("save cluster identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save cluster identity: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACertFile, caPEM, 0o644},
		{KeyFile, keyPEM, 0o600},
		{CertFile, certPEM, 0o644},
	} {
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save cluster identity: %w", err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	done = true
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
