package archive

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrUnsigned is returned by VerifySignature for a manifest without a signature.
var ErrUnsigned = errors.New("the manifest is not signed")

// signedBytes is what a signature covers: the manifest's json.Marshal encoding with Signature nil.
func signedBytes(m Manifest) ([]byte, error) {
	m.Signature = nil
	return json.Marshal(&m)
}

func signAlgorithm(pub crypto.PublicKey) (string, error) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return AlgRSA, nil
	case *ecdsa.PublicKey:
		return AlgECDSA, nil
	}
	return "", fmt.Errorf("signer key %T: only RSA and ECDSA keys sign backups", pub)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// sign signs m (whose Signature is ignored) with opt.Signer: RSA PKCS#1 v1.5 or ECDSA, SHA-256.
func sign(m *Manifest, opt Options) (*Signature, error) {
	alg, err := signAlgorithm(opt.Signer.Public())
	if err != nil {
		return nil, err
	}
	body, err := signedBytes(*m)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(body)
	// crypto.SHA256 as the options: PKCS#1 v1.5 for RSA (crypto11 and crypto/rsa alike), ASN.1 for ECDSA.
	value, err := opt.Signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	sig := &Signature{Algorithm: alg, Value: value}
	for _, c := range opt.Chain {
		sig.Certificates = append(sig.Certificates, c.Raw)
	}
	return sig, nil
}

// VerifySignature checks m.Signature against its first certificate, and, when roots is not nil,
// that certificate's chain (the other certificates as intermediates) as of the manifest's time, so
// that a backup signed before its certificate expired still verifies. A manifest without a
// signature gives ErrUnsigned.
func VerifySignature(m Manifest, roots *x509.CertPool) error {
	sig := m.Signature
	if sig == nil {
		return fmt.Errorf("%s: %w", m.setName(), ErrUnsigned)
	}
	if len(sig.Certificates) == 0 {
		return fmt.Errorf("%s: signature: no certificate", m.setName())
	}
	cert, err := x509.ParseCertificate(sig.Certificates[0])
	if err != nil {
		return fmt.Errorf("%s: signature: signer certificate: %w", m.setName(), err)
	}
	alg, err := signAlgorithm(cert.PublicKey)
	if err != nil {
		return fmt.Errorf("%s: signature: %w", m.setName(), err)
	}
	if alg != sig.Algorithm {
		return fmt.Errorf("%s: signature: algorithm %q does not match the certificate's key (%s)", m.setName(), sig.Algorithm, alg)
	}
	body, err := signedBytes(m)
	if err != nil {
		return fmt.Errorf("%s: signature: %w", m.setName(), err)
	}
	digest := sha256.Sum256(body)
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig.Value)
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest[:], sig.Value) {
			err = errors.New("ecdsa: verification error")
		}
	}
	if err != nil {
		return fmt.Errorf("%s: signature does not match the manifest (altered after signing, or another signer): %w", m.setName(), err)
	}
	if roots == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for i, der := range sig.Certificates[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("%s: signature: certificate %d: %w", m.setName(), i+2, err)
		}
		inter.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   m.Time,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%s: signer certificate %q: %w", m.setName(), cert.Subject.CommonName, err)
	}
	return nil
}
