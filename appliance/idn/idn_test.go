package idn

import (
	"strings"
	"testing"
)

func TestDomainConvertsUnicodeLabels(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"example.test", "example.test"},
		{"Example.TEST.", "example.test"},
		{"bücher.test", "xn--bcher-kva.test"},
		{"BÜCHER.test", "xn--bcher-kva.test"},
		{"xn--bcher-kva.test", "xn--bcher-kva.test"},
		{"XN--BCHER-KVA.TEST", "xn--bcher-kva.test"},
		{"пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"},
		{"straße.de", "xn--strae-oqa.de"}, // non-transitional: ß kept, not ss
		{"例え.テスト", "xn--r8jz45g.xn--zckzah"},
	} {
		got, err := Domain(c.in, true)
		if err != nil || got != c.want {
			t.Errorf("Domain(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if u := Unicode(got); c.in != c.want && strings.Contains(c.want, "xn--") && u == "" {
			t.Errorf("Unicode(%q) is empty", got)
		}
	}
	if u := Unicode("xn--bcher-kva.test"); u != "bücher.test" {
		t.Errorf("Unicode = %q", u)
	}
	if u := Unicode("alice@xn--bcher-kva.test"); u != "alice@bücher.test" {
		t.Errorf("Unicode(address) = %q", u)
	}
	if u := Unicode("alice@example.test"); u != "" {
		t.Errorf("Unicode of an ASCII address = %q, want empty", u)
	}
}

func TestDomainRefusesWithTheReason(t *testing.T) {
	for _, in := range []string{"xn--zz.test", "bü cher.test", "-bücher.test", "bücher_x.test"} {
		if got, err := Domain(in, true); err == nil || !strings.Contains(err.Error(), "not a valid internationalised name") {
			t.Errorf("Domain(%q) = %q, %v; want a refusal", in, got, err)
		}
	}
	// Lenient: names as stored are passed through for remove and list.
	if got, err := Domain("xn--zz.test", false); err != nil || got != "xn--zz.test" {
		t.Errorf("lenient Domain = %q, %v", got, err)
	}
}

func TestAddressConvertsTheDomainOnly(t *testing.T) {
	if got, err := Address("Alice@Bücher.test", true); err != nil || got != "Alice@xn--bcher-kva.test" {
		t.Errorf("Address = %q, %v", got, err)
	}
	if _, err := Address("jörg@example.test", true); err == nil || !strings.Contains(err.Error(), "SMTPUTF8") {
		t.Errorf("a non-ASCII local part: %v", err)
	}
	if got, err := Address("no-at-sign", true); err != nil || got != "no-at-sign" {
		t.Errorf("Address without @ = %q, %v", got, err)
	}
}
