// Package pecverify reads a PEC message written by any gestore (Aruba,
// Namirial, Legalmail, Sigillo itself, …) and reports what it is: its kind
// (the X-Ricevuta or X-Trasporto value), whether its S/MIME signature
// verifies, who signed it (the signer certificate's address and SHA-1, the
// key of the providers directory), when, with which digest, its
// identificativo and the content of its daticert.xml. It is the engine of
// `sigillo pec verify FILE...` (see Run) and a building block for tests that
// check what Sigillo writes.
//
// It is not the reception point's logic: it does not look signers up in the
// providers directory, compare the From domain with managedDomains, fetch
// CRLs or OCSP, check a message's formal correctness, or decide between
// delivery and busta di anomalia. It only reports facts for such code to
// judge.
//
// The detached CMS signature is verified over the exact bytes of the first
// part of the top-level multipart/signed as they are in the file (RFC 2046
// boundaries found by hand; no MIME library re-serializes them), and, for a
// file stored with LF line ends, over the same bytes in canonical CRLF form,
// as `openssl smime -verify` does in text mode. Certificates are judged at
// the message's signing time, so a receipt signed in 2014 with a certificate
// that expired in 2017 still verifies. Broken input gives a report with an
// error, never a panic; sizes, part counts and nesting are bounded.
package pecverify

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/digitorus/pkcs7"
)

// Values of Report.Signature.
const (
	SignatureValid   = "valid"   // the CMS signature verifies over the signed part (and, with Options.Roots, the chain too)
	SignatureInvalid = "invalid" // there is a signature part, but it is unreadable or does not verify
	SignatureMissing = "missing" // the message is not multipart/signed, or has no signature part
)

// Report is what Verify finds out about one message. It is printed as one
// JSON object per file by Run.
type Report struct {
	File string `json:"file"`
	// Kind is the X-Ricevuta value (accettazione, non-accettazione,
	// presa-in-carico, avvenuta-consegna, errore-consegna,
	// preavviso-errore-consegna, rilevazione-virus) or, for envelopes, the
	// X-Trasporto value (posta-certificata, errore). When the message has
	// neither header (a signed part saved on its own) it is the daticert tipo;
	// "" when there is neither.
	Kind           string `json:"kind"`
	Signature      string `json:"signature"` // SignatureValid, SignatureInvalid or SignatureMissing
	SignatureError string `json:"signature_error,omitempty"`
	// Signer is the signer certificate's rfc822Name (subject CN if it has
	// none); SignerSHA1 the hex SHA-1 of the whole certificate, the key of the
	// providers directory (providerCertificateHash).
	Signer      string     `json:"signer,omitempty"`
	SignerSHA1  string     `json:"signer_sha1,omitempty"`
	SigningTime *time.Time `json:"signing_time,omitempty"`
	Digest      string     `json:"digest,omitempty"` // sha1, sha256 (sha384, sha512)
	// Identificativo is the PEC msgid: daticert's <identificativo>. Without a
	// daticert: for an envelope (X-Trasporto) its Message-ID (the PEC msgid
	// in a busta di trasporto, the original's in a busta di anomalia); else
	// X-Riferimento-Message-ID (the client's msgid a receipt refers to); else
	// Message-ID. Angle brackets removed.
	Identificativo string    `json:"identificativo,omitempty"`
	Daticert       *Daticert `json:"daticert,omitempty"`
	// Error reports problems reading the message (header, MIME structure,
	// daticert.xml). Signature problems go in SignatureError.
	Error string `json:"error,omitempty"`
}

// Options tune Verify.
type Options struct {
	// Roots, when set, are the trusted certificates: the signer's chain
	// (through the certificates carried in the signature) must verify to one
	// of them at signing time. When nil the signature is checked
	// cryptographically only, like `openssl smime -verify -noverify`.
	Roots *x509.CertPool
	// Now is the time at which to judge the chain of a signature without a
	// signingTime attribute; zero means time.Now().
	Now time.Time
}

// Verify reports on one message. name only fills Report.File. It never
// panics, always returns a Report with Signature set, and is safe for
// concurrent use.
func Verify(name string, msg []byte, opts Options) Report {
	r := Report{File: name, Signature: SignatureMissing}
	if len(msg) > MaxMessageSize {
		r.Error = fmt.Sprintf("message longer than %d bytes", MaxMessageSize)
		return r
	}
	h, body, err := parseHeader(msg)
	if err != nil {
		r.Error = "header: " + err.Error()
		return r
	}
	budget := maxParts
	mt, params := mediaType(h)
	content := msg // the entity in which daticert.xml is looked for
	var problems []string
	if mt == "multipart/signed" {
		parts, err := splitMultipart(body, params["boundary"], &budget)
		switch {
		case err != nil && len(parts) == 0:
			r.Signature = SignatureInvalid
			r.SignatureError = "multipart/signed: " + err.Error()
			content = nil
		case len(parts) < 2:
			r.SignatureError = "multipart/signed without a signature part"
			content = nil
			if len(parts) == 1 {
				content = parts[0]
			}
		default:
			content = parts[0]
			verifySigned(&r, parts[0], parts[1], opts)
		}
	} else {
		r.SignatureError = fmt.Sprintf("not S/MIME signed: top-level Content-Type is %s", mt)
	}
	if content != nil {
		xmlBytes, err := findDaticert(content, 0, &budget)
		if err != nil {
			problems = append(problems, err.Error())
		}
		if xmlBytes != nil {
			dc, err := ParseDaticert(xmlBytes)
			if err != nil {
				problems = append(problems, err.Error())
			}
			r.Daticert = dc
		}
	}
	r.Error = strings.Join(problems, "; ")

	r.Kind = strings.ToLower(h.get("x-ricevuta"))
	if r.Kind == "" {
		r.Kind = strings.ToLower(h.get("x-trasporto"))
	}
	if r.Kind == "" && r.Daticert != nil {
		r.Kind = r.Daticert.Tipo
	}
	switch {
	case r.Daticert != nil && r.Daticert.Identificativo != "":
		r.Identificativo = r.Daticert.Identificativo
	case h.get("x-trasporto") != "" && h.get("message-id") != "":
		r.Identificativo = stripAngle(h.get("message-id"))
	case h.get("x-riferimento-message-id") != "":
		r.Identificativo = stripAngle(h.get("x-riferimento-message-id"))
	default:
		r.Identificativo = stripAngle(h.get("message-id"))
	}
	return r
}

func stripAngle(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "<"), ">")
}

// verifySigned checks the signature part sigPart over the signed part signed
// and fills the signature fields of r.
func verifySigned(r *Report, signed, sigPart []byte, opts Options) {
	r.Signature = SignatureInvalid
	sh, sbody, err := parseHeader(sigPart)
	if err != nil {
		r.SignatureError = "signature part header: " + err.Error()
		return
	}
	if mt, _ := mediaType(sh); mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature" {
		r.SignatureError = fmt.Sprintf("second part of multipart/signed is %s, not a PKCS#7 signature", mt)
		return
	}
	der, err := decodeBody(sh.get("content-transfer-encoding"), sbody, maxSignature)
	if err == nil && len(der) > 0 && der[0] != 0x30 {
		// Not DER (a SEQUENCE): base64 without its Content-Transfer-Encoding.
		if b, err2 := decodeBase64(der, maxSignature); err2 == nil && len(b) > 0 && b[0] == 0x30 {
			der = b
		}
	}
	if err != nil {
		r.SignatureError = "smime.p7s: " + err.Error()
		return
	}
	if err := checkBER(der); err != nil {
		r.SignatureError = "smime.p7s is not a CMS signature: " + err.Error()
		return
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		r.SignatureError = "smime.p7s is not a CMS signature: " + oneLine(err)
		return
	}
	if len(p7.Signers) == 0 {
		r.SignatureError = "CMS signature has no signer"
		return
	}
	si := p7.Signers[0]
	r.Digest = digestName(si.DigestAlgorithm.Algorithm)
	leaf := findCert(p7.Certificates, si.IssuerAndSerialNumber.IssuerName.FullBytes, si.IssuerAndSerialNumber.SerialNumber)
	if leaf == nil {
		r.SignatureError = "the signer's certificate is not in the CMS signature"
		return
	}
	r.Signer = leaf.Subject.CommonName
	if len(leaf.EmailAddresses) > 0 {
		r.Signer = leaf.EmailAddresses[0]
	}
	sum := sha1.Sum(leaf.Raw)
	r.SignerSHA1 = hex.EncodeToString(sum[:])
	var st time.Time
	if p7.UnmarshalSignedAttribute(pkcs7.OIDAttributeSigningTime, &st) == nil && !st.IsZero() {
		r.SigningTime = &st
	}

	err = checkContent(p7, signed)
	if err != nil && hasBareLF(signed) {
		if err2 := checkContent(p7, toCRLF(signed)); err2 == nil {
			err = nil
		} else if oneLine(err2) != oneLine(err) {
			err = fmt.Errorf("%s; over the CRLF form: %s", oneLine(err), oneLine(err2))
		}
	}
	if err != nil {
		r.SignatureError = oneLine(err)
		return
	}
	if opts.Roots != nil {
		at := opts.Now
		if r.SigningTime != nil {
			at = *r.SigningTime
		} else if at.IsZero() {
			at = time.Now()
		}
		for i := range p7.Signers {
			ias := p7.Signers[i].IssuerAndSerialNumber
			c := findCert(p7.Certificates, ias.IssuerName.FullBytes, ias.SerialNumber)
			if c == nil {
				r.SignatureError = "a signer's certificate is not in the CMS signature"
				return
			}
			if err := verifyChain(c, p7.Certificates, opts.Roots, at); err != nil {
				r.SignatureError = "certificate chain: " + oneLine(err)
				return
			}
		}
	}
	r.Signature = SignatureValid
}

// checkContent verifies every signer of the detached signature p7 over
// content. Without roots, pkcs7 checks the digest, the signature and that the
// signing time (when present) is within the signer certificate's validity.
func checkContent(p7 *pkcs7.PKCS7, content []byte) (err error) {
	p7.Content = content
	return p7.VerifyWithOpts(x509.VerifyOptions{})
}

func findCert(certs []*x509.Certificate, rawIssuer []byte, serial *big.Int) *x509.Certificate {
	if serial == nil {
		return nil
	}
	for _, c := range certs {
		if c.SerialNumber != nil && c.SerialNumber.Cmp(serial) == 0 && string(c.RawIssuer) == string(rawIssuer) {
			return c
		}
	}
	return nil
}

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
	return oid.String()
}

// oneLine flattens an error message (pkcs7's digest mismatch spans lines)
// and drops the dump of field parameters that encoding/asn1 appends to a
// structure error, which holds a pointer and so differs from run to run.
func oneLine(err error) string {
	s := err.Error()
	if i := strings.Index(s, " {optional:"); i >= 0 {
		if j := strings.Index(s[i:], "}"); j >= 0 {
			s = s[:i] + s[i+j+1:]
		}
	}
	return strings.Join(strings.Fields(s), " ")
}

// findDaticert looks for daticert.xml in an entity and its multipart
// children, never inside a message/rfc822 (postacert.eml is the user's
// message, and could itself carry a PEC's daticert). A part named
// daticert.xml wins; failing that, an application/xml or text/xml part whose
// content mentions postacert. It returns the decoded XML, or nil.
func findDaticert(entity []byte, depth int, budget *int) ([]byte, error) {
	var candidate []byte
	found, err := walkDaticert(entity, depth, budget, &candidate)
	if found != nil {
		return found, err
	}
	return candidate, err
}

func walkDaticert(entity []byte, depth int, budget *int, candidate *[]byte) ([]byte, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("MIME nesting deeper than %d", maxDepth)
	}
	h, body, err := parseHeader(entity)
	if err != nil {
		return nil, fmt.Errorf("MIME part header: %v", err)
	}
	mt, params := mediaType(h)
	if strings.EqualFold(fileName(h, params), "daticert.xml") {
		b, err := decodeBody(h.get("content-transfer-encoding"), body, maxDaticert)
		if err != nil {
			return b, fmt.Errorf("daticert.xml: %v", err)
		}
		return b, nil
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		parts, err := splitMultipart(body, params["boundary"], budget)
		var firstErr error
		if err != nil {
			firstErr = fmt.Errorf("%s: %v", mt, err)
		}
		for _, p := range parts {
			b, err := walkDaticert(p, depth+1, budget, candidate)
			if b != nil {
				return b, err
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}
		return nil, firstErr
	case (mt == "application/xml" || mt == "text/xml") && *candidate == nil:
		b, err := decodeBody(h.get("content-transfer-encoding"), body, maxDaticert)
		if err == nil && strings.Contains(string(b), "postacert") {
			*candidate = b
		}
	}
	return nil, nil
}

// Run verifies each file and prints one JSON Report per line on stdout: the
// body of `sigillo pec verify FILE...`. A file that cannot be read gets a
// Report with Error set and signature "missing". It returns true when every
// file's signature is valid (the command then exits 0, otherwise 1), and
// false when there are no files or stdout cannot be written.
func Run(files []string, stdout io.Writer, opts Options) (allValid bool) {
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	allValid = len(files) > 0
	for _, name := range files {
		var r Report
		msg, err := readFile(name)
		if err != nil {
			r = Report{File: name, Signature: SignatureMissing, Error: err.Error()}
		} else {
			r = Verify(name, msg, opts)
		}
		if r.Signature != SignatureValid {
			allValid = false
		}
		if err := enc.Encode(r); err != nil {
			allValid = false
		}
	}
	return allValid
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxMessageSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMessageSize {
		return nil, errors.New("file longer than the largest message read")
	}
	return b, nil
}
