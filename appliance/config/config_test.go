package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sigillo.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTheIssueExampleLoads(t *testing.T) {
	cfg, err := Load(write(t, `
hostname = "mail.example.test"
data_dir = "/var/lib/sigillo"
max_message_bytes = 31457280
[listen]
smtp = ":25"
submission = ":587"
submissions = ":465"
imap = ":143"
imaps = ":993"
pop3 = ""
pop3s = ":995"
https = ":443"
[routes]
"example.org" = "127.0.0.1:2526"
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "mail.example.test" || cfg.Listen.POP3 != "" || cfg.Routes["example.org"] != "127.0.0.1:2526" {
		t.Fatalf("%+v", cfg)
	}
}

func TestMistakesAreOneClearError(t *testing.T) {
	for text, want := range map[string]string{
		`hostnme = "x"`:                     "unknown key hostnme",
		`max_message_bytes = -1`:            "max_message_bytes",
		`max_inflight_bytes = -1`:           "max_inflight_bytes",
		"[listen]\nsmtp = \"25\"":           "listen.smtp",
		"[routes]\n\"a.test\" = \"nohost\"": "routes",
		`hostname = `:                       "config",
	} {
		_, err := Load(write(t, text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

// The README's configuration block is what users copy: it must load.
func TestTheREADMEExampleLoads(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "```toml\n")
	if start < 0 {
		t.Fatal("README has no toml block")
	}
	text = text[start+len("```toml\n"):]
	block := text[:strings.Index(text, "```")]
	cfg, err := Load(write(t, block))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	if cfg.MaxConnectionsPerHost != 50 || cfg.Listen.IMAPS != ":993" || cfg.MinFree() != 31457280*3/2 {
		t.Fatalf("README example read as %+v", cfg)
	}
}

// The keys a file sets are told from the defaults: a file that gives a
// default's value still gives it.
func TestGivenAreTheFilesKeys(t *testing.T) {
	cfg, err := Load(write(t, `
hostname = "mail.example.test"
max_message_bytes = 31457280
[pec]
provider_name = "Example PEC"
[routes]
"example.org" = "127.0.0.1:2526"
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hostname", "max_message_bytes", "pec", "pec.provider_name", "routes"} {
		if !cfg.Gives(k) {
			t.Errorf("%s: not given", k)
		}
	}
	for _, k := range []string{"postmaster", "pec.max_total_bytes", "scan", "data_dir"} {
		if cfg.Gives(k) {
			t.Errorf("%s: given, and the file does not set it", k)
		}
	}
	if def, _ := Load(""); def.Gives("hostname") {
		t.Error("the embedded default gives keys")
	}
}
