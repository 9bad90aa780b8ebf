package signer

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/digitorus/pkcs7"
)

// Verification is what VerifyMIME found.
type Verification struct {
	// Signed: the entity is S/MIME signed data (multipart/signed, or
	// application/pkcs7-mime signed-data), whether or not it verifies.
	Signed bool
	// Valid: the signature verifies over the signed content and, when
	// roots were given, the signer's chain leads to one of them.
	Valid bool
	// Signer is the signer's certificate, when the signature names one
	// that it includes.
	Signer *x509.Certificate
	// Chain is, with roots, the verified chain from Signer to a root;
	// otherwise the certificates included in the signature, Signer first.
	Chain []*x509.Certificate
	// SigningTime is the signingTime signed attribute, if any.
	SigningTime time.Time
	// Digest is the digest algorithm: sha1, sha256, sha384 or sha512.
	Digest string
	// Content is the signed content as verified: for multipart/signed the
	// first part (a MIME entity, CRLF); for pkcs7-mime the encapsulated
	// content. Nil unless Valid.
	Content []byte
	// Err says why the entity is not Signed or not Valid.
	Err error
}

// maxChainDepth bounds the chain walked for SHA-1 signed certificates.
const maxChainDepth = 8

// VerifyMIME verifies an S/MIME signed entity: a whole message or a nested
// entity (header fields, empty line, body) that is multipart/signed with a
// detached CMS signature, or application/pkcs7-mime signed-data. The
// detached signature is checked over the first part exactly as received
// with its line ends made CRLF (and, failing that, as received). SHA-1 and
// SHA-256 (and SHA-384, SHA-512) are accepted, with RSA or ECDSA.
//
// With roots, the signer certificate must also chain to one of them (the
// chain from the certificates in the signature), with extKeyUsage
// emailProtection (or none) and keyUsage allowing signatures, all valid at
// the signing time (signingTime attribute), or at now when there is none
// (time.Now() when now is zero): a certificate that expired after signing
// is still good. Certificates signed with SHA-1, which x509.Verify no
// longer accepts, are checked link by link (signature, validity, CA
// constraints, path length; not name constraints) up to a certificate
// that chains to roots, which must then be in the signature.
//
// It never panics: anything malformed is reported in Err.
func VerifyMIME(msg []byte, roots *x509.CertPool, now time.Time) (v Verification) {
	defer func() {
		if r := recover(); r != nil {
			v = Verification{Signed: v.Signed, Err: fmt.Errorf("signer: malformed signature (%v)", r)}
		}
	}()
	return verifyMIME(msg, roots, now)
}

func verifyMIME(msg []byte, roots *x509.CertPool, now time.Time) Verification {
	header, body := splitEntity(msg)
	ct, _ := headerValue(header, "Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil && mt == "" {
		return Verification{Err: fmt.Errorf("signer: not signed: Content-Type %q: %w", truncate(ct, 80), err)}
	}
	switch mt {
	case "multipart/signed":
		v := Verification{Signed: true}
		boundary := params["boundary"]
		if boundary == "" {
			v.Err = errors.New("signer: multipart/signed without a boundary")
			return v
		}
		content, sig, err := splitSigned(body, boundary)
		if err != nil {
			v.Err = err
			return v
		}
		p7, err := parseSignature(sig)
		if err != nil {
			v.Err = err
			return v
		}
		canon := toCRLF(content)
		v = check(p7, canon, roots, now)
		if !v.Valid && len(canon) != len(content) {
			if w := check(p7, content, roots, now); w.Valid {
				v = w
			}
		}
		return v
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(params["smime-type"])
		if st != "" && st != "signed-data" {
			return Verification{Err: fmt.Errorf("signer: not signed: S/MIME %s", truncate(st, 40))}
		}
		// Without smime-type it may be enveloped data: signed only once parsed.
		claimed := st == "signed-data"
		der, err := decodeBody(header, body)
		if err != nil {
			return Verification{Signed: claimed, Err: fmt.Errorf("signer: pkcs7-mime body: %w", err)}
		}
		p7, err := parseSignature(der)
		if err != nil {
			return Verification{Signed: claimed, Err: err}
		}
		if len(p7.Signers) == 0 {
			return Verification{Signed: claimed, Err: errors.New("signer: the CMS structure has no signer")}
		}
		return check(p7, p7.Content, roots, now)
	}
	return Verification{Err: fmt.Errorf("signer: not signed: Content-Type %q", truncate(mt, 80))}
}

// splitSigned returns the first part of a multipart/signed body (the
// signed content, line ends as received) and the decoded signature of the
// second.
func splitSigned(body []byte, boundary string) (content, sig []byte, err error) {
	_, start, closing, ok := delimiter(body, 0, boundary)
	if !ok || closing {
		return nil, nil, errors.New("signer: multipart/signed without its parts")
	}
	end, next, closing, ok := delimiter(body, start, boundary)
	if !ok || closing {
		return nil, nil, errors.New("signer: multipart/signed without a signature part")
	}
	if end < start {
		end = start
	}
	content = body[start:end]
	sigEnd, _, _, ok := delimiter(body, next, boundary)
	if !ok || sigEnd < next {
		sigEnd = len(body) // no close delimiter: be lenient
	}
	h, b := splitEntity(body[next:sigEnd])
	ct, _ := headerValue(h, "Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	if mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature" {
		return nil, nil, fmt.Errorf("signer: the second part of multipart/signed is %q, not a PKCS#7 signature", truncate(mt, 80))
	}
	sig, err = decodeBody(h, b)
	if err != nil {
		return nil, nil, fmt.Errorf("signer: signature part: %w", err)
	}
	return content, sig, nil
}

func parseSignature(der []byte) (*pkcs7.PKCS7, error) {
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("signer: the signature is not CMS: %w", err)
	}
	return p7, nil
}

// digestName names the digest algorithms accepted, "" for the others.
func digestName(oid asn1.ObjectIdentifier) string {
	switch {
	case oid.Equal(pkcs7.OIDDigestAlgorithmSHA1):
		return "sha1"
	case oid.Equal(pkcs7.OIDDigestAlgorithmSHA256):
		return "sha256"
	case oid.Equal(pkcs7.OIDDigestAlgorithmSHA384):
		return "sha384"
	case oid.Equal(pkcs7.OIDDigestAlgorithmSHA512):
		return "sha512"
	}
	return ""
}

// check verifies p7 over content, and the signer's chain with roots.
func check(p7 *pkcs7.PKCS7, content []byte, roots *x509.CertPool, now time.Time) Verification {
	v := Verification{Signed: true}
	if len(p7.Signers) == 0 {
		v.Err = errors.New("signer: the signature has no signer")
		return v
	}
	for _, si := range p7.Signers {
		if digestName(si.DigestAlgorithm.Algorithm) == "" {
			v.Err = fmt.Errorf("signer: unsupported digest algorithm %s", si.DigestAlgorithm.Algorithm)
			return v
		}
	}
	si := p7.Signers[0]
	v.Digest = digestName(si.DigestAlgorithm.Algorithm)
	for _, c := range p7.Certificates {
		if c.SerialNumber != nil && si.IssuerAndSerialNumber.SerialNumber != nil &&
			c.SerialNumber.Cmp(si.IssuerAndSerialNumber.SerialNumber) == 0 &&
			bytes.Equal(c.RawIssuer, si.IssuerAndSerialNumber.IssuerName.FullBytes) {
			v.Signer = c
			break
		}
	}
	if v.Signer != nil {
		v.Chain = append(v.Chain, v.Signer)
	}
	for _, c := range p7.Certificates {
		if c != v.Signer {
			v.Chain = append(v.Chain, c)
		}
	}
	var st time.Time
	if err := p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeSigningTime, &st); err == nil {
		v.SigningTime = st
	}
	if v.Signer == nil {
		v.Err = errors.New("signer: the signature does not include its signer's certificate")
		return v
	}
	p7.Content = content
	if err := p7.Verify(); err != nil {
		var mismatch *pkcs7.MessageDigestMismatchError
		if errors.As(err, &mismatch) {
			err = fmt.Errorf("the signed content changed: its %s digest is %x, the signature's %x", v.Digest, mismatch.ActualDigest, mismatch.ExpectedDigest)
		}
		v.Err = fmt.Errorf("signer: bad signature: %w", err)
		return v
	}
	if roots != nil {
		at := v.SigningTime
		if at.IsZero() {
			at = now
		}
		if at.IsZero() {
			at = time.Now()
		}
		chain, err := verifyChain(v.Signer, p7.Certificates, roots, at)
		if err != nil {
			v.Err = fmt.Errorf("signer: signer certificate %q: %w", v.Signer.Subject, err)
			return v
		}
		v.Chain = chain
	}
	v.Valid = true
	v.Content = content
	return v
}

// verifyChain verifies leaf up to roots at time at, with the certificates
// of the signature as intermediates.
func verifyChain(leaf *x509.Certificate, certs []*x509.Certificate, roots *x509.CertPool, at time.Time) ([]*x509.Certificate, error) {
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, errors.New("key usage allows neither digitalSignature nor nonRepudiation")
	}
	inter := x509.NewCertPool()
	for _, c := range certs {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	chains, err := leaf.Verify(opts)
	if err == nil {
		return chains[0], nil
	}
	sha1Signed := false
	for _, c := range append([]*x509.Certificate{leaf}, certs...) {
		if c.SignatureAlgorithm == x509.SHA1WithRSA || c.SignatureAlgorithm == x509.ECDSAWithSHA1 {
			sha1Signed = true
		}
	}
	if !sha1Signed {
		return nil, err
	}
	chain, lerr := legacyChain(leaf, certs, opts)
	if lerr != nil {
		return nil, fmt.Errorf("%w; checked as SHA-1: %v", err, lerr)
	}
	return chain, nil
}

// legacyChain walks from leaf through certs, checking each link itself
// (x509.Verify refuses SHA-1 signed certificates), until a certificate
// that x509.Verify chains to opts.Roots.
func legacyChain(leaf *x509.Certificate, certs []*x509.Certificate, opts x509.VerifyOptions) ([]*x509.Certificate, error) {
	at := opts.CurrentTime
	if at.Before(leaf.NotBefore) || at.After(leaf.NotAfter) {
		return nil, fmt.Errorf("not valid at %s", at.UTC().Format(time.RFC3339))
	}
	if !ekuAllows(leaf.ExtKeyUsage) {
		return nil, errors.New("extended key usage does not allow emailProtection")
	}
	anchorOpts := opts
	anchorOpts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	chain := []*x509.Certificate{leaf}
	for cur := leaf; len(chain) <= maxChainDepth; {
		var parent *x509.Certificate
		for _, c := range certs {
			if c == cur || !bytes.Equal(c.RawSubject, cur.RawIssuer) ||
				c.CheckSignature(cur.SignatureAlgorithm, cur.RawTBSCertificate, cur.Signature) != nil {
				continue
			}
			if !c.BasicConstraintsValid || !c.IsCA || (c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0) {
				continue
			}
			if at.Before(c.NotBefore) || at.After(c.NotAfter) || !ekuAllows(c.ExtKeyUsage) {
				continue
			}
			// CAs between c and the leaf: len(chain)-1.
			if (c.MaxPathLen > 0 || c.MaxPathLenZero) && len(chain)-1 > c.MaxPathLen {
				continue
			}
			parent = c
			break
		}
		if parent == nil {
			return nil, fmt.Errorf("no issuer of %q in the signature", cur.Subject)
		}
		chain = append(chain, parent)
		if up, err := parent.Verify(anchorOpts); err == nil {
			return append(chain, up[0][1:]...), nil
		}
		cur = parent
	}
	return nil, errors.New("chain too long")
}

func ekuAllows(ekus []x509.ExtKeyUsage) bool {
	if len(ekus) == 0 {
		return true
	}
	for _, e := range ekus {
		if e == x509.ExtKeyUsageEmailProtection || e == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
