// Package idn turns the internationalised domain names an administrator
// types (bücher.example) into the ASCII form Sigillo stores and mail
// travels with (xn--bcher-kva.example, RFC 5890's A-label), and back for
// display. It converts names only: whether a domain is hosted, and what
// SMTP accepts, is decided elsewhere. Local parts stay ASCII: Sigillo does
// not speak SMTPUTF8.
package idn

import (
	"fmt"
	"strings"

	"golang.org/x/net/idna"
)

// Domain returns the ASCII form of a domain name: lowercased, without a
// trailing dot, with every Unicode label converted to its xn-- form
// (UTS #46 mapping, as browsers and resolvers do on lookup). A name that
// is already ASCII is only lowercased; with strict set its xn-- labels
// are checked too (a name being added; one being removed or listed is
// taken as it was stored).
func Domain(name string, strict bool) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(name), ".")
	if isASCII(d) && (!strict || !strings.Contains(strings.ToLower(d), "xn--")) {
		return strings.ToLower(d), nil
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("domain %q is not a valid internationalised name: %v", name, err)
	}
	return strings.ToLower(a), nil
}

// Address returns an address with its domain in ASCII form (see Domain).
// A local part with non-ASCII characters is refused with the reason.
func Address(addr string, strict bool) (string, error) {
	a := strings.TrimSpace(addr)
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return a, nil // not an address: the caller's check says so
	}
	local, domain := a[:i], a[i+1:]
	if !isASCII(local) {
		return "", fmt.Errorf("address %q: the part before @ must be ASCII (internationalised local parts need SMTPUTF8, which Sigillo does not support)", addr)
	}
	d, err := Domain(domain, strict)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	return local + "@" + d, nil
}

// Unicode returns the Unicode form of an ASCII domain name or address, or
// "" when it has no xn-- label (or an invalid one): what to show beside
// the stored form.
func Unicode(name string) string {
	local, domain := "", name
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		local, domain = name[:i+1], name[i+1:]
	}
	if !strings.Contains(strings.ToLower(domain), "xn--") {
		return ""
	}
	u, err := idna.Display.ToUnicode(domain)
	if err != nil || u == domain {
		return ""
	}
	return local + u
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
