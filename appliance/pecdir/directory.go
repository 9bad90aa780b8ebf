package pecdir

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors of Verify (and Match), wrapped with the details.
var (
	ErrNoCertificate    = errors.New("no signer certificate")
	ErrUnknownProvider  = errors.New("signer certificate not in the providers directory")
	ErrDomainNotManaged = errors.New("sender domain not managed by the signer's provider")
)

// Directory is an immutable index of providers, safe for concurrent use.
// Build a new one (New) to change it.
type Directory struct {
	providers []Provider
	byHash    map[string][]int // normalised hash (sha1:…, sha256:…) -> entries, in order
	byDomain  map[string]int   // NormalizeDomain(managedDomain) -> first entry listing it
}

// New indexes ps (copied; later changes to ps do not affect the Directory).
// Each entry is found by the SHA-1 and SHA-256 of every certificate it
// carries and by every certificate hash it lists (values NormalizeHash
// rejects are ignored: use ParseLDIF or Provider.Validate to reject them),
// and by each of its managed domains. When several entries list the same
// domain, the first one answers ByDomain.
func New(ps []Provider) *Directory {
	d := &Directory{
		providers: make([]Provider, len(ps)),
		byHash:    make(map[string][]int),
		byDomain:  make(map[string]int),
	}
	for i, p := range ps {
		p = clone(p)
		d.providers[i] = p
		keys := map[string]bool{}
		for _, c := range p.Certificates {
			if c == nil {
				continue
			}
			k1, k256 := certKeys(c)
			keys[k1], keys[k256] = true, true
		}
		for _, h := range p.CertificateHash {
			if k, err := NormalizeHash(h); err == nil {
				keys[k] = true
			}
		}
		for k := range keys {
			d.byHash[k] = append(d.byHash[k], i)
		}
		for _, dom := range p.ManagedDomains {
			n := NormalizeDomain(dom)
			if _, ok := d.byDomain[n]; !ok && n != "" {
				d.byDomain[n] = i
			}
		}
	}
	for k, v := range d.byHash {
		slices.Sort(v)
		d.byHash[k] = v
	}
	return d
}

func clone(p Provider) Provider {
	p.Certificates = slices.Clone(p.Certificates)
	p.CertificateHash = slices.Clone(p.CertificateHash)
	p.ManagedDomains = slices.Clone(p.ManagedDomains)
	p.Description = slices.Clone(p.Description)
	return p
}

// Len is the number of providers (entries, main and secondary
// environments).
func (d *Directory) Len() int { return len(d.providers) }

// Providers returns a copy of the providers, in the order given to New.
func (d *Directory) Providers() []Provider {
	out := make([]Provider, len(d.providers))
	for i, p := range d.providers {
		out[i] = clone(p)
	}
	return out
}

// candidates are the entries cert belongs to: found by its SHA-1 or SHA-256
// and, when the entry carries certificates, carrying this very one (so a
// SHA-1 collision does not pass).
func (d *Directory) candidates(cert *x509.Certificate) []int {
	if cert == nil || len(cert.Raw) == 0 {
		return nil
	}
	k1, k256 := certKeys(cert)
	var out []int
	for _, i := range append(slices.Clone(d.byHash[k1]), d.byHash[k256]...) {
		if slices.Contains(out, i) {
			continue
		}
		p := &d.providers[i]
		if len(p.Certificates) > 0 && !slices.ContainsFunc(p.Certificates, func(c *x509.Certificate) bool {
			return c != nil && bytes.Equal(c.Raw, cert.Raw)
		}) {
			continue
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// pick prefers a main environment (no providerUnit) among entries.
func (d *Directory) pick(idx []int) (Provider, bool) {
	if len(idx) == 0 {
		return Provider{}, false
	}
	for _, i := range idx {
		if d.providers[i].Unit == "" {
			return clone(d.providers[i]), true
		}
	}
	return clone(d.providers[idx[0]]), true
}

// ByCertificate finds the provider whose certificate cert is: by the SHA-1
// of its DER (RFC 6109 §2.2.2), or its SHA-256 when the entry lists that;
// when the entry carries its certificates, cert must be one of them. When
// main and secondary environments share the certificate, the main one is
// returned (see Match to choose by From domain).
func (d *Directory) ByCertificate(cert *x509.Certificate) (Provider, bool) {
	return d.pick(d.candidates(cert))
}

// ByHash finds a provider by a certificate hash in any form NormalizeHash
// accepts (such as the hex SHA-1 a signature verifier reports).
func (d *Directory) ByHash(hash string) (Provider, bool) {
	k, err := NormalizeHash(hash)
	if err != nil {
		return Provider{}, false
	}
	return d.pick(d.byHash[k])
}

// domainOf accepts a domain or an address (the part after the last '@').
func domainOf(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	return NormalizeDomain(s)
}

// ByDomain finds the provider managing domain (case-insensitive, a
// trailing dot ignored; an address is taken by its domain). Only exact
// domains match: a subdomain of a managed domain is not managed.
func (d *Directory) ByDomain(domain string) (Provider, bool) {
	i, ok := d.byDomain[domainOf(domain)]
	if !ok {
		return Provider{}, false
	}
	return clone(d.providers[i]), true
}

// IsPEC reports whether domain is a PEC domain, that is listed among the
// managedDomains of some provider (RFC 6109 §2.2.1). The caller adds its
// own domains.
func (d *Directory) IsPEC(domain string) bool {
	_, ok := d.byDomain[domainOf(domain)]
	return ok
}

// Match is the reception point's origin check (RFC 6109 §2.2.2, §7)
// returning the entry that passes it: cert must be a provider's (see
// ByCertificate) and fromDomain (the From domain of the message, or its
// address) among that entry's managedDomains. When the certificate belongs
// to several entries (main and secondary environments), the one managing
// fromDomain is returned: its MailReceipt is where the presa in carico goes.
// It does not check the certificate's chain or validity period.
func (d *Directory) Match(cert *x509.Certificate, fromDomain string) (Provider, error) {
	if cert == nil || len(cert.Raw) == 0 {
		return Provider{}, ErrNoCertificate
	}
	idx := d.candidates(cert)
	if len(idx) == 0 {
		return Provider{}, fmt.Errorf("%w: %s, SHA-1 %s, is not the certificate of any of the %d providers",
			ErrUnknownProvider, certName(cert), SHA1Hex(cert), len(d.providers))
	}
	dom := domainOf(fromDomain)
	if dom == "" {
		return Provider{}, fmt.Errorf("%w: empty From domain (signer %s)", ErrDomainNotManaged, d.providers[idx[0]].Name)
	}
	for _, i := range idx {
		for _, m := range d.providers[i].ManagedDomains {
			if NormalizeDomain(m) == dom {
				return clone(d.providers[i]), nil
			}
		}
	}
	var names []string
	for _, i := range idx {
		n := fmt.Sprintf("%q", d.providers[i].Name)
		if d.providers[i].Unit != "" {
			n += fmt.Sprintf(" (unit %q)", d.providers[i].Unit)
		}
		names = append(names, n)
	}
	msg := fmt.Sprintf("%q is not among the managedDomains of %s, whose certificate (%s) signed the message",
		dom, strings.Join(names, ", "), certName(cert))
	if other, ok := d.ByDomain(dom); ok {
		msg += fmt.Sprintf("; %q is managed by %q", dom, other.Name)
	} else {
		msg += fmt.Sprintf("; no provider manages %q", dom)
	}
	return Provider{}, fmt.Errorf("%w: %s", ErrDomainNotManaged, msg)
}

// Verify is Match without the entry: nil when cert is a known provider's
// and fromDomain among its managedDomains; otherwise an error wrapping
// ErrNoCertificate, ErrUnknownProvider or ErrDomainNotManaged that says
// which, with the certificate's SHA-1 and the domains involved.
func (d *Directory) Verify(cert *x509.Certificate, fromDomain string) error {
	_, err := d.Match(cert, fromDomain)
	return err
}
