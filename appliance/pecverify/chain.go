package pecverify

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// maxChainLen bounds the certificate path walked by verifyChainSHA1.
const maxChainLen = 8

// verifyChain checks that leaf chains to roots at time at, with the
// certificates carried in the CMS as intermediates. It uses crypto/x509 first.
// crypto/x509 refuses SHA-1 certificate signatures, yet the gestori's
// certificates of the DigitPA CA1 era (2011–2017, see the 2014 Aruba samples)
// are SHA-1 signed: when a certificate on offer is SHA-1 signed and x509
// refuses the chain, verifyChainSHA1 walks it again allowing SHA-1.
func verifyChain(leaf *x509.Certificate, carried []*x509.Certificate, roots *x509.CertPool, at time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range carried {
		if c != leaf {
			inter.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil {
		return nil
	}
	sha1Signed := isSHA1(leaf.SignatureAlgorithm)
	for _, c := range carried {
		sha1Signed = sha1Signed || isSHA1(c.SignatureAlgorithm)
	}
	if !sha1Signed {
		return err
	}
	if err2 := verifyChainSHA1(leaf, carried, roots, at); err2 != nil {
		return fmt.Errorf("%v; allowing SHA-1: %v", err, err2)
	}
	return nil
}

func isSHA1(a x509.SignatureAlgorithm) bool {
	return a == x509.SHA1WithRSA || a == x509.ECDSAWithSHA1 || a == x509.DSAWithSHA1
}

// verifyChainSHA1 walks up from leaf through the carried certificates until
// it meets one that crypto/x509 verifies against roots on its own (a root
// itself, or one chaining to a root with SHA-2 signatures). Each link must be
// a CA certificate (the checks of x509.CheckSignatureFrom) whose signature
// verifies, SHA-1 allowed; each certificate must be valid at time at. Name
// constraints and path length constraints of the certificates walked here are
// not checked; those past the meeting point are, by crypto/x509.
func verifyChainSHA1(leaf *x509.Certificate, carried []*x509.Certificate, roots *x509.CertPool, at time.Time) error {
	cur := leaf
	for depth := 0; depth < maxChainLen; depth++ {
		if at.Before(cur.NotBefore) || at.After(cur.NotAfter) {
			return fmt.Errorf("certificate %q is not valid at %s", cur.Subject.String(), at.UTC().Format(time.RFC3339))
		}
		if _, err := cur.Verify(x509.VerifyOptions{
			Roots:       roots,
			CurrentTime: at,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err == nil {
			return nil
		}
		var parent *x509.Certificate
		var lastErr error = fmt.Errorf("no issuer of %q among the message's certificates", cur.Subject.String())
		for _, p := range carried {
			if p == cur || !bytes.Equal(p.RawSubject, cur.RawIssuer) {
				continue
			}
			err := cur.CheckSignatureFrom(p)
			var insecure x509.InsecureAlgorithmError
			if errors.As(err, &insecure) && isSHA1(cur.SignatureAlgorithm) {
				// CheckSignatureFrom checked that p may sign certificates
				// before it refused the algorithm; check the signature itself.
				err = p.CheckSignature(cur.SignatureAlgorithm, cur.RawTBSCertificate, cur.Signature)
			}
			if err != nil {
				lastErr = fmt.Errorf("%q is not signed by %q: %v", cur.Subject.String(), p.Subject.String(), err)
				continue
			}
			parent = p
			break
		}
		if parent == nil {
			return lastErr
		}
		cur = parent
	}
	return fmt.Errorf("no trusted certificate within %d links", maxChainLen)
}
