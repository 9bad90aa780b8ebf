// Package signer signs and verifies S/MIME for the PEC gestore.
//
// It holds the gestore's signing key, in a PKCS#11 token (SoftHSM2 in
// development and tests, a real HSM in production, through crypto11) or, for
// development only, in a PEM file; it creates that key and its certificate
// (Init, following the profile of PEC.md §2.1), wraps a MIME entity into a
// multipart/signed entity with a detached CMS signature (SignMIME), and
// verifies such entities, whoever signed them (VerifyMIME).
//
// It is not the PEC logic: it knows nothing of receipts, envelopes,
// daticert.xml, the providers directory or which signers to trust. Callers
// build the entity to sign, put their own header fields in front of the
// signed result, and decide what a verified signer certificate means (for
// PEC: is it in the providers directory, does its rfc822Name match From).
package signer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/digitorus/pkcs7"
)

// Config says where the gestore key is. Either PKCS11Module (with
// TokenLabel, PIN and KeyLabel) or KeyFile is set, not both.
type Config struct {
	// PKCS11Module is the path of the PKCS#11 library, for example
	// /usr/lib/softhsm/libsofthsm2.so.
	PKCS11Module string
	// TokenLabel selects the token.
	TokenLabel string
	// PIN is the user PIN of the token, read from pin_file by the caller.
	PIN string
	// KeyLabel is the CKA_LABEL of the key pair and of its certificate
	// ("gestore"); the certificates of the issuing CA chain, if any, are
	// stored as KeyLabel+"/chain/1", "/chain/2", ...
	KeyLabel string
	// KeyFile, for development only, is a PEM file holding the private
	// key, the certificate and its chain, used instead of a token. Open
	// logs a warning when it is set.
	KeyFile string
}

// DefaultKeyLabel is the key label used when Config.KeyLabel is empty.
const DefaultKeyLabel = "gestore"

// Signer signs with the gestore key. It is safe for concurrent use.
type Signer struct {
	store store
	key   crypto.Signer
	chain []*x509.Certificate // leaf first

	closeOnce sync.Once
	closeErr  error
}

// Open finds the key and its certificate (and the certificate's chain, if
// Init stored one) and returns a Signer ready to sign. logger may be nil.
func Open(cfg Config, logger *slog.Logger) (*Signer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	s, err := open(st)
	if err != nil {
		st.close()
		return nil, err
	}
	leaf := s.chain[0]
	if cfg.KeyFile != "" {
		logger.Warn("signer: the gestore key is in a PEM file, not in a PKCS#11 token; acceptable for development only",
			"key_file", cfg.KeyFile)
	}
	logger.Info("signer: gestore key ready", "store", st.String(), "subject", leaf.Subject.String(),
		"email", leaf.EmailAddresses, "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "chain", len(s.chain)-1)
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		logger.Warn("signer: the gestore certificate is not valid now; receivers will reject what it signs",
			"not_before", leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return s, nil
}

func open(st store) (*Signer, error) {
	key, err := st.keyPair()
	if err != nil {
		return nil, err
	}
	if key == nil {
		return nil, fmt.Errorf("signer: no key pair in %s: run the gestore init first", st)
	}
	chain, err := st.chain()
	if err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("signer: no certificate for the key in %s: run the gestore init first", st)
	}
	if !samePublicKey(chain[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("signer: the certificate in %s (serial %s) is not the key's: run the gestore init again",
			st, chain[0].SerialNumber.Text(16))
	}
	return &Signer{store: st, key: key, chain: chain}, nil
}

// Certificate returns the gestore certificate.
func (s *Signer) Certificate() *x509.Certificate { return s.chain[0] }

// Key is the gestore key as a crypto.Signer (a handle on the token's key:
// the private key itself never leaves the token), for signatures other
// than S/MIME, such as the legal log's signed heads.
func (s *Signer) Key() crypto.Signer { return s.key }

// Chain returns the gestore certificate followed by the certificates of
// its issuers that go into every signature (none when self-signed).
func (s *Signer) Chain() []*x509.Certificate {
	return append([]*x509.Certificate(nil), s.chain...)
}

// Close releases the token. Do not sign after Close.
func (s *Signer) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.store.close() })
	return s.closeErr
}

// SignMIME signs part, a complete MIME entity (header fields, empty line,
// body), for example the multipart/mixed of a receipt with its text,
// daticert.xml and postacert.eml. Line ends in part are made CRLF first;
// the signature is over exactly the bytes of part that appear in body.
//
// It returns the multipart/signed entity as the value of its Content-Type
// header field (a single line of about 120 characters, well within the
// 998 allowed) and its body, CRLF throughout: the part, then smime.p7s
// (base64, detached CMS SignedData, SHA-256, with the signer certificate
// and its chain). A caller writes its own header fields, then
// "MIME-Version: 1.0", "Content-Type: "+contentType, an empty line and
// body. SignMIME is safe for concurrent use.
func (s *Signer) SignMIME(part []byte) (contentType string, body []byte, err error) {
	part = toCRLF(part)
	if err := checkEntity(part); err != nil {
		return "", nil, fmt.Errorf("signer: signing: %w", err)
	}
	sd, err := pkcs7.NewSignedData(part)
	if err != nil {
		return "", nil, fmt.Errorf("signer: signing: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if len(s.chain) > 1 {
		err = sd.AddSignerChain(s.chain[0], s.key, s.chain[1:], pkcs7.SignerInfoConfig{})
	} else {
		err = sd.AddSigner(s.chain[0], s.key, pkcs7.SignerInfoConfig{})
	}
	if err != nil {
		return "", nil, fmt.Errorf("signer: signing with %s: %w", s.store, err)
	}
	sd.Detach()
	der, err := sd.Finish()
	if err != nil {
		return "", nil, fmt.Errorf("signer: encoding the signature: %w", err)
	}

	boundary, err := newBoundary(part)
	if err != nil {
		return "", nil, err
	}
	var b bytes.Buffer
	b.Grow(len(part) + len(der)*4/3 + 512)
	b.WriteString("This is an S/MIME signed message\r\n\r\n--")
	b.WriteString(boundary)
	b.WriteString("\r\n")
	b.Write(part)
	b.WriteString("\r\n--")
	b.WriteString(boundary)
	b.WriteString("\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"smime.p7s\"\r\n" +
		"Content-Description: S/MIME Cryptographic Signature\r\n\r\n")
	writeBase64Lines(&b, der)
	b.WriteString("--")
	b.WriteString(boundary)
	b.WriteString("--\r\n")
	contentType = `multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; boundary="` + boundary + `"`
	return contentType, b.Bytes(), nil
}

// newBoundary returns a random boundary that does not occur in part.
func newBoundary(part []byte) (string, error) {
	var r [12]byte
	for range 8 {
		if _, err := rand.Read(r[:]); err != nil {
			return "", fmt.Errorf("signer: making a boundary: %w", err)
		}
		b := "----=_sigillo_" + hex.EncodeToString(r[:])
		if !bytes.Contains(part, []byte(b)) {
			return b, nil
		}
	}
	return "", errors.New("signer: no boundary found that is not in the part")
}

// writeBase64Lines writes data in base64, in lines of 76 characters, each
// ending in CRLF.
func writeBase64Lines(b *bytes.Buffer, data []byte) {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc)
	b.WriteString("\r\n")
}

// samePublicKey tells whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
