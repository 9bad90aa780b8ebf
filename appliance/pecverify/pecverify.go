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
// The signature is checked by signer.VerifyMIME, the one S/MIME verifier of
// Sigillo, whose MIME parsing this package shares. The detached CMS
// signature is verified over the exact bytes of the first
// part of the top-level multipart/signed as they are in the file (RFC 2046
// boundaries found by hand; no MIME library re-serializes them), and, for a
// file stored with LF line ends, over the same bytes in canonical CRLF form,
// as `openssl smime -verify` does in text mode. Certificates are judged at
// the message's signing time, so a receipt signed in 2014 with a certificate
// that expired in 2017 still verifies. Broken input gives a report with an
// error, never a panic; sizes, part counts and nesting are bounded.
package pecverify

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"sigillo/appliance/signer"
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
	h, body, err := signer.ParseHeader(msg)
	if err != nil {
		r.Error = "header: " + err.Error()
		return r
	}
	budget := maxParts
	mt, params := signer.MediaType(h)
	content := msg // the entity in which daticert.xml is looked for
	var problems []string
	if mt == "multipart/signed" {
		// The signed part, where daticert.xml is.
		content = nil
		if parts, _ := signer.SplitMultipart(body, params["boundary"], &budget); len(parts) > 0 {
			content = parts[0]
		}
		verifySigned(&r, msg, opts)
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

	r.Kind = strings.ToLower(h.Get("x-ricevuta"))
	if r.Kind == "" {
		r.Kind = strings.ToLower(h.Get("x-trasporto"))
	}
	if r.Kind == "" && r.Daticert != nil {
		r.Kind = r.Daticert.Tipo
	}
	switch {
	case r.Daticert != nil && r.Daticert.Identificativo != "":
		r.Identificativo = r.Daticert.Identificativo
	case h.Get("x-trasporto") != "" && h.Get("message-id") != "":
		r.Identificativo = stripAngle(h.Get("message-id"))
	case h.Get("x-riferimento-message-id") != "":
		r.Identificativo = stripAngle(h.Get("x-riferimento-message-id"))
	default:
		r.Identificativo = stripAngle(h.Get("message-id"))
	}
	return r
}

func stripAngle(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "<"), ">")
}

// verifySigned verifies the multipart/signed message msg with
// signer.VerifyMIME and fills the signature fields of r.
func verifySigned(r *Report, msg []byte, opts Options) {
	v := signer.VerifyMIME(msg, opts.Roots, opts.Now)
	switch {
	case v.Valid:
		r.Signature = SignatureValid
	case !v.Signed || errors.Is(v.Err, signer.ErrNoSignaturePart):
		r.Signature = SignatureMissing
	default:
		r.Signature = SignatureInvalid
	}
	if v.Err != nil {
		r.SignatureError = strings.TrimPrefix(v.Err.Error(), "signer: ")
	}
	if v.Signer != nil {
		r.Signer = v.Signer.Subject.CommonName
		if len(v.Signer.EmailAddresses) > 0 {
			r.Signer = v.Signer.EmailAddresses[0]
		}
		r.SignerSHA1 = v.SignerSHA1
	}
	if !v.SigningTime.IsZero() {
		st := v.SigningTime
		r.SigningTime = &st
	}
	r.Digest = v.Digest
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
	h, body, err := signer.ParseHeader(entity)
	if err != nil {
		return nil, fmt.Errorf("MIME part header: %v", err)
	}
	mt, params := signer.MediaType(h)
	if strings.EqualFold(fileName(h, params), "daticert.xml") {
		b, err := signer.DecodeBody(h.Get("content-transfer-encoding"), body, maxDaticert)
		if err != nil {
			return b, fmt.Errorf("daticert.xml: %v", err)
		}
		return b, nil
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		parts, err := signer.SplitMultipart(body, params["boundary"], budget)
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
		b, err := signer.DecodeBody(h.Get("content-transfer-encoding"), body, maxDaticert)
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
