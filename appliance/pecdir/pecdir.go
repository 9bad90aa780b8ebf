// Package pecdir is the PEC providers directory (the "indice dei gestori",
// the trust list of RFC 6109 §4.5): parsing and writing its LDIF (RFC 2849)
// and answering the questions the access and reception points ask of it.
//
//   - ParseLDIF reads a directory (or one gestore's own record) as published
//     in LDIF, checking each provider entry: the attributes the provider
//     object class requires, the form of mail addresses and domains, and
//     that every providerCertificateHash matches a providerCertificate of
//     the same entry when the entry carries both.
//   - WriteLDIF writes providers back as LDIF that ParseLDIF (and any LDIF
//     reader) reads back identically; `sigillo directory export` uses it to
//     print this gestore's own record.
//   - A Directory, built by New, is an immutable index: by certificate (the
//     SHA-1 of the signer certificate's DER, as the reception point looks it
//     up, or its SHA-256 when an entry lists that), by managed domain (IsPEC:
//     a recipient domain is "posta certificata" exactly when the directory
//     lists it), and Verify, the reception point's origin check (signer
//     known by its certificate hash and the From domain among that
//     provider's managedDomains).
//
// It is not the storage of the directory (the replicated store keeps the
// imported providers), not LDAP networking (no LDAP client or server, no
// download of the LDIF over HTTPS), and not the verification of the PKCS#7
// signature around a published .p7m LDIF file, nor of a signer's chain or
// validity period: Verify only answers "is this certificate a known
// gestore's, and does that gestore manage this domain".
package pecdir

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Provider is one entry of object class "provider" (RFC 6109 §4.5.9): a
// gestore's main operating environment, or one of its secondary environments
// when Unit is set.
type Provider struct {
	Name      string // providerName (required)
	Unit      string // providerUnit: the secondary environment's name; "" for the main environment
	ShortName string // providerShortName (not in RFC 6109's schema, used by the Italian indice)

	// Certificates are the providerCertificate values (DER, written as
	// "providerCertificate;binary:: <base64>"); several during a renewal.
	Certificates []*x509.Certificate
	// CertificateHash holds the providerCertificateHash values as written:
	// hex of the certificate's SHA-1 (RFC 6109 §4.5.1), in either case, with
	// or without ':' or ' ' between bytes, optionally prefixed by the
	// algorithm ("SHA1#AB:CD:…", "sha256:…"). A 64-digit value is a SHA-256.
	// See NormalizeHash.
	CertificateHash []string

	MailReceipt     string   // mailReceipt: the service mailbox, where presa in carico and rilevazione virus go (required)
	ManagedDomains  []string // managedDomains (at least one)
	LDIFLocationURL string   // LDIFLocationURL: where the gestore publishes its signed record
	Description     []string // description
}

// SHA1Hex is the providerCertificateHash of cert as RFC 6109 §4.5.1 defines
// it: the upper-case hex SHA-1 of its DER encoding.
func SHA1Hex(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// NormalizeHash turns a providerCertificateHash value into the form this
// package compares: "sha1:" or "sha256:" followed by lower-case hex. It
// accepts an optional algorithm prefix ("SHA1#", "SHA-1#", "sha1:",
// "SHA256#", "sha-256:", …), upper or lower case hex, and ':' or ' '
// between bytes; without a prefix the length tells the algorithm (40 hex
// digits SHA-1, 64 SHA-256).
func NormalizeHash(s string) (string, error) {
	v := strings.TrimSpace(s)
	alg := ""
	if i := strings.IndexByte(v, '#'); i >= 0 {
		alg, v = v[:i], v[i+1:]
	} else if i := strings.IndexByte(v, ':'); i > 2 && strings.HasPrefix(strings.ToLower(v), "sha") {
		alg, v = v[:i], v[i+1:]
	}
	var want int
	switch strings.ToLower(strings.TrimSpace(alg)) {
	case "":
	case "sha1", "sha-1":
		alg, want = "sha1", 40
	case "sha256", "sha-256":
		alg, want = "sha256", 64
	default:
		return "", fmt.Errorf("certificate hash %q: unknown algorithm %q (want SHA1 or SHA256)", s, alg)
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == ':' || c == ' ':
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
			b.WriteByte(c)
		case 'A' <= c && c <= 'F':
			b.WriteByte(c + 'a' - 'A')
		default:
			return "", fmt.Errorf("certificate hash %q: %q is not a hex digit", s, rune(c))
		}
	}
	h := b.String()
	if alg == "" {
		switch len(h) {
		case 40:
			alg = "sha1"
		case 64:
			alg = "sha256"
		default:
			return "", fmt.Errorf("certificate hash %q: %d hex digits, want 40 (SHA-1) or 64 (SHA-256)", s, len(h))
		}
	} else if len(h) != want {
		return "", fmt.Errorf("certificate hash %q: %d hex digits, want %d for %s", s, len(h), want, alg)
	}
	return alg + ":" + h, nil
}

// certKeys are the normalised hashes a certificate is known by.
func certKeys(cert *x509.Certificate) (sha1Key, sha256Key string) {
	s1 := sha1.Sum(cert.Raw)
	s256 := sha256.Sum256(cert.Raw)
	return "sha1:" + hex.EncodeToString(s1[:]), "sha256:" + hex.EncodeToString(s256[:])
}

// NormalizeDomain lower-cases a domain and drops a trailing dot, the form
// in which managedDomains are compared (caseIgnoreIA5Match).
func NormalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// Validate checks p as ParseLDIF checks an entry and WriteLDIF checks what
// it writes: the required attributes (providerName, mailReceipt, at least
// one managedDomains, at least one certificate or certificate hash), their
// form, and that, when the entry carries both certificates and hashes,
// every hash is that of one of its certificates and every certificate has
// its hash listed.
func (p *Provider) Validate() error {
	if err := checkText("providerName", p.Name, true); err != nil {
		return err
	}
	if err := checkText("providerUnit", p.Unit, false); err != nil {
		return err
	}
	if err := checkText("providerShortName", p.ShortName, false); err != nil {
		return err
	}
	for _, d := range p.Description {
		if err := checkText("description", d, false); err != nil {
			return err
		}
	}
	if p.LDIFLocationURL != "" {
		if err := checkText("LDIFLocationURL", p.LDIFLocationURL, false); err != nil {
			return err
		}
		if strings.ContainsAny(p.LDIFLocationURL, " \t") {
			return fmt.Errorf("LDIFLocationURL %q contains white space", p.LDIFLocationURL)
		}
	}
	if p.MailReceipt == "" {
		return errors.New("missing mailReceipt (the service mailbox, RFC 6109 §4.5.4)")
	}
	if err := checkMailbox(p.MailReceipt); err != nil {
		return err
	}
	if len(p.ManagedDomains) == 0 {
		return errors.New("missing managedDomains (RFC 6109 §4.5.5)")
	}
	for _, d := range p.ManagedDomains {
		if err := checkDomain(d); err != nil {
			return fmt.Errorf("managedDomains: %w", err)
		}
	}
	if len(p.Certificates) == 0 && len(p.CertificateHash) == 0 {
		return errors.New("neither providerCertificate nor providerCertificateHash (RFC 6109 §4.5.1, §4.5.2)")
	}
	for i, c := range p.Certificates {
		if c == nil || len(c.Raw) == 0 {
			return fmt.Errorf("providerCertificate #%d is empty", i+1)
		}
	}
	keys := make([]string, len(p.CertificateHash))
	for i, h := range p.CertificateHash {
		k, err := NormalizeHash(h)
		if err != nil {
			return fmt.Errorf("providerCertificateHash: %w", err)
		}
		keys[i] = k
	}
	if len(p.Certificates) > 0 && len(keys) > 0 {
		certOf := make(map[string]int)
		for i, c := range p.Certificates {
			k1, k256 := certKeys(c)
			certOf[k1], certOf[k256] = i, i
		}
		hashed := make([]bool, len(p.Certificates))
		for i, k := range keys {
			ci, ok := certOf[k]
			if !ok {
				return fmt.Errorf("providerCertificateHash %q matches none of the entry's %d providerCertificate (SHA-1 of the certificate%s: %s)",
					p.CertificateHash[i], len(p.Certificates), plural(len(p.Certificates)), certSHA1List(p.Certificates))
			}
			hashed[ci] = true
		}
		for i, ok := range hashed {
			if !ok {
				return fmt.Errorf("providerCertificate #%d (%s, SHA-1 %s) has no matching providerCertificateHash",
					i+1, certName(p.Certificates[i]), SHA1Hex(p.Certificates[i]))
			}
		}
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func certSHA1List(cs []*x509.Certificate) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = SHA1Hex(c)
	}
	return strings.Join(s, ", ")
}

// certName names a certificate in messages: its first rfc822Name, else its
// subject.
func certName(c *x509.Certificate) string {
	if len(c.EmailAddresses) > 0 {
		return c.EmailAddresses[0]
	}
	return fmt.Sprintf("%q", c.Subject.String())
}

// checkText: valid UTF-8 without control characters.
func checkText(attr, v string, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("missing %s", attr)
		}
		return nil
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not valid UTF-8", attr)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains a control character", attr, v)
		}
	}
	return nil
}

// atext of RFC 5322 §3.2.3.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func isDotAtom(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			if !isAtext(part[i]) {
				return false
			}
		}
	}
	return true
}

// checkMailbox: dot-atom "@" dot-atom, as RFC 6109 §4.5.4 restricts
// mailReceipt.
func checkMailbox(m string) error {
	i := strings.LastIndexByte(m, '@')
	if i < 0 || !isDotAtom(m[:i]) || checkDomain(m[i+1:]) != nil || len(m) > 254 {
		return fmt.Errorf("mailReceipt %q is not an address of the form local@domain (dot-atom on both sides, RFC 6109 §4.5.4)", m)
	}
	return nil
}

// checkDomain: a host name (letters, digits, '-', '_'; labels of 1 to 63
// characters), a trailing dot allowed.
func checkDomain(d string) error {
	s := strings.TrimSuffix(d, ".")
	bad := func(why string) error { return fmt.Errorf("domain %q: %s", d, why) }
	if s == "" {
		return bad("empty")
	}
	if len(s) > 253 {
		return bad("longer than 253 characters")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return bad("empty label")
		}
		if len(label) > 63 {
			return bad("label longer than 63 characters")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return bad(fmt.Sprintf("character %q not allowed (letters, digits, '-' only; IDNs in A-label form)", rune(c)))
			}
		}
	}
	return nil
}
