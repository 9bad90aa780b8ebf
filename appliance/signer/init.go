package signer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// InitOptions describe the gestore certificate that Init makes.
type InitOptions struct {
	// ProviderName is the gestore's name ("Example PEC S.p.A."): the O of
	// the subject, and its CN after "Posta Certificata ".
	ProviderName string
	// ServiceAddress is the service address (posta-certificata@pec.example.it),
	// the certificate's subjectAltName rfc822Name and the From of every
	// message signed with it.
	ServiceAddress string
	// CACertPEM and CAKeyPEM, when set, are the issuing CA's certificate
	// (followed, optionally, by its own issuers up to the root) and its
	// private key; without them the certificate is self-signed.
	CACertPEM, CAKeyPEM []byte
	// Now is the time of issue; zero means time.Now().
	Now time.Time
	// Validity is how long the certificate is valid; zero means 3 years,
	// as the AgID-issued gestori certificates.
	Validity time.Duration
}

// DefaultValidity is the validity of a certificate made by Init when
// InitOptions.Validity is zero.
const DefaultValidity = 3 * 365 * 24 * time.Hour

// Init creates the gestore's RSA 2048 key pair in the token (or key file)
// unless there is one already, and a certificate for it following PEC.md
// §2.1: subject C=IT, O=ProviderName, CN="Posta Certificata ProviderName";
// subjectAltName rfc822Name ServiceAddress; keyUsage digitalSignature and
// nonRepudiation (critical); extKeyUsage emailProtection; subject and
// authority key identifiers; no basicConstraints. The certificate is
// self-signed, or issued by the CA of opts, and stored next to the key
// (with the CA's chain). When the stored certificate already fits opts
// (same key, address, provider, issuer, valid at opts.Now), Init changes
// nothing and returns it: running it twice is harmless.
func Init(cfg Config, opts InitOptions) (*x509.Certificate, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultValidity
	}
	if err := checkInitOptions(opts); err != nil {
		return nil, err
	}
	var caChain []*x509.Certificate
	var caKey crypto.Signer
	if len(opts.CACertPEM) > 0 || len(opts.CAKeyPEM) > 0 {
		var err error
		if caChain, caKey, err = parseCA(opts.CACertPEM, opts.CAKeyPEM); err != nil {
			return nil, err
		}
	}

	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	defer st.close()
	key, err := st.keyPair()
	if err != nil {
		return nil, err
	}
	if key == nil {
		if key, err = st.generate(); err != nil {
			return nil, err
		}
	}
	old, err := st.chain()
	if err != nil {
		return nil, err
	}
	if fits(old, key, opts, caChain) {
		return old[0], nil
	}

	tmpl, err := certTemplate(key.Public(), opts)
	if err != nil {
		return nil, err
	}
	parent, signWith := tmpl, key
	if caChain != nil {
		parent, signWith = caChain[0], caKey
		tmpl.AuthorityKeyId = caChain[0].SubjectKeyId // none when the CA has none
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signWith)
	if err != nil {
		return nil, fmt.Errorf("signer: making the certificate with %s: %w", st, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signer: reading the new certificate: %w", err)
	}
	chain := append([]*x509.Certificate{leaf}, caChain...)
	if err := st.setChain(key, chain); err != nil {
		return nil, err
	}
	return leaf, nil
}

func checkInitOptions(opts InitOptions) error {
	if strings.TrimSpace(opts.ProviderName) == "" {
		return errors.New("signer: no provider name")
	}
	if utf8.RuneCountInString(opts.ProviderName) > 64 {
		return fmt.Errorf("signer: provider name %q is longer than the 64 characters of an X.509 organization name", opts.ProviderName)
	}
	a, err := mail.ParseAddress(opts.ServiceAddress)
	if err != nil || a.Address != opts.ServiceAddress || a.Name != "" {
		return fmt.Errorf("signer: service address %q is not a bare mail address", opts.ServiceAddress)
	}
	if opts.Validity < 0 {
		return fmt.Errorf("signer: negative validity %s", opts.Validity)
	}
	return nil
}

// parseCA reads the CA certificate (first), its issuers, and its key.
func parseCA(certPEM, keyPEM []byte) ([]*x509.Certificate, crypto.Signer, error) {
	certs, _, err := parsePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("signer: CA certificate: %w", err)
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("signer: no CA certificate (PEM CERTIFICATE) given")
	}
	_, keys, err := parsePEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("signer: CA key: %w", err)
	}
	if len(keys) != 1 {
		return nil, nil, fmt.Errorf("signer: %d CA private keys given, want 1", len(keys))
	}
	ca := certs[0]
	if !ca.BasicConstraintsValid || !ca.IsCA {
		return nil, nil, fmt.Errorf("signer: %q is not a CA certificate", ca.Subject)
	}
	if ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("signer: CA %q may not sign certificates (key usage)", ca.Subject)
	}
	if !samePublicKey(ca.PublicKey, keys[0].Public()) {
		return nil, nil, fmt.Errorf("signer: the CA key is not the key of %q", ca.Subject)
	}
	return certs, keys[0], nil
}

// fits tells whether chain is what Init would make for key and opts.
func fits(chain []*x509.Certificate, key crypto.Signer, opts InitOptions, caChain []*x509.Certificate) bool {
	if len(chain) == 0 {
		return false
	}
	leaf := chain[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) ||
		len(leaf.EmailAddresses) != 1 || !strings.EqualFold(leaf.EmailAddresses[0], opts.ServiceAddress) ||
		len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != opts.ProviderName ||
		opts.Now.Before(leaf.NotBefore) || opts.Now.After(leaf.NotAfter) {
		return false
	}
	if caChain == nil {
		return len(chain) == 1 && bytes.Equal(leaf.RawIssuer, leaf.RawSubject) &&
			leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil
	}
	if len(chain) != 1+len(caChain) {
		return false
	}
	for i, c := range caChain {
		if !c.Equal(chain[1+i]) {
			return false
		}
	}
	return leaf.CheckSignatureFrom(caChain[0]) == nil
}

// certTemplate is the gestore certificate of PEC.md §2.1 for pub.
func certTemplate(pub crypto.PublicKey, opts InitOptions) (*x509.Certificate, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("signer: encoding the public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("signer: decoding the public key: %w", err)
	}
	ski := sha1.Sum(info.PublicKey.Bytes) // RFC 5280 §4.2.1.2, method 1
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := "Posta Certificata " + opts.ProviderName
	if utf8.RuneCountInString(cn) > 64 {
		cn = "Posta Certificata"
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Country:      []string{"IT"},
			Organization: []string{opts.ProviderName},
			CommonName:   cn,
		},
		// An hour back, for the clocks of peers a little behind.
		NotBefore:      opts.Now.Add(-time.Hour).UTC(),
		NotAfter:       opts.Now.Add(opts.Validity).UTC(),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{opts.ServiceAddress},
		SubjectKeyId:   ski[:],
		// Self-signed: the authority is the subject.
		AuthorityKeyId: ski[:],
	}, nil
}

// randomSerial returns a random positive 127-bit serial number.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("signer: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
