package clusternet

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"sigillo/appliance/nodeid"
)

// NodeURIScheme is the scheme of the URI SAN that names a node in its
// certificate: sigillo-node://<node id>.
const NodeURIScheme = "sigillo-node"

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 2 * 365 * 24 * time.Hour
	// backdate covers clocks of the cluster a little behind the issuer's.
	backdate = time.Hour
)

// CA is the cluster's certificate authority: made at bootstrap, kept in
// the replicated store, it signs every node's certificate.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// NewCA makes a cluster CA for clusterName: an ECDSA P-256 key and a
// self-signed certificate valid for 10 years from now.
func NewCA(clusterName string, now time.Time) (*CA, error) {
	clusterName = strings.TrimSpace(clusterName)
	if clusterName == "" {
		return nil, errors.New("cluster CA: the cluster name is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Sigillo cluster CA " + clusterName, Organization: []string{"Sigillo"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// KeyPEM returns the CA's private key as PKCS #8 PEM ("PRIVATE KEY").
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCA reads a CA back from its certificate and key in PEM. The
// certificate must be a CA's and the key must be its key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster CA certificate: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("cluster CA certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster CA key: %w", err)
	}
	if !samePublicKey(key.Public(), cert.PublicKey) {
		return nil, errors.New("cluster CA: the key does not belong to the certificate")
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// NewNodeKey makes a node's key pair (ECDSA P-256): the private key as
// PKCS #8 PEM, which stays on the node, and the public key, which goes in
// the join request (MarshalPublicKey).
func NewNodeKey() (keyPEM []byte, pub crypto.PublicKey, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("node key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("node key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), key.Public(), nil
}

// MarshalPublicKey encodes pub for a join request: PKIX DER in standard
// base64, on one line.
func MarshalPublicKey(pub crypto.PublicKey) (string, error) {
	if err := checkNodeKey(pub); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// maxPublicKeyLen bounds what ParsePublicKey reads: a P-384 PKIX key in PEM
// is under 300 bytes.
const maxPublicKeyLen = 4096

// ParsePublicKey reads a public key a joining node sent: PKIX, as PEM
// ("PUBLIC KEY") or base64 (standard or URL alphabet, padded or not). Only
// ECDSA P-256 or P-384 and Ed25519 keys are accepted.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("public key: empty")
	}
	if len(s) > maxPublicKeyLen {
		return nil, fmt.Errorf("public key: %d bytes, longer than any key this cluster takes", len(s))
	}
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		block, rest := pem.Decode([]byte(s))
		if block == nil {
			return nil, errors.New("public key: PEM that does not decode")
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("public key: PEM block %q, want \"PUBLIC KEY\"", block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("public key: data after the PEM block")
		}
		der = block.Bytes
	} else {
		var err error
		if der, err = decodeBase64(s); err != nil {
			return nil, fmt.Errorf("public key: neither PEM nor base64: %w", err)
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("public key: not a PKIX SubjectPublicKeyInfo: %w", err)
	}
	if err := checkNodeKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// Issue signs the certificate of node nodeID for its public key pub: valid
// 2 years from now (never past the CA's own end), for both server and
// client authentication, naming the node in its CommonName and in a URI SAN
// sigillo-node://<nodeID>. It returns the certificate in PEM.
func (ca *CA) Issue(nodeID string, pub crypto.PublicKey, now time.Time) (certPEM []byte, err error) {
	if err := nodeid.Check(nodeID); err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}
	if err := checkNodeKey(pub); err != nil {
		return nil, fmt.Errorf("issue node certificate for %s: %w", nodeID, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue node certificate for %s: %w", nodeID, err)
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate for %s: %w", nodeID, err)
	}
	notAfter := now.Add(nodeValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("issue node certificate for %s: the cluster CA expired on %s", nodeID, ca.Cert.NotAfter.Format(time.DateOnly))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: nodeID, Organization: []string{"Sigillo"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{{Scheme: NodeURIScheme, Host: nodeID}},
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate for %s: %w", nodeID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NodeID returns the node a certificate names in its sigillo-node:// URI
// SAN. It does not verify the certificate: call it on a verified chain's
// leaf (PeerNode does).
func NodeID(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("node id: no certificate")
	}
	id := ""
	for _, u := range cert.URIs {
		if u.Scheme != NodeURIScheme {
			continue
		}
		if id != "" {
			return "", fmt.Errorf("node id: certificate %q names more than one node", cert.Subject.CommonName)
		}
		if u.User != nil || u.Port() != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return "", fmt.Errorf("node id: certificate %q: malformed node URI %q", cert.Subject.CommonName, u.String())
		}
		if err := nodeid.Check(u.Host); err != nil {
			return "", fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		id = u.Host
	}
	if id == "" {
		return "", fmt.Errorf("node id: certificate %q has no %s:// URI", cert.Subject.CommonName, NodeURIScheme)
	}
	return id, nil
}

// Pin is what a join token carries of the cluster CA: the SHA-256 of its
// SubjectPublicKeyInfo. It changes only with the CA's key.
func Pin(caCert *x509.Certificate) [32]byte {
	return sha256.Sum256(caCert.RawSubjectPublicKeyInfo)
}

// checkNodeKey accepts the public keys a node may have.
func checkNodeKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("public key: ECDSA on %s; use P-256 or P-384", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("public key: malformed Ed25519 key")
		}
		return nil
	case nil:
		return errors.New("public key: none")
	default:
		return fmt.Errorf("public key: %T; use ECDSA P-256 (or P-384, Ed25519)", pub)
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// subjectKeyID is the SHA-256 of the PKIX key, cut to 20 bytes.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// parseCertPEM reads exactly one certificate.
func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return cert, nil
}

// parseKeyPEM reads a private key: PKCS #8, or SEC 1 ("EC PRIVATE KEY").
func parseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", key)
	}
	return signer, nil
}

// decodeBase64 takes standard or URL base64, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}
