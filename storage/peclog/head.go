package peclog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// SignHead signs the chain head at last (its Seq and Hash) at time at with
// signer, whose certificate cert is carried in the head. The signature is
// over SHA-256(CanonicalHead(h)): RSA PKCS #1 v1.5 for an RSA key, ECDSA
// (ASN.1 DER) for an ECDSA key; other keys are refused. cert's public key
// must be signer's, and at (normalised to UTC milliseconds) must lie in
// cert's validity period. last's Hash must match its content, so a
// corrupted entry is never signed.
//
// An ECDSA signature is randomised: the proposer calls SignHead once and
// carries the resulting Head in the command that stores it.
func SignHead(last Entry, at time.Time, signer crypto.Signer, cert *x509.Certificate) (Head, error) {
	if signer == nil || cert == nil {
		return Head{}, errors.New("peclog: sign head: no signer or certificate")
	}
	if last.Seq == 0 {
		return Head{}, errors.New("peclog: sign head: entry has no Seq")
	}
	if !bytes.Equal(HashEntry(last), last.Hash) {
		return Head{}, fmt.Errorf("peclog: sign head: entry %d: hash does not match its content", last.Seq)
	}
	pub := signer.Public()
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return Head{}, fmt.Errorf("peclog: sign head: unsupported key type %T (want RSA or ECDSA)", pub)
	}
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return Head{}, errors.New("peclog: sign head: certificate does not match the signer's key")
	}
	h := Head{Seq: last.Seq, Hash: clone(last.Hash), Time: msTime(at), Certificate: clone(cert.Raw)}
	if h.Time.Before(cert.NotBefore) || h.Time.After(cert.NotAfter) {
		return Head{}, fmt.Errorf("peclog: sign head: %s is outside the certificate's validity (%s to %s)",
			h.Time.Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	digest := sha256.Sum256(CanonicalHead(h))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return Head{}, fmt.Errorf("peclog: sign head: %w", err)
	}
	h.Signature = sig
	if err := checkHeadSignature(h, cert); err != nil {
		return Head{}, fmt.Errorf("peclog: sign head: the signer's signature does not verify: %w", err)
	}
	return h, nil
}

// headCerts parses h.Certificate: the signer, then any intermediates.
func headCerts(h Head) (*x509.Certificate, []*x509.Certificate, error) {
	if len(h.Certificate) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	certs, err := x509.ParseCertificates(h.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate unreadable: %v", err)
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no certificate")
	}
	return certs[0], certs[1:], nil
}

// checkHeadSignature checks h.Signature against cert's public key.
func checkHeadSignature(h Head, cert *x509.Certificate) error {
	if len(h.Signature) == 0 {
		return errors.New("no signature")
	}
	digest := sha256.Sum256(CanonicalHead(h))
	switch pub := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], h.Signature) != nil {
			return errors.New("RSA signature invalid")
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest[:], h.Signature) {
			return errors.New("ECDSA signature invalid")
		}
	default:
		return fmt.Errorf("unsupported key type %T", cert.PublicKey)
	}
	return nil
}

// verifyHead checks h's signature and, with roots, that its certificate
// chains to roots at h.Time (the signing time, not now).
func verifyHead(h Head, roots *x509.CertPool) error {
	cert, inter, err := headCerts(h)
	if err != nil {
		return err
	}
	if err := checkHeadSignature(h, cert); err != nil {
		return err
	}
	if roots == nil {
		return nil
	}
	pool := x509.NewCertPool()
	for _, c := range inter {
		pool.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		CurrentTime:   h.Time,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("certificate %q not trusted at signing time: %v", cert.Subject.String(), err)
	}
	return nil
}
