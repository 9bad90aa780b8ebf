package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/config"
	"sigillo/appliance/control"
	"sigillo/appliance/manage"
	"sigillo/appliance/settings"
	"sigillo/storage"
)

// node is a node's side of `sigillo settings`: its TOML file, and its
// control socket answered by manage on a real store, as `sigillo serve`
// answers it.
func settingsNode(t *testing.T, toml string) (configFile string, store *storage.Store, p *apptest.Proposer) {
	t.Helper()
	dir := t.TempDir()
	configFile = filepath.Join(dir, "sigillo.toml")
	if err := os.WriteFile(configFile, []byte("data_dir = \""+dir+"\"\n"+toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(configFile)
	if err != nil {
		t.Fatal(err)
	}
	store, err = storage.Open(filepath.Join(dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	p = apptest.NewProposer(store)
	ln, err := control.Listen(cfg.ControlSocket())
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Handler: control.Operations(&manage.Manager{Store: store, Proposer: p, Now: time.Now, TOML: cfg}),
		Logger: apptest.Logger(t)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return configFile, store, p
}

func runIn(args ...string) (stdout, stderr string, exit int) {
	var o, e bytes.Buffer
	exit = Main(append([]string{"sigillo"}, args...), strings.NewReader(""), &o, &e)
	return o.String(), e.String(), exit
}

// An operator lists the cluster-wide settings on a node whose TOML
// disagrees, changes one at runtime, and reads it back; a bad value and
// an unknown key are one line each and change nothing.
func TestSettingsListSetAndGetThroughTheSocket(t *testing.T) {
	file, store, p := settingsNode(t, `hostname = "mx2.example.it"
max_message_bytes = 31457280
[routes]
"example.org" = "10.0.0.6:25"
`)
	// The cluster was seeded by another node, with other values.
	bootstrap, err := config.Load(writeFile(t, "hostname = \"mx1.example.it\"\nmax_message_bytes = 52428800\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := settings.Seed(context.Background(), store, p, bootstrap); err != nil {
		t.Fatal(err)
	}

	out, stderr, exit := runIn("settings", "list", "--config", file)
	t.Logf("sigillo settings list:\n%s", out)
	if exit != 0 || stderr != "" {
		t.Fatalf("settings list: exit %d, %s", exit, stderr)
	}
	for _, want := range []string{
		"max_message_bytes        52428800",
		"cluster  ! this node's TOML: 31457280",
		"routes                                                     cluster  ! this node's TOML: example.org=10.0.0.6:25",
		"pec.service_address      posta-certificata@mx1.example.it",
		"!: this node's TOML gives another value",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("settings list does not show %q", want)
		}
	}

	out, stderr, exit = runIn("settings", "set", "max_message_bytes", "10M", "--config", file)
	if exit != 0 || out != "max_message_bytes = 10485760 for every node\n" || !strings.Contains(stderr, "this node's TOML says max_message_bytes = 31457280") {
		t.Errorf("settings set: exit %d, %q, %q", exit, out, stderr)
	}
	if out, _, exit := runIn("settings", "get", "max_message_bytes", "--config", file); exit != 0 || out != "10485760\n" {
		t.Errorf("settings get after set: exit %d, %q", exit, out)
	}
	if out, _, _ := runIn("settings", "get", "routes", "--json", "--config", file); !strings.Contains(out, `"value":"","source":"cluster","disagrees":true,"toml":"example.org=10.0.0.6:25"`) {
		t.Errorf("settings get routes --json: %s", out)
	}

	before, _ := store.AppliedIndex(context.Background())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"settings", "set", "max_message_bytes", "0"}, "sigillo: setting max_message_bytes: max_message_bytes must be positive, not 0\n"},
		{[]string{"settings", "set", "hostname", "mx9"}, `sigillo: no cluster-wide setting "hostname": the settings are max_message_bytes, `},
		{[]string{"settings", "get", "nosuch"}, `sigillo: no cluster-wide setting "nosuch"`},
		{[]string{"settings", "set", "max_message_bytes"}, "sigillo: usage: sigillo settings list | get KEY | set KEY VALUE\n"},
		{[]string{"settings", "frobnicate"}, "sigillo: usage: sigillo settings list | get KEY | set KEY VALUE\n"},
	} {
		out, stderr, exit := runIn(append(c.args, "--config", file)...)
		if exit != 1 || out != "" || !strings.HasPrefix(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want one line beginning %q", strings.Join(c.args, " "), exit, out, stderr, c.want)
		}
	}
	if after, _ := store.AppliedIndex(context.Background()); after != before {
		t.Errorf("refused commands wrote: applied index %d → %d", before, after)
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
