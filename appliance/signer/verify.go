package signer

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
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
	// that it includes (whether or not it verifies); SignerSHA1 is the hex
	// SHA-1 of the whole certificate, the key of the PEC providers
	// directory (providerCertificateHash).
	Signer     *x509.Certificate
	SignerSHA1 string
	// Chain is, with roots, the verified chain from Signer to a root;
	// otherwise the certificates included in the signature, Signer first.
	Chain []*x509.Certificate
	// SigningTime is the signingTime signed attribute, if any.
	SigningTime time.Time
	// Digest is the digest algorithm: sha1, sha256, sha384 or sha512 (the
	// dotted OID of one that is not accepted).
	Digest string
	// Content is the signed content as verified: for multipart/signed the
	// first part (a MIME entity, exactly as received or with its line ends
	// made CRLF, whichever verified); for pkcs7-mime the encapsulated
	// content. Nil unless Valid.
	Content []byte
	// Err says why the entity is not Signed or not Valid. Its text is one
	// line, the same from run to run for the same input. It wraps
	// ErrNoSignaturePart when a multipart/signed has fewer than two parts.
	Err error
}

// ErrNoSignaturePart is wrapped by Verification.Err when a
// multipart/signed entity has its boundary but not two parts.
var ErrNoSignaturePart = errors.New("multipart/signed without a signature part")

// maxChainDepth bounds the chain walked for SHA-1 signed certificates.
const maxChainDepth = 8

// VerifyMIME verifies an S/MIME signed entity: a whole message or a nested
// entity (header fields, empty line, body) that is multipart/signed with a
// detached CMS signature, or application/pkcs7-mime signed-data. The
// detached signature is checked over the first part exactly as received
// (RFC 2046 boundaries found by hand, the line break before a delimiter
// belonging to it) and, failing that when the part has bare LF line ends,
// over the same bytes made CRLF, as `openssl smime -verify` does in text
// mode. SHA-1 and SHA-256 (and SHA-384, SHA-512) are accepted, with RSA or
// ECDSA; every signer must verify. The signature part may be base64 (even
// without its Content-Transfer-Encoding), quoted-printable or binary.
//
// With roots, each signer's certificate must also chain to one of them
// (the chain from the certificates in the signature), with extKeyUsage
// emailProtection (or none) and keyUsage allowing signatures, all valid at
// the signing time (signingTime attribute), or at now when there is none
// (time.Now() when now is zero): a certificate that expired after signing
// is still good. Certificates signed with SHA-1, which x509.Verify no
// longer accepts, are checked link by link (signature, validity, CA
// constraints, path length; not name constraints) up to a certificate
// that chains to roots, which must then be in the signature.
//
// It never panics, and its cost is bounded: entities over MaxMessageSize,
// oversized headers, boundaries and signatures, and signatures whose BER
// nests deeper than 64 levels are refused; anything malformed is reported
// in Err.
func VerifyMIME(msg []byte, roots *x509.CertPool, now time.Time) (v Verification) {
	defer func() {
		if r := recover(); r != nil {
			v = Verification{Signed: v.Signed, Err: fmt.Errorf("signer: malformed signature (%v)", r)}
		}
		if v.Err != nil {
			v.Err = &verifyError{msg: oneLine(v.Err), err: v.Err}
		}
	}()
	return verifyMIME(msg, roots, now)
}

// verifyError gives an error a deterministic one-line text (see oneLine),
// keeping what it wraps.
type verifyError struct {
	msg string
	err error
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.err }

// oneLine flattens an error message (pkcs7's digest mismatch spans lines)
// and drops the dump of field parameters that encoding/asn1 appends to a
// structure error, which holds a pointer and so differs from run to run.
func oneLine(err error) string {
	s := err.Error()
	for {
		i := strings.Index(s, " {optional:")
		if i < 0 {
			break
		}
		j := strings.Index(s[i:], "}")
		if j < 0 {
			break
		}
		s = s[:i] + s[i+j+1:]
	}
	return strings.Join(strings.Fields(s), " ")
}

func verifyMIME(msg []byte, roots *x509.CertPool, now time.Time) Verification {
	if len(msg) > MaxMessageSize {
		return Verification{Err: fmt.Errorf("signer: not verified: longer than %d bytes", MaxMessageSize)}
	}
	header, body, err := ParseHeader(msg)
	if err != nil {
		return Verification{Err: fmt.Errorf("signer: not verified: header: %w", err)}
	}
	mt, params := MediaType(header)
	switch mt {
	case "multipart/signed":
		v := Verification{Signed: true}
		budget := 2 // the content and the signature: the rest is not read
		parts, err := SplitMultipart(body, params["boundary"], &budget)
		switch {
		case err != nil && len(parts) == 0:
			v.Err = fmt.Errorf("signer: multipart/signed: %w", err)
			return v
		case len(parts) < 2:
			v.Err = fmt.Errorf("signer: %w", ErrNoSignaturePart)
			return v
		}
		content := parts[0]
		p7, err := parseSignaturePart(parts[1])
		if err != nil {
			v.Err = fmt.Errorf("signer: %w", err)
			return v
		}
		var canon []byte
		if c := toCRLF(content); len(c) != len(content) {
			canon = c
		}
		return check(p7, content, canon, roots, now)
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		st := strings.ToLower(params["smime-type"])
		if st != "" && st != "signed-data" {
			return Verification{Err: fmt.Errorf("signer: not signed: S/MIME %s", truncate(st, 40))}
		}
		// Without smime-type it may be enveloped data: signed only once parsed.
		claimed := st == "signed-data"
		der, err := DecodeBody(header.Get("content-transfer-encoding"), body, MaxMessageSize)
		if err != nil {
			return Verification{Signed: claimed, Err: fmt.Errorf("signer: pkcs7-mime body: %w", err)}
		}
		p7, err := parseSignature(der)
		if err != nil {
			return Verification{Signed: claimed, Err: fmt.Errorf("signer: pkcs7-mime body %w", err)}
		}
		if len(p7.Signers) == 0 {
			return Verification{Signed: claimed, Err: errors.New("signer: the CMS structure has no signer")}
		}
		return check(p7, p7.Content, nil, roots, now)
	}
	return Verification{Err: fmt.Errorf("signer: not signed: Content-Type %s", truncate(mt, 80))}
}

// parseSignaturePart decodes and parses the second part of a
// multipart/signed, the detached CMS signature.
func parseSignaturePart(part []byte) (*pkcs7.PKCS7, error) {
	h, body, err := ParseHeader(part)
	if err != nil {
		return nil, fmt.Errorf("signature part header: %w", err)
	}
	if mt, _ := MediaType(h); mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature" {
		return nil, fmt.Errorf("second part of multipart/signed is %s, not a PKCS#7 signature", truncate(mt, 80))
	}
	der, err := DecodeBody(h.Get("content-transfer-encoding"), body, maxSignature)
	if err != nil {
		return nil, fmt.Errorf("smime.p7s: %w", err)
	}
	if len(der) > 0 && der[0] != 0x30 {
		// Not DER (a SEQUENCE): base64 without its Content-Transfer-Encoding.
		if b, err := decodeBase64(der, maxSignature); err == nil && len(b) > 0 && b[0] == 0x30 {
			der = b
		}
	}
	p7, err := parseSignature(der)
	if err != nil {
		return nil, fmt.Errorf("smime.p7s %w", err)
	}
	return p7, nil
}

// parseSignature parses a CMS structure, after checking that its BER
// nesting is bounded.
func parseSignature(der []byte) (*pkcs7.PKCS7, error) {
	if err := checkBER(der); err != nil {
		return nil, fmt.Errorf("is not a CMS signature: %w", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("is not a CMS signature: %w", err)
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

// findCert returns the certificate of certs with that issuer and serial.
func findCert(certs []*x509.Certificate, rawIssuer []byte, serial *big.Int) *x509.Certificate {
	if serial == nil {
		return nil
	}
	for _, c := range certs {
		if c.SerialNumber != nil && c.SerialNumber.Cmp(serial) == 0 && bytes.Equal(c.RawIssuer, rawIssuer) {
			return c
		}
	}
	return nil
}

// check verifies p7 over content or, failing that, over alt (when not
// nil), and each signer's chain with roots.
func check(p7 *pkcs7.PKCS7, content, alt []byte, roots *x509.CertPool, now time.Time) Verification {
	v := Verification{Signed: true}
	if len(p7.Signers) == 0 {
		v.Err = errors.New("signer: CMS signature has no signer")
		return v
	}
	si := p7.Signers[0]
	v.Digest = digestName(si.DigestAlgorithm.Algorithm)
	if v.Digest == "" {
		v.Digest = si.DigestAlgorithm.Algorithm.String()
	}
	v.Signer = findCert(p7.Certificates, si.IssuerAndSerialNumber.IssuerName.FullBytes, si.IssuerAndSerialNumber.SerialNumber)
	if v.Signer != nil {
		sum := sha1.Sum(v.Signer.Raw)
		v.SignerSHA1 = hex.EncodeToString(sum[:])
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
		v.Err = errors.New("signer: the signer's certificate is not in the CMS signature")
		return v
	}
	for _, si := range p7.Signers {
		if digestName(si.DigestAlgorithm.Algorithm) == "" {
			v.Err = fmt.Errorf("signer: unsupported digest algorithm %s", si.DigestAlgorithm.Algorithm)
			return v
		}
	}
	p7.Content = content
	err := p7.Verify()
	if err != nil && alt != nil {
		p7.Content = alt
		if err2 := p7.Verify(); err2 == nil {
			content, err = alt, nil
		} else if oneLine(err2) != oneLine(err) {
			err = fmt.Errorf("%s; over the CRLF form: %s", oneLine(err), oneLine(err2))
		}
	}
	if err != nil {
		v.Err = fmt.Errorf("signer: %w", err)
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
		for i, si := range p7.Signers {
			c := findCert(p7.Certificates, si.IssuerAndSerialNumber.IssuerName.FullBytes, si.IssuerAndSerialNumber.SerialNumber)
			if c == nil {
				v.Err = errors.New("signer: a signer's certificate is not in the CMS signature")
				return v
			}
			chain, err := verifyChain(c, p7.Certificates, roots, at)
			if err != nil {
				v.Err = fmt.Errorf("signer: certificate chain of %q: %w", c.Subject, err)
				return v
			}
			if i == 0 {
				v.Chain = chain
			}
		}
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
		sha1Signed = sha1Signed || isSHA1(c.SignatureAlgorithm)
	}
	if !sha1Signed {
		return nil, err
	}
	chain, lerr := legacyChain(leaf, certs, opts)
	if lerr != nil {
		return nil, fmt.Errorf("%w; allowing SHA-1: %v", err, lerr)
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

func isSHA1(a x509.SignatureAlgorithm) bool {
	return a == x509.SHA1WithRSA || a == x509.ECDSAWithSHA1 || a == x509.DSAWithSHA1
}
