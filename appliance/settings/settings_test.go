package settings_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/config"
	"sigillo/appliance/settings"
	"sigillo/storage"
)

// cluster is one replicated store, as every node of a cluster has it.
func cluster(t *testing.T) (*storage.Store, *apptest.Proposer) {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, apptest.NewProposer(s)
}

// node loads a node's TOML file.
func node(t *testing.T, toml string) config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sigillo.toml")
	if err := os.WriteFile(p, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func load(t *testing.T, s *storage.Store) settings.Values {
	t.Helper()
	v, err := settings.Load(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const n1TOML = `
hostname = "mx1.example.it"
max_message_bytes = 52428800
[routes]
"example.org" = "10.0.0.5:25"
[pec]
provider_name = "Example PEC S.p.A."
[acme]
names = ["mail.example.it", "pec.example.it"]
[scan]
clamd = "tcp://127.0.0.1:3310"
required = false
`

// The bootstrap node seeds the store from its TOML at the first start:
// every cluster-wide key, its own values and the defaults, and the
// node-local ones not at all. A second start seeds nothing.
func TestTheBootstrapNodeSeedsTheClusterFromItsTOML(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	n1 := node(t, n1TOML)
	seeded, err := settings.Seed(ctx, s, p, n1)
	if err != nil {
		t.Fatal(err)
	}
	if len(seeded) != len(settings.Keys()) {
		t.Errorf("seeded %d keys, want all %d: %v", len(seeded), len(settings.Keys()), seeded)
	}
	v := load(t, s)
	for key, want := range map[string]string{
		"max_message_bytes":   "52428800",
		"routes":              "example.org=10.0.0.5:25",
		"pec.provider_name":   "Example PEC S.p.A.",
		"pec.service_address": "posta-certificata@mx1.example.it", // the default, fixed for every node
		"acme.names":          "mail.example.it,pec.example.it",
		"acme.ca":             config.LetsEncrypt,
		"scan.required":       "false",
		"timeouts.smtp":       "5m",
		"relay_networks":      "",
	} {
		if got, ok := v.Text(key); !ok || got != want {
			t.Errorf("stored %s = %q (%v), want %q", key, got, ok, want)
		}
	}
	for _, local := range []string{"hostname", "data_dir", "scan.clamd", "listen.smtp", "max_connections"} {
		if _, err := s.KV(ctx, settings.Prefix+local); !storage.IsCode(err, storage.ErrNotFound) {
			t.Errorf("node-local %s is in the store: %v", local, err)
		}
	}
	again, err := settings.Seed(ctx, s, p, node(t, `hostname = "mx1.example.it"`))
	if err != nil || len(again) != 0 {
		t.Errorf("second seed stored %v, %v; want nothing", again, err)
	}
	if got, _ := load(t, s).Text("max_message_bytes"); got != "52428800" {
		t.Errorf("a second seed changed max_message_bytes to %s", got)
	}
}

// A node whose TOML gives other values than the cluster's uses the
// cluster's and says so at start, one warning per key; keys its TOML
// leaves out follow the cluster without a word.
func TestANodeWhoseTOMLDisagreesSaysSoAndUsesTheClusters(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	if _, err := settings.Seed(ctx, s, p, node(t, n1TOML)); err != nil {
		t.Fatal(err)
	}
	n2 := node(t, `
hostname = "mx2.example.it"
max_message_bytes = 31457280
[routes]
"example.org" = "10.0.0.6:25"
[pec]
provider_name = "Example PEC S.p.A."
[acme]
`)
	eff, ds := settings.Effective(n2, load(t, s))
	var logs apptest.LogBuffer
	settings.Warn(logs.Logger(slog.LevelInfo), ds)

	if eff.MaxMessageBytes != 52428800 || eff.Routes["example.org"] != "10.0.0.5:25" || eff.ServiceAddress() != "posta-certificata@mx1.example.it" ||
		strings.Join(eff.ACME.Names, ",") != "mail.example.it,pec.example.it" || eff.ScanRequired() {
		t.Errorf("effective: max %d, routes %v, service %s, acme names %v, scan required %v; want the cluster's",
			eff.MaxMessageBytes, eff.Routes, eff.ServiceAddress(), eff.ACME.Names, eff.ScanRequired())
	}
	if eff.Hostname != "mx2.example.it" {
		t.Errorf("hostname %s: node-local, want the node's own", eff.Hostname)
	}
	if n2.MaxMessageBytes != 31457280 {
		t.Error("Effective changed the node's TOML")
	}
	out := logs.String()
	t.Logf("start of node 2:\n%s", out)
	for _, want := range []string{
		"setting max_message_bytes: this node's TOML says 31457280, the cluster uses 52428800 (change it with `sigillo settings set max_message_bytes 31457280`, or remove it from the TOML)",
		"setting routes: this node's TOML says example.org=10.0.0.6:25, the cluster uses example.org=10.0.0.5:25 (change it with `sigillo settings set routes example.org=10.0.0.6:25`, or remove it from the TOML)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no warning %q", want)
		}
	}
	if n := strings.Count(out, "level=WARN"); n != 2 || len(ds) != 2 {
		t.Errorf("%d warnings (%d disagreements), want 2: the agreeing provider_name and the keys left out say nothing", n, len(ds))
	}

	// settings list on node 2 shows where the values come from and marks
	// its TOML's disagreements.
	rows := settings.List(n2, load(t, s))
	for _, r := range rows {
		if r.Source != settings.SourceCluster {
			t.Errorf("%s: source %s, want cluster (all seeded)", r.Key, r.Source)
		}
		if want := r.Key == "max_message_bytes" || r.Key == "routes"; r.Disagrees != want {
			t.Errorf("%s: disagrees %v (TOML %q, cluster %q)", r.Key, r.Disagrees, r.TOML, r.Value)
		}
	}
	// Before anything is stored: the TOML's and the defaults.
	fresh, _ := cluster(t)
	r, err := settings.Get(n2, load(t, fresh), "max_message_bytes")
	if err != nil || r.Source != settings.SourceTOML || r.Value != "31457280" {
		t.Errorf("empty store, max_message_bytes: %+v, %v; want the TOML's", r, err)
	}
	if r, _ := settings.Get(n2, load(t, fresh), "postmaster"); r.Source != settings.SourceDefault {
		t.Errorf("empty store, postmaster: %+v, want default", r)
	}
}

// An operator changes a setting at runtime: every node reads it back,
// and a node's live configuration follows within a second, without a
// restart.
func TestASetAtRuntimeReachesTheLiveConfiguration(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, p := cluster(t)
	n1 := node(t, n1TOML)
	if _, err := settings.Seed(ctx, s, p, n1); err != nil {
		t.Fatal(err)
	}
	live := settings.NewLive(n1, load(t, s))
	// What the front ends read at each use: SMTP's and IMAP's message
	// limit, the queue's routes.
	maxBytes := func() int64 { return live.Config().MaxMessageBytes }
	routes := func() map[string]string { return live.Config().Routes }
	done := make(chan struct{})
	go func() {
		defer close(done)
		settings.Watch(ctx, s, 100*time.Millisecond, apptest.Logger(t), live.Update)
	}()
	defer func() { cancel(); <-done }()

	for _, set := range [][2]string{
		{"max_message_bytes", "10M"},
		{"routes", "example.org=10.0.0.7:25, example.net=10.0.0.8:2525"},
		{"timeouts.smtp", "300s"},
		{"acme.names", "mail.example.it"},
	} {
		if err := settings.Set(ctx, p, set[0], set[1]); err != nil {
			t.Fatalf("set %s %s: %v", set[0], set[1], err)
		}
	}
	v := load(t, s)
	for key, want := range map[string]string{
		"max_message_bytes": "10485760",
		"routes":            "example.net=10.0.0.8:2525,example.org=10.0.0.7:25",
		"timeouts.smtp":     "5m",
		"acme.names":        "mail.example.it",
	} {
		if got, _ := v.Text(key); got != want {
			t.Errorf("read back %s = %q, want %q", key, got, want)
		}
	}
	start := time.Now()
	for maxBytes() != 10<<20 || routes()["example.net"] != "10.0.0.8:2525" {
		if time.Since(start) > time.Second {
			t.Fatalf("after 1 s the live configuration has max_message_bytes %d and routes %v", maxBytes(), routes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the live configuration followed the set in %v", time.Since(start).Round(time.Millisecond))
	if live.Config().Hostname != "mx1.example.it" || live.Config().Scan.Clamd != "tcp://127.0.0.1:3310" {
		t.Error("the node-local values moved")
	}
}

// A value the configuration's rules refuse, or a key that is not
// cluster-wide, is a clear error, and nothing is written.
func TestBadSetsAreRefusedAndWriteNothing(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	if _, err := settings.Seed(ctx, s, p, node(t, n1TOML)); err != nil {
		t.Fatal(err)
	}
	before, err := s.AppliedIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, value, want string }{
		{"max_message_bytes", "0", "setting max_message_bytes: max_message_bytes must be positive, not 0"},
		{"max_message_bytes", "lots", `setting max_message_bytes: "lots": `},
		{"routes", "example.org=nowhere", `setting routes: routes."example.org": "nowhere" is not host:port`},
		{"routes", "example.org", `setting routes: "example.org" is not domain=host:port`},
		{"relay_networks", "10.0.0.0/8, the office", `setting relay_networks: relay_networks: "the office" is not a network`},
		{"timeouts.imap", "soon", `setting timeouts.imap: timeouts.imap "soon" is not a positive duration`},
		{"acme.challenge", "dns-01", `setting acme.challenge: acme.challenge "dns-01": use tls-alpn-01 or http-01`},
		{"acme.names", "", "setting acme.names: give at least one name"},
		{"pec.service_address", " ", "setting pec.service_address: give the address"},
		{"scan.required", "yes", `setting scan.required: "yes": use true or false`},
		{"postmaster", "nobody", `setting postmaster: postmaster "nobody" is not a mailbox address`},
		{"hostname", "mx9.example.it", `no cluster-wide setting "hostname": the settings are max_message_bytes, relay_networks, `},
		{"max_mesage_bytes", "1", `no cluster-wide setting "max_mesage_bytes"`},
	} {
		err := settings.Set(ctx, p, c.key, c.value)
		if err == nil || !errors.Is(err, settings.ErrInvalid) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("set %s %q: %v, want ErrInvalid beginning %q", c.key, c.value, err, c.want)
		}
	}
	err = settings.Set(ctx, p, "nosuch", "1")
	t.Logf("an unknown key: %v", err)
	if !strings.Contains(err.Error(), "scan.max_scan_bytes (node-local ones are in each node's TOML)") {
		t.Errorf("the unknown key's error does not list every key: %v", err)
	}
	if after, _ := s.AppliedIndex(ctx); after != before {
		t.Errorf("refused sets wrote: applied index %d → %d", before, after)
	}
	if got, _ := load(t, s).Text("max_message_bytes"); got != "52428800" {
		t.Errorf("max_message_bytes is %s after refused sets", got)
	}
}

// A stored key this version does not know (a newer node's) is left out;
// a stored value that does not read is an error that names it.
func TestLoadSkipsUnknownKeysAndNamesABadValue(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	p.Must(t, &storage.PutKV{Key: settings.Prefix + "from_the_future", Value: []byte(`1`)})
	if v := load(t, s); v.Len() != 0 {
		t.Errorf("an unknown stored key was loaded: %d values", v.Len())
	}
	p.Must(t, &storage.PutKV{Key: settings.Prefix + "max_message_bytes", Value: []byte(`"big"`)})
	if _, err := settings.Load(ctx, s); err == nil || !strings.Contains(err.Error(), "max_message_bytes") {
		t.Errorf("a bad stored value: %v, want an error naming max_message_bytes", err)
	}
}

// A node without [acme] neither seeds nor takes [acme] keys.
func TestACMEKeysNeedTheACMETable(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	plain := node(t, `hostname = "mx1.example.it"`)
	seeded, err := settings.Seed(ctx, s, p, plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range seeded {
		if strings.HasPrefix(k, "acme.") {
			t.Errorf("seeded %s from a node without [acme]", k)
		}
	}
	if err := settings.Set(ctx, p, "acme.names", "mail.example.it"); err != nil {
		t.Fatal(err)
	}
	eff, ds := settings.Effective(plain, load(t, s))
	if eff.ACME != nil || len(ds) != 0 {
		t.Errorf("a node without [acme] got ACME %+v, disagreements %v", eff.ACME, ds)
	}
}

// At start a node takes the cluster's values, warns where its TOML
// disagrees, and refuses to start when a cluster-wide value clashes with
// one of its own (http-01 needs its http listener).
func TestForNodeStartsWithTheClustersValuesOrSaysWhyNot(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	if _, err := settings.Seed(ctx, s, p, node(t, n1TOML)); err != nil {
		t.Fatal(err)
	}
	var logs apptest.LogBuffer
	n2 := node(t, "hostname = \"mx2.example.it\"\nmax_message_bytes = 1000\n[acme]\n[listen]\nhttp = \"\"\n")
	cfg, stored, err := settings.ForNode(ctx, s, n2, logs.Logger(slog.LevelInfo))
	if err != nil || cfg.MaxMessageBytes != 52428800 || stored.Len() != len(settings.Keys()) {
		t.Fatalf("ForNode: max %d, %d stored, %v", cfg.MaxMessageBytes, stored.Len(), err)
	}
	if !strings.Contains(logs.String(), "setting max_message_bytes: this node's TOML says 1000") {
		t.Errorf("no warning at start:\n%s", logs.String())
	}
	if err := settings.Set(ctx, p, "acme.challenge", "http-01"); err != nil {
		t.Fatal(err)
	}
	_, _, err = settings.ForNode(ctx, s, n2, logs.Logger(slog.LevelInfo))
	t.Logf("node without an http listener: %v", err)
	if err == nil || !strings.Contains(err.Error(), "acme.challenge http-01 needs listen.http") {
		t.Errorf("ForNode with http-01 and no http listener: %v", err)
	}
}

// README's table of settings names every cluster-wide key as cluster,
// so the documented split cannot fall behind the table of keys.
func TestREADMEDocumentsTheSplit(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Cluster-wide and node-local settings\n")
	if start < 0 {
		t.Fatal("README.md has no section Cluster-wide and node-local settings")
	}
	text = text[start+1:]
	text = text[:strings.Index(text, "\n## ")]
	cluster := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || strings.TrimSpace(cells[2]) != "cluster" {
			continue
		}
		for _, k := range strings.Split(cells[1], "`") {
			cluster[k] = true
		}
	}
	for _, k := range settings.Keys() {
		if !cluster[k] && !(strings.HasPrefix(k, "timeouts.") && cluster["[timeouts]"]) {
			t.Errorf("README's table does not show %s as cluster-wide", k)
		}
	}
}

// A server alone keeps its TOML as the place its operator edits: a key the
// file gives, changed in the file, is the value after the next start; a
// key the file leaves out keeps what `settings set` stored.
func TestAServerAloneAdoptsWhatItsFileGivesAtEachStart(t *testing.T) {
	ctx := context.Background()
	s, p := cluster(t)
	if _, err := settings.Adopt(ctx, s, p, node(t, n1TOML)); err != nil {
		t.Fatal(err)
	}
	if err := settings.Set(ctx, p, "max_rejected_recipients", "7"); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(n1TOML, "max_message_bytes = 52428800", "max_message_bytes = 10485760", 1)
	written, err := settings.Adopt(ctx, s, p, node(t, edited))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(written, ",") != "max_message_bytes" {
		t.Errorf("adopted %v, want only the edited max_message_bytes", written)
	}
	eff, ds := settings.Effective(node(t, edited), load(t, s))
	if eff.MaxMessageBytes != 10485760 || eff.MaxRejectedRecipients != 7 || len(ds) != 0 {
		t.Errorf("after the restart: max %d, max_rejected_recipients %d, disagreements %v; want the file's size and the set's 7",
			eff.MaxMessageBytes, eff.MaxRejectedRecipients, ds)
	}
	again, _ := settings.Adopt(ctx, s, p, node(t, edited))
	if len(again) != 0 {
		t.Errorf("a start with the same file wrote %v", again)
	}
}
