package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSMTPPolicyKeys(t *testing.T) {
	cfg, err := Load(write(t, `
relay_networks = ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7", "10.1.2.3/8"]
max_rejected_recipients = 5
postmaster = "admin@example.test"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("10.0.0.0/8")}
	got := cfg.RelayPrefixes()
	if len(got) != len(want) {
		t.Fatalf("relay prefixes %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("relay prefix %d: %v, want %v", i, got[i], want[i])
		}
	}
	if cfg.MaxRejectedRecipients != 5 || cfg.Postmaster != "admin@example.test" {
		t.Errorf("read as %+v", cfg.SMTPPolicy)
	}

	def, err := Load(write(t, `hostname = "mx.example.test"`))
	if err != nil {
		t.Fatal(err)
	}
	if len(def.RelayPrefixes()) != 0 || def.MaxRejectedRecipients != 0 || def.Postmaster != "" {
		t.Errorf("defaults: %+v", def.SMTPPolicy)
	}

	for text, want := range map[string]string{
		`relay_networks = ["192.0.2.0/33"]`: "relay_networks",
		`relay_networks = ["example.test"]`: "relay_networks",
		`relay_networks = "192.0.2.0/24"`:   "relay_networks",
		`max_rejected_recipients = -1`:      "max_rejected_recipients",
		`postmaster = "admin"`:              "postmaster",
		`postmaster = "Admin <a@b.test>"`:   "postmaster",
		`relay_network = ["192.0.2.0/24"]`:  "unknown key relay_network",
		`max_rejected_recipient = 3`:        "unknown key max_rejected_recipient",
	} {
		_, err := Load(write(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, want)
		}
	}
}
