package pecdir

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSeeds are the inputs FuzzParseLDIF starts from (besides the committed
// corpus in testdata/fuzz/FuzzParseLDIF, written from them by
// TestWriteFuzzCorpus).
func fuzzSeeds(t testing.TB) [][]byte {
	ps := testProviders(t)
	var w bytes.Buffer
	if err := WriteLDIF(&w, ps[2:]); err != nil {
		t.Fatal(err)
	}
	good := "dn: providerName=A,o=postacert\nobjectClass: provider\nproviderName: A\n" +
		"providerCertificateHash: SHA256#038d6c3bdfe42161a22eaf2d917518ac162ccc648202453b75de86b92e727512\n" +
		"mailReceipt: r@a.test\nmanagedDomains: a.test\nmanagedDomains: b.test.\n"
	return [][]byte{
		w.Bytes(),
		[]byte(good),
		[]byte("version: 1\n\n# comment\n  folded\n" + good + good),
		[]byte("dn: o=postacert\nobjectclass: top\nLDIFLocationURL: https://x.test/a.p7m\n\n" + good),
		[]byte(strings.ReplaceAll(good, "\n", "\r\n")),
		[]byte("dn:: cHJvdmlkZXJOYW1lPUEsbz1wb3N0YWNlcnQ=\nproviderName:: QQ==\nproviderCertificateHash:\n A1C57BCDD4AC505E995F8CB4D9CFBA6F47F0866F\nmailReceipt: r@a.test\nmanagedDomains: a.test\n"),
		[]byte(" continued\n"),
		[]byte("dn: x\nproviderCertificate;binary:: MII=\n"),
	}
}

// FuzzParseLDIF: ParseLDIF never panics; whatever it accepts WriteLDIF
// writes, and reading that back gives the same providers and, written
// again, the same bytes.
func FuzzParseLDIF(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ps, err := ParseLDIF(bytes.NewReader(in))
		if err != nil {
			if ps != nil {
				t.Fatal("providers returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "ldif: line ") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		var w bytes.Buffer
		if err := WriteLDIF(&w, ps); err != nil {
			t.Fatalf("WriteLDIF of parsed providers: %v", err)
		}
		ps2, err := ParseLDIF(bytes.NewReader(w.Bytes()))
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, w.Bytes())
		}
		equalProviders(t, ps2, ps)
		var w2 bytes.Buffer
		if err := WriteLDIF(&w2, ps2); err != nil || !bytes.Equal(w.Bytes(), w2.Bytes()) {
			t.Fatalf("second write differs (%v)", err)
		}
		d := New(ps)
		for _, p := range ps {
			for _, dom := range p.ManagedDomains {
				if !d.IsPEC(dom) {
					t.Fatalf("IsPEC(%q) false", dom)
				}
			}
			for _, c := range p.Certificates {
				if err := d.Verify(c, p.ManagedDomains[0]); err != nil {
					t.Fatalf("Verify own certificate: %v", err)
				}
			}
		}
	})
}

// TestWriteFuzzCorpus writes the seed corpus to testdata/fuzz/FuzzParseLDIF
// when PECDIR_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("PECDIR_WRITE_CORPUS") != "1" {
		t.Skip("set PECDIR_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzParseLDIF")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseLDIF")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
