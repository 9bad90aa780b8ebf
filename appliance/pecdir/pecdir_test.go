package pecdir

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCert is a gestore certificate as PEC.md §2.1 profiles it: RSA 2048,
// the service address as rfc822Name.
func testCert(t testing.TB, org, mail string) *x509.Certificate {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        pkix.Name{Country: []string{"IT"}, Organization: []string{org}, CommonName: "Posta Certificata " + org},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(3 * 365 * 24 * time.Hour),
		EmailAddresses: []string{mail},
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	certsOnce sync.Once
	certA     *x509.Certificate // gestore A
	certA2    *x509.Certificate // gestore A's renewal
	certB     *x509.Certificate // gestore B
	certX     *x509.Certificate // nobody's
)

func certs(t testing.TB) {
	certsOnce.Do(func() {
		certA = testCert(t, "Gestore A S.p.A.", "posta-certificata@pec.a.test")
		certA2 = testCert(t, "Gestore A S.p.A.", "posta-certificata@pec.a.test")
		certB = testCert(t, "Società B S.r.l.", "posta-certificata@pec.b.test")
		certX = testCert(t, "Intruso S.p.A.", "posta-certificata@evil.test")
	})
}

func sha256Hex(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

func colonHex(h string) string {
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func testProviders(t testing.TB) []Provider {
	certs(t)
	return []Provider{
		{
			Name:            "Gestore A S.p.A.",
			ShortName:       "GestA",
			Certificates:    []*x509.Certificate{certA, certA2},
			CertificateHash: []string{SHA1Hex(certA), "SHA1#" + colonHex(SHA1Hex(certA2)), sha256Hex(certA2)},
			MailReceipt:     "posta-certificata@pec.a.test",
			ManagedDomains:  []string{"a.test", "PEC.A.test", "legale.a.test."},
			LDIFLocationURL: "https://pec.a.test/indice/a.ldif.p7m",
			Description:     []string{"Posta certificata per le imprese", " leading space", "trailing space ", ":colon", "<angle", ""},
		},
		{
			Name:            "Gestore A S.p.A.",
			Unit:            "Ambiente secondario, interno",
			Certificates:    []*x509.Certificate{certA},
			CertificateHash: []string{strings.ToLower(SHA1Hex(certA))},
			MailReceipt:     "servizio@interno.a.test",
			ManagedDomains:  []string{"interno.a.test"},
		},
		{
			Name:            "Società B S.r.l. — \"posta\" <certificata>; a+b=c, #1",
			Certificates:    []*x509.Certificate{certB},
			CertificateHash: []string{SHA1Hex(certB)},
			MailReceipt:     "posta-certificata@pec.b.test",
			ManagedDomains:  []string{"b.test"},
			Description:     []string{"Servizi di posta certificata già attivi, àèìòù €"},
		},
		{
			// An entry with hashes only (no certificate attribute).
			Name:            "Solo Hash S.p.A.",
			CertificateHash: []string{"sha256:" + sha256Hex(certX)},
			MailReceipt:     "ricevute@hash.test",
			ManagedDomains:  []string{"hash.test"},
		},
	}
}

func equalProviders(t *testing.T, got, want []Provider) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d providers, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if len(g.Certificates) != len(w.Certificates) {
			t.Fatalf("provider %d: %d certificates, want %d", i, len(g.Certificates), len(w.Certificates))
		}
		for j := range w.Certificates {
			if !bytes.Equal(g.Certificates[j].Raw, w.Certificates[j].Raw) {
				t.Errorf("provider %d: certificate %d differs", i, j)
			}
		}
		g.Certificates, w.Certificates = nil, nil
		if !equalStrings(g.CertificateHash, w.CertificateHash) || !equalStrings(g.ManagedDomains, w.ManagedDomains) ||
			!equalStrings(g.Description, w.Description) || g.Name != w.Name || g.Unit != w.Unit || g.ShortName != w.ShortName ||
			g.MailReceipt != w.MailReceipt || g.LDIFLocationURL != w.LDIFLocationURL {
			t.Errorf("provider %d:\n got %#v\nwant %#v", i, g, w)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	ps := testProviders(t)
	var buf bytes.Buffer
	if err := WriteLDIF(&buf, ps); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if len(l) > LineWidth {
			t.Errorf("line %d is %d bytes long: %q", i+1, len(l), l)
		}
		for _, c := range []byte(l) {
			if c >= 0x80 || c < 0x20 {
				t.Errorf("line %d has byte %#x", i+1, c)
			}
		}
	}
	for _, want := range []string{
		"version: 1\n",
		"dn: providerName=Gestore A S.p.A.,o=postacert\n",
		"dn: providerUnit=Ambiente secondario\\, interno,providerName=Gestore A S.p.A.,o=postacert\n",
		"objectClass: provider\n",
		"providerCertificate;binary:: MII",
		"mailReceipt: posta-certificata@pec.a.test\n",
		"managedDomains: legale.a.test.\n",
		"description:: IGxlYWRpbmcgc3BhY2U=\n", // " leading space"
	} {
		if !strings.Contains(strings.ReplaceAll(out, "\n ", ""), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	got, err := ParseLDIF(strings.NewReader(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	equalProviders(t, got, ps)

	// Writing what was read gives the same bytes.
	var again bytes.Buffer
	if err := WriteLDIF(&again, got); err != nil {
		t.Fatal(err)
	}
	if again.String() != out {
		t.Errorf("second write differs")
	}
	// CRLF line ends read the same.
	got, err = ParseLDIF(strings.NewReader(strings.ReplaceAll(out, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	equalProviders(t, got, ps)
}

func TestWriteRejectsInvalid(t *testing.T) {
	ps := testProviders(t)
	for name, mod := range map[string]func(p *Provider){
		"no name":        func(p *Provider) { p.Name = "" },
		"no mailReceipt": func(p *Provider) { p.MailReceipt = "" },
		"bad mail":       func(p *Provider) { p.MailReceipt = "a b@c" },
		"no domains":     func(p *Provider) { p.ManagedDomains = nil },
		"bad domain":     func(p *Provider) { p.ManagedDomains = []string{"a..test"} },
		"hash mismatch":  func(p *Provider) { p.CertificateHash = []string{SHA1Hex(certB)} },
		"cert no hash":   func(p *Provider) { p.CertificateHash = p.CertificateHash[:1] },
		"bad hash":       func(p *Provider) { p.CertificateHash = []string{"xyz"} },
		"control char":   func(p *Provider) { p.Description = []string{"a\nb"} },
		"invalid utf8":   func(p *Provider) { p.Name = "\xff" },
		"nothing":        func(p *Provider) { p.Certificates, p.CertificateHash = nil, nil },
	} {
		p := ps[0]
		mod(&p)
		var buf bytes.Buffer
		if err := WriteLDIF(&buf, []Provider{p}); err == nil {
			t.Errorf("%s: WriteLDIF accepted %#v", name, p)
		} else if buf.Len() != 0 {
			t.Errorf("%s: wrote %d bytes before failing", name, buf.Len())
		}
	}
}

func parseTestdata(t *testing.T) []Provider {
	t.Helper()
	f, err := os.Open("testdata/indice.ldif")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps, err := ParseLDIF(f)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestParseRFCStyle(t *testing.T) {
	ps := parseTestdata(t)
	if len(ps) != 3 {
		t.Fatalf("got %d providers, want 3 (the root entry is not one)", len(ps))
	}
	a, unit, b := ps[0], ps[1], ps[2]
	if a.Name != "Posta Anonima Certificata S.p.A." || a.Unit != "" || a.MailReceipt != "ssacceptance@postalser.example.com" ||
		a.LDIFLocationURL != "https://anpocert.example.com/anpocert.ldif.p7m" || len(a.Certificates) != 1 ||
		!equalStrings(a.CertificateHash, []string{"A1C57BCDD4AC505E995F8CB4D9CFBA6F47F0866F"}) ||
		!equalStrings(a.ManagedDomains, []string{"mail.anpocert.example.com", "cert.company.example.com", "COSTMEC.example.com"}) ||
		!equalStrings(a.Description, []string{"Certified mail services for companies"}) {
		t.Errorf("first provider: %#v", a)
	}
	if got := a.Certificates[0].EmailAddresses; len(got) != 1 || got[0] != "posta-certificata@anpocert.example.com" {
		t.Errorf("certificate rfc822Name %v", got)
	}
	if unit.Unit != "Ambiente Secondario" || unit.Name != a.Name || !bytes.Equal(unit.Certificates[0].Raw, a.Certificates[0].Raw) ||
		unit.CertificateHash[0] != "SHA1#A1:C5:7B:CD:D4:AC:50:5E:99:5F:8C:B4:D9:CF:BA:6F:47:F0:86:6F" || unit.LDIFLocationURL != "" {
		t.Errorf("secondary environment: %#v", unit)
	}
	if b.ShortName != "ServPost" || len(b.CertificateHash) != 2 || b.MailReceipt != "takecharge@postalser.example.com" ||
		!equalStrings(b.Description, []string{"Posta certificata per la pubblica amministrazione, già attiva dal 2025"}) {
		t.Errorf("second provider: %#v", b)
	}
	if SHA1Hex(b.Certificates[0]) != "9E6FF2D58716890D2630B2928EF094453BBDFE1C" {
		t.Errorf("second certificate SHA-1 %s", SHA1Hex(b.Certificates[0]))
	}
}

func TestLookups(t *testing.T) {
	ps := parseTestdata(t)
	d := New(ps)
	certs(t)
	if d.Len() != 3 {
		t.Fatalf("Len %d", d.Len())
	}
	p, ok := d.ByCertificate(ps[0].Certificates[0])
	if !ok || p.Unit != "" || p.Name != "Posta Anonima Certificata S.p.A." {
		t.Errorf("ByCertificate(A) = %q unit %q, %v; want the main environment", p.Name, p.Unit, ok)
	}
	// A parsed copy of the same certificate (another pointer) is found too.
	again, _ := x509.ParseCertificate(ps[2].Certificates[0].Raw)
	if p, ok := d.ByCertificate(again); !ok || p.ShortName != "ServPost" {
		t.Errorf("ByCertificate(B) = %q, %v", p.Name, ok)
	}
	if _, ok := d.ByCertificate(certX); ok {
		t.Error("unknown certificate found")
	}
	if _, ok := d.ByCertificate(nil); ok {
		t.Error("nil certificate found")
	}
	for _, h := range []string{"a1c57bcdd4ac505e995f8cb4d9cfba6f47f0866f", "SHA1#A1:C5:7B:CD:D4:AC:50:5E:99:5F:8C:B4:D9:CF:BA:6F:47:F0:86:6F"} {
		if p, ok := d.ByHash(h); !ok || p.Unit != "" || p.Name != ps[0].Name {
			t.Errorf("ByHash(%s) = %q, %v", h, p.Name, ok)
		}
	}
	for dom, want := range map[string]string{
		"costmec.example.com":              "Posta Anonima Certificata S.p.A.",
		"COSTMEC.EXAMPLE.COM.":             "Posta Anonima Certificata S.p.A.",
		"Personnel.Anpocert.Example.Com":   "Posta Anonima Certificata S.p.A.",
		"receivedmail.example.com":         "Servizi Postali S.r.l.", // listed with a trailing dot
		"user@postal-services.example.com": "Servizi Postali S.r.l.",
		"sub.costmec.example.com":          "",
		"example.com":                      "",
		"":                                 "",
	} {
		p, ok := d.ByDomain(dom)
		if ok != (want != "") || p.Name != want {
			t.Errorf("ByDomain(%q) = %q, %v; want %q", dom, p.Name, ok, want)
		}
		if d.IsPEC(dom) != (want != "") {
			t.Errorf("IsPEC(%q) = %v", dom, !(want != ""))
		}
	}
	if p, _ := d.ByDomain("personnel.anpocert.example.com"); p.Unit != "Ambiente Secondario" {
		t.Errorf("ByDomain of a secondary environment's domain gave unit %q", p.Unit)
	}
}

func TestDirectoryImmutable(t *testing.T) {
	ps := testProviders(t)
	d := New(ps)
	ps[0].ManagedDomains[0] = "changed.test"
	ps[0].Name = "changed"
	if !d.IsPEC("a.test") || d.IsPEC("changed.test") {
		t.Error("the directory changed with its input")
	}
	p, _ := d.ByDomain("a.test")
	p.ManagedDomains[0] = "x.test"
	if q, _ := d.ByDomain("a.test"); q.ManagedDomains[0] != "a.test" || q.Name != "Gestore A S.p.A." {
		t.Error("the directory changed through a returned provider")
	}
	all := d.Providers()
	all[0].ManagedDomains[0] = "y.test"
	if !d.IsPEC("a.test") {
		t.Error("the directory changed through Providers")
	}
}

func TestVerify(t *testing.T) {
	ps := testProviders(t)
	d := New(ps)

	// Accepted: either certificate of A (the renewal too), any domain of its
	// main environment.
	for _, c := range []*x509.Certificate{certA, certA2} {
		for _, dom := range []string{"a.test", "pec.a.test", "A.TEST.", "legale.a.test", "mario.rossi@a.test"} {
			if err := d.Verify(c, dom); err != nil {
				t.Errorf("Verify(%s, %q): %v", c.EmailAddresses[0], dom, err)
			}
		}
	}
	// The secondary environment shares certA: Match picks it by domain, so
	// the presa in carico goes to its mailReceipt.
	p, err := d.Match(certA, "interno.a.test")
	if err != nil || p.Unit == "" || p.MailReceipt != "servizio@interno.a.test" {
		t.Errorf("Match(certA, interno.a.test) = %q %q, %v", p.Unit, p.MailReceipt, err)
	}
	// certA2 is not the secondary environment's: its domain is not A2's.
	if err := d.Verify(certA2, "interno.a.test"); !errors.Is(err, ErrDomainNotManaged) {
		t.Errorf("Verify(certA2, interno.a.test) = %v", err)
	}
	if p, err := d.Match(certB, "b.test"); err != nil || p.MailReceipt != "posta-certificata@pec.b.test" {
		t.Errorf("Match(certB, b.test) = %q, %v", p.MailReceipt, err)
	}
	// Hash-only entry (SHA-256): found by the certificate's hash.
	if err := d.Verify(certX, "hash.test"); err != nil {
		t.Errorf("Verify by SHA-256 only: %v", err)
	}

	// Rejected: B's certificate claiming A's domain.
	err = d.Verify(certB, "a.test")
	if !errors.Is(err, ErrDomainNotManaged) || !strings.Contains(err.Error(), `"a.test"`) ||
		!strings.Contains(err.Error(), `managed by "Gestore A S.p.A."`) {
		t.Errorf("Verify(certB, a.test) = %v", err)
	}
	t.Logf("domain mismatch: %v", err)
	if err := d.Verify(certB, "nowhere.test"); !errors.Is(err, ErrDomainNotManaged) || !strings.Contains(err.Error(), "no provider manages") {
		t.Errorf("Verify(certB, nowhere.test) = %v", err)
	}
	if err := d.Verify(certB, ""); !errors.Is(err, ErrDomainNotManaged) {
		t.Errorf("Verify(certB, \"\") = %v", err)
	}
	// Unknown certificate.
	stranger := testCert(t, "Sconosciuto S.p.A.", "posta-certificata@x.test")
	err = d.Verify(stranger, "a.test")
	if !errors.Is(err, ErrUnknownProvider) || !strings.Contains(err.Error(), SHA1Hex(stranger)) {
		t.Errorf("Verify(stranger) = %v", err)
	}
	t.Logf("unknown: %v", err)
	if err := d.Verify(nil, "a.test"); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("Verify(nil) = %v", err)
	}
	// An entry that carries its certificates is not matched by hash alone:
	// a directory listing A's SHA-1 with B's certificate (which Validate
	// would refuse) does not let A's certificate through.
	forged := New([]Provider{{Name: "F", Certificates: []*x509.Certificate{certB}, CertificateHash: []string{SHA1Hex(certA)},
		MailReceipt: "f@f.test", ManagedDomains: []string{"f.test"}}})
	if err := forged.Verify(certA, "f.test"); !errors.Is(err, ErrUnknownProvider) {
		t.Errorf("hash without the certificate: %v", err)
	}
}

func TestNormalizeHash(t *testing.T) {
	const h = "a1c57bcdd4ac505e995f8cb4d9cfba6f47f0866f"
	const s = "038d6c3bdfe42161a22eaf2d917518ac162ccc648202453b75de86b92e727512"
	for in, want := range map[string]string{
		h:                              "sha1:" + h,
		strings.ToUpper(h):             "sha1:" + h,
		"SHA1#" + colonHex(h):          "sha1:" + h,
		"sha-1:" + h:                   "sha1:" + h,
		" " + colonHex(h) + " ":        "sha1:" + h,
		s:                              "sha256:" + s,
		"SHA256#" + strings.ToUpper(s): "sha256:" + s,
		"sha-256:" + s:                 "sha256:" + s,
	} {
		got, err := NormalizeHash(in)
		if err != nil || got != want {
			t.Errorf("NormalizeHash(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "SHA1#" + s, "SHA256#" + h, "MD5#" + h, h + "g", h[:39]} {
		if got, err := NormalizeHash(in); err == nil {
			t.Errorf("NormalizeHash(%q) = %q, want an error", in, got)
		}
	}
}

// entry is a valid provider entry in LDIF, for the malformed cases.
func entry(t *testing.T) string {
	certs(t)
	return "dn: providerName=A,o=postacert\n" +
		"objectClass: provider\n" +
		"providerName: A\n" +
		"providerCertificateHash: " + SHA1Hex(certA) + "\n" +
		"providerCertificate;binary:: " + base64.StdEncoding.EncodeToString(certA.Raw) + "\n" +
		"mailReceipt: r@a.test\n" +
		"managedDomains: a.test\n"
}

func TestParseMalformed(t *testing.T) {
	good := entry(t)
	if ps, err := ParseLDIF(strings.NewReader(good)); err != nil || len(ps) != 1 {
		t.Fatalf("valid entry: %d, %v", len(ps), err)
	}
	huge := "dn: providerName=A,o=postacert\ndescription: " + strings.Repeat("x", MaxLineBytes+10) + "\n"
	hugeFolded := "dn: providerName=A,o=postacert\ndescription: x\n" + strings.Repeat(" "+strings.Repeat("y", 1000)+"\n", MaxLineBytes/1000+2)
	cases := []struct {
		name, in string
		line     int
		msg      string
	}{
		{"bad base64", "version: 1\n\n" + strings.Replace(good, "binary:: MII", "binary:: M!I", 1), 7, "bad base64"},
		{"truncated base64", strings.Replace(good, "binary:: MII", "binary:: MI", 1), 5, "bad base64"},
		{"continuation first", " providerName: A\n" + good, 1, "continuation line"},
		{"continuation after blank", good + "\n continued\n", 9, "continuation line"},
		{"missing dn", "# comment\nobjectClass: provider\nproviderName: A\n", 2, `does not start with "dn:"`},
		{"missing dn second entry", good + "\nproviderName: B\nmailReceipt: b@b.test\n", 9, `does not start with "dn:"`},
		{"huge line", huge, 2, "longer than"},
		{"huge folded line", hugeFolded, 2, "longer than"},
		{"no colon", "dn: x\nproviderName A\n", 2, "not of the form"},
		{"bad attribute name", "dn: x\nprovider Name: A\n", 2, "not allowed"},
		{"url value", "dn: x\ndescription:< file:///etc/passwd\n", 2, "URL"},
		{"change record", "dn: x\nchangetype: delete\n", 2, "change records"},
		{"bad version", "version: 2\n\n" + good, 1, "version"},
		{"two names", strings.Replace(good, "providerName: A\n", "providerName: A\nproviderName: B\n", 1), 4, "single-valued"},
		{"certificate not DER", strings.Replace(good, base64.StdEncoding.EncodeToString(certA.Raw), "AAAA", 1), 5, "not a DER"},
		{"certificate not base64", strings.Replace(good, "binary:: MII", "binary: MII", 1), 5, "must be base64"},
		{"hash mismatch", strings.Replace(good, SHA1Hex(certA), SHA1Hex(certB), 1), 1, "matches none"},
		{"hash not hex", strings.Replace(good, SHA1Hex(certA), "nothex", 1), 1, "providerCertificateHash"},
		{"no mailReceipt", strings.Replace(good, "mailReceipt: r@a.test\n", "", 1), 1, "missing mailReceipt"},
		{"bad mailReceipt", strings.Replace(good, "r@a.test", "r@@a.test", 1), 1, "mailReceipt"},
		{"no domains", strings.Replace(good, "managedDomains: a.test\n", "", 1), 1, "missing managedDomains"},
		{"bad domain", strings.Replace(good, "managedDomains: a.test", "managedDomains: a_b c.test", 1), 1, "domain"},
		{"invalid utf8", strings.Replace(good, "providerName: A", "providerName: \xff", 1), 3, "UTF-8"},
		{"base64 invalid utf8", strings.Replace(good, "providerName: A", "providerName:: /w==", 1), 3, "UTF-8"},
		{"NUL in value", strings.Replace(good, "providerName: A", "providerName: A\x00", 1), 3, "character"},
		{"second entry bad", good + "\n" + strings.Replace(good, "r@a.test", "bad", 1), 9, "mailReceipt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, err := ParseLDIF(strings.NewReader(c.in))
			if err == nil {
				t.Fatalf("accepted: %d providers", len(ps))
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v, want *ParseError", err, err)
			}
			if pe.Line != c.line || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v (line %d); want line %d and %q", err, pe.Line, c.line, c.msg)
			}
			if !strings.Contains(err.Error(), "line ") || len(err.Error()) > 2000 {
				t.Errorf("error message: %.300s", err)
			}
			if ps != nil {
				t.Errorf("returned providers with an error")
			}
		})
	}
}

func TestParseLenient(t *testing.T) {
	good := entry(t)
	for name, in := range map[string]string{
		"empty":                "",
		"only comments":        "# nothing\n#  folded\n  comment\n",
		"only version":         "version: 1\n",
		"version then dn":      "version: 1\n" + good,
		"no trailing newline":  strings.TrimSuffix(good, "\n"),
		"blank lines around":   "\n\n" + good + "\n\n\n",
		"comment inside entry": strings.Replace(good, "mailReceipt", "# a comment\n  folded comment\nmailReceipt", 1),
		"dn without blank":     good + good,
		"no objectClass":       strings.Replace(good, "objectClass: provider\n", "", 1),
		"unknown attributes":   strings.Replace(good, "mailReceipt", "x-other;lang-it:: AAEC\nmailReceipt", 1),
		"attribute case":       strings.ToUpper(good[:3]) + strings.ReplaceAll(good[3:], "managedDomains", "MANAGEDDOMAINS"),
	} {
		ps, err := ParseLDIF(strings.NewReader(in))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, p := range ps {
			if p.Name != "A" || p.MailReceipt != "r@a.test" || len(p.ManagedDomains) != 1 {
				t.Errorf("%s: %#v", name, p)
			}
		}
	}
	// Non-provider entries are skipped.
	ps, err := ParseLDIF(strings.NewReader("dn: o=postacert\nobjectClass: organization\no: postacert\n\n" + good))
	if err != nil || len(ps) != 1 {
		t.Errorf("root entry: %d, %v", len(ps), err)
	}
}
