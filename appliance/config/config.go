// Package config reads Sigillo's TOML configuration and supplies the
// embedded default used when no file is given. It only parses and checks
// values; it starts nothing.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration.
type Config struct {
	// Hostname is the server's name: SMTP greeting and EHLO, Received:
	// headers, and the name on its certificate.
	Hostname string `toml:"hostname"`
	// DataDir holds the database, the raft log and the control socket.
	DataDir string `toml:"data_dir"`
	// MaxMessageBytes is the largest message accepted (SMTP 552 above it).
	MaxMessageBytes int64 `toml:"max_message_bytes"`
	// Listen has one address per listener; "" turns a listener off.
	Listen Listen `toml:"listen"`
	// Routes maps a domain to a static next hop "host:port", instead of MX.
	Routes map[string]string `toml:"routes"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// MaxConnections and MaxConnectionsPerHost bound the connections each
	// listener holds at once, in all and from one client address (IPv6: /64).
	MaxConnections        int `toml:"max_connections"`
	MaxConnectionsPerHost int `toml:"max_connections_per_host"`
	// MaxUnauthenticatedPerHost bounds, per listener and client address,
	// the connections not logged in yet (inbound SMTP: no MAIL FROM yet;
	// HTTPS: all); over it a new one replaces the quietest of them. 0
	// means 10.
	MaxUnauthenticatedPerHost int `toml:"max_unauthenticated_per_host"`
	// Timeouts is the [timeouts] table.
	Timeouts Timeouts `toml:"timeouts"`
	// MinFreeBytes is the free disk space under which new mail is refused
	// with a temporary error; 0 means 1.5 × max_message_bytes, as Postfix.
	MinFreeBytes int64 `toml:"min_free_bytes"`
	// SMTP policy (see SMTPPolicy below).
	SMTPPolicy
	// MaxInflightBytes bounds the bytes of messages held in memory at
	// once, all front ends together; past it a message waits, then gets a
	// temporary error. 0 means sized from the machine's memory (package
	// memlimit).
	MaxInflightBytes int64 `toml:"max_inflight_bytes"`
	// Signer says where the PEC gestore's signing key is.
	Signer Signer `toml:"signer"`
	// PEC describes this gestore.
	PEC PEC `toml:"pec"`
	// Scan is the virus scanner (clamd).
	Scan Scan `toml:"scan"`
	// ACME, when set, gets the listeners' certificates from an ACME CA.
	ACME *ACME `toml:"acme"`
	// Raft says when the replicated log is snapshotted and truncated.
	Raft Raft `toml:"raft"`
	// Cluster is this node's place in a cluster ([cluster]).
	Cluster Cluster `toml:"cluster"`
	// Backup is where and how often the store is backed up ([backup]).
	Backup Backup `toml:"backup"`

	// Given are the keys the file set, dotted as in the file
	// ("max_message_bytes", "pec.provider_name", "routes", "acme"); nil
	// for the embedded default. It tells a value the file gives from a
	// default (appliance/settings: which keys of this node's file disagree
	// with the cluster's).
	Given map[string]bool `toml:"-"`
}

// Gives says whether the file set key (dotted: "pec.provider_name").
func (c *Config) Gives(key string) bool { return c.Given[key] }

// SMTPPolicy is the top-level keys of the SMTP server's policy.
type SMTPPolicy struct {
	// RelayNetworks are client networks (CIDR, or a single address) that
	// may send mail from the hosted domains' addresses to port 25 without
	// authentication (an application server); default none. They are
	// not a relay: mail for other domains still needs AUTH.
	RelayNetworks []string `toml:"relay_networks"`
	// MaxRejectedRecipients is how many refused recipients a connection
	// may have before 421 and the end of the connection (default 20).
	MaxRejectedRecipients int `toml:"max_rejected_recipients"`
	// Postmaster is the mailbox that gets mail for postmaster (RFC 5321
	// §4.5.1). Default: postmaster@<domain> if it is a mailbox, and
	// postmaster@<hostname> for a bare "postmaster"; else refused.
	Postmaster string `toml:"postmaster"`
}

// RelayPrefixes is relay_networks, parsed (Validate has checked it).
func (p SMTPPolicy) RelayPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range p.RelayNetworks {
		if pr, err := parseNetwork(n); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

func parseNetwork(n string) (netip.Prefix, error) {
	if strings.Contains(n, "/") {
		p, err := netip.ParsePrefix(n)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(n)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (p SMTPPolicy) validate() error {
	for _, n := range p.RelayNetworks {
		if _, err := parseNetwork(n); err != nil {
			return fmt.Errorf("relay_networks: %q is not a network (\"192.0.2.0/24\", \"2001:db8::/32\" or one address)", n)
		}
	}
	if p.MaxRejectedRecipients < 0 {
		return fmt.Errorf("max_rejected_recipients must not be negative, not %d", p.MaxRejectedRecipients)
	}
	if p.Postmaster != "" {
		if i := strings.LastIndexByte(p.Postmaster, '@'); i <= 0 || i == len(p.Postmaster)-1 || strings.ContainsAny(p.Postmaster, " <>") {
			return fmt.Errorf("postmaster %q is not a mailbox address", p.Postmaster)
		}
	}
	return nil
}

// Timeouts is the [timeouts] table: how long a client may keep a
// connection waiting, each a Go duration ("30s", "5m"); "" keeps the
// default.
type Timeouts struct {
	// Login bounds, before login, the TLS handshake and each command
	// (inbound SMTP: until MAIL FROM; HTTPS: a request's headers, and
	// keep-alive). Default 30s.
	Login string `toml:"login"`
	// SMTP bounds each command after login or MAIL FROM, and each reply
	// (RFC 5321 §4.5.3.2). Default 5m.
	SMTP string `toml:"smtp"`
	// IMAP is the autologout timer after login, IDLE included (RFC 9051
	// §5.4). Default 30m.
	IMAP string `toml:"imap"`
	// POP3 is the autologout timer after login (RFC 1939). Default 10m.
	POP3 string `toml:"pop3"`
	// Data is the longest pause in a message's transfer (SMTP DATA and
	// BDAT, IMAP APPEND), and bounds an HTTPS request's body and response.
	// Default 5m.
	Data string `toml:"data"`
	// MinDataRate is the average, in bytes/s, below which a transfer is
	// cut. Default 500.
	MinDataRate int64 `toml:"min_data_rate"`
}

// TimeoutValues are the effective [timeouts].
type TimeoutValues struct {
	Login, SMTP, IMAP, POP3, Data time.Duration
	MinDataRate                   int64
}

// Values gives the effective timeouts, defaults filled in (t must have
// passed Validate).
func (t Timeouts) Values() TimeoutValues {
	d := func(s string, def time.Duration) time.Duration {
		if v, err := time.ParseDuration(s); err == nil && v > 0 {
			return v
		}
		return def
	}
	v := TimeoutValues{Login: d(t.Login, 30*time.Second), SMTP: d(t.SMTP, 5*time.Minute), IMAP: d(t.IMAP, 30*time.Minute),
		POP3: d(t.POP3, 10*time.Minute), Data: d(t.Data, 5*time.Minute), MinDataRate: t.MinDataRate}
	if v.MinDataRate <= 0 {
		v.MinDataRate = 500
	}
	return v
}

func (t Timeouts) validate() error {
	for _, d := range []struct{ name, v string }{{"login", t.Login}, {"smtp", t.SMTP}, {"imap", t.IMAP}, {"pop3", t.POP3}, {"data", t.Data}} {
		if d.v != "" {
			if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
				return fmt.Errorf("timeouts.%s %q is not a positive duration (\"30s\", \"5m\")", d.name, d.v)
			}
		}
	}
	if t.MinDataRate < 0 {
		return fmt.Errorf("timeouts.min_data_rate must not be negative, not %d", t.MinDataRate)
	}
	return nil
}

// UnauthenticatedPerHost is the effective max_unauthenticated_per_host.
func (c *Config) UnauthenticatedPerHost() int {
	if c.MaxUnauthenticatedPerHost > 0 {
		return c.MaxUnauthenticatedPerHost
	}
	return 10
}

// ACME is the [acme] table.
type ACME struct {
	Email string `toml:"email"`
	// CA is the ACME directory URL (default Let's Encrypt).
	CA string `toml:"ca"`
	// CARoot is a PEM file of the ACME server's root, for private or test
	// CAs.
	CARoot string `toml:"ca_root"`
	// Names default to the hostname.
	Names []string `toml:"names"`
	// Challenge: "tls-alpn-01" (default; the https listener on :443) or
	// "http-01" (the http listener on :80).
	Challenge string `toml:"challenge"`
	// RenewCheck is how often certificates are checked for renewal, a Go
	// duration ("10m", the default).
	RenewCheck string `toml:"renew_check"`
	// RetryFirst is the first wait after the CA could not be reached
	// ("30s", the default), doubled up to an hour.
	RetryFirst string `toml:"retry_first"`
}

// LetsEncrypt is the default ACME CA.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Scan is the [scan] table.
type Scan struct {
	// Clamd is where clamd listens: "unix:/run/clamav/clamd.ctl" or
	// "tcp://127.0.0.1:3310"; empty, scanning is off.
	Clamd string `toml:"clamd"`
	// Required (default true): clamd unreachable means a temporary
	// failure, never a silent pass.
	Required *bool `toml:"required"`
	// MaxScanBytes: larger messages pass unscanned, marked (default 50 MiB).
	MaxScanBytes int64 `toml:"max_scan_bytes"`
}

// ScanRequired is the effective [scan] required.
func (c *Config) ScanRequired() bool { return c.Scan.Required == nil || *c.Scan.Required }

// Signer is the [signer] table: a PKCS#11 token, or (development only) a
// PEM key file.
type Signer struct {
	PKCS11Module string `toml:"pkcs11_module"`
	TokenLabel   string `toml:"token_label"`
	PinFile      string `toml:"pin_file"`
	KeyLabel     string `toml:"key_label"`
	KeyFile      string `toml:"key_file"`
}

// PEC is the [pec] table.
type PEC struct {
	ProviderName   string `toml:"provider_name"`
	ServiceAddress string `toml:"service_address"`
	VerifyPeerTLS  bool   `toml:"verify_peer_tls"`
	// MaxTotalBytes bounds a submission's size × number of recipients
	// (the law asks for at least 30 MB; default 30,000,000).
	MaxTotalBytes int64 `toml:"max_total_bytes"`
	// RootsFile is a PEM file of extra trust anchors for other gestori's
	// certificates (the CA above AgID CA1, say); the certificates of the
	// providers directory are trusted as they are.
	RootsFile string `toml:"roots_file"`
}

// PECMaxTotalBytes is the effective [pec] max_total_bytes.
func (c *Config) PECMaxTotalBytes() int64 {
	if c.PEC.MaxTotalBytes > 0 {
		return c.PEC.MaxTotalBytes
	}
	return 30_000_000
}

// ServiceAddress is the gestore's service address: the From of every
// receipt and envelope (default posta-certificata@<hostname>).
func (c *Config) ServiceAddress() string {
	if c.PEC.ServiceAddress != "" {
		return c.PEC.ServiceAddress
	}
	return "posta-certificata@" + c.Hostname
}

// Listen is the [listen] table.
type Listen struct {
	SMTP        string `toml:"smtp"`
	Submission  string `toml:"submission"`
	Submissions string `toml:"submissions"`
	IMAP        string `toml:"imap"`
	IMAPS       string `toml:"imaps"`
	POP3        string `toml:"pop3"`
	POP3S       string `toml:"pop3s"`
	HTTPS       string `toml:"https"`
	// HTTP answers ACME http-01 challenges and redirects everything else
	// to https; opened only with [acme] challenge = "http-01".
	HTTP string `toml:"http"`
}

// Default is the embedded configuration of `sigillo serve` without
// --config: everything on 127.0.0.1, unprivileged ports, data in
// ./sigillo-data.
func Default() Config {
	return Config{
		Hostname:        "localhost",
		DataDir:         "./sigillo-data",
		MaxMessageBytes: 30 << 20,
		Listen: Listen{
			SMTP:        "127.0.0.1:2525",
			Submission:  "127.0.0.1:2587",
			Submissions: "127.0.0.1:2465",
			IMAP:        "127.0.0.1:2143",
			IMAPS:       "127.0.0.1:2993",
			POP3:        "127.0.0.1:2110",
			POP3S:       "127.0.0.1:2995",
			HTTPS:       "127.0.0.1:8443",
		},
		LogLevel:              "info",
		MaxConnections:        2000,
		MaxConnectionsPerHost: 50,
	}
}

// Load reads path; with path "" it returns Default. Keys of a file replace
// the default's; unknown keys are an error, so a typo is not ignored.
func Load(path string) (Config, error) {
	cfg := Default()
	if path == "" {
		return cfg, cfg.Validate()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	// A file describes a real deployment: its listeners default to the
	// standard ports on every address, not to the loopback test ports.
	cfg.Listen = Listen{SMTP: ":25", Submission: ":587", Submissions: ":465", IMAP: ":143", IMAPS: ":993", POP3: ":110", POP3S: ":995", HTTPS: ":443", HTTP: ":80"}
	cfg.DataDir = "/var/lib/sigillo"
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return cfg, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	cfg.Given = map[string]bool{}
	for _, k := range md.Keys() {
		cfg.Given[strings.Join(k, ".")] = true
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks the values.
func (c *Config) Validate() error {
	if c.Hostname == "" || strings.ContainsAny(c.Hostname, " /@") {
		return fmt.Errorf("hostname %q is not a host name", c.Hostname)
	}
	if c.DataDir == "" {
		return errors.New("data_dir is empty")
	}
	if c.MaxMessageBytes <= 0 {
		return fmt.Errorf("max_message_bytes must be positive, not %d", c.MaxMessageBytes)
	}
	for name, addr := range c.Listen.Map() {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("listen.%s: %q is not host:port", name, addr)
		}
	}
	for dom, hop := range c.Routes {
		if _, _, err := net.SplitHostPort(hop); err != nil {
			return fmt.Errorf("routes.%q: %q is not host:port", dom, hop)
		}
	}
	if c.Signer.PKCS11Module != "" && c.Signer.KeyFile != "" {
		return errors.New("signer: set pkcs11_module or key_file, not both")
	}
	if c.Signer.PKCS11Module != "" && (c.Signer.TokenLabel == "" || c.Signer.PinFile == "") {
		return errors.New("signer: pkcs11_module needs token_label and pin_file")
	}
	if a := c.ACME; a != nil {
		if a.CA == "" {
			a.CA = LetsEncrypt
		}
		if len(a.Names) == 0 {
			a.Names = []string{c.Hostname}
		}
		switch a.Challenge {
		case "":
			a.Challenge = "tls-alpn-01"
		case "tls-alpn-01", "http-01":
		default:
			return fmt.Errorf("acme.challenge %q: use tls-alpn-01 or http-01", a.Challenge)
		}
		if a.Challenge == "http-01" && c.Listen.HTTP == "" {
			return errors.New("acme.challenge http-01 needs listen.http (\":80\")")
		}
		for _, d := range []struct{ name, v string }{{"renew_check", a.RenewCheck}, {"retry_first", a.RetryFirst}} {
			if d.v != "" {
				if v, err := time.ParseDuration(d.v); err != nil || v <= 0 {
					return fmt.Errorf("acme.%s %q is not a positive duration (\"10m\")", d.name, d.v)
				}
			}
		}
	}
	if c.Scan.MaxScanBytes < 0 {
		return fmt.Errorf("scan.max_scan_bytes must not be negative, not %d", c.Scan.MaxScanBytes)
	}
	if c.Scan.Clamd != "" && !strings.HasPrefix(c.Scan.Clamd, "unix:") && !strings.HasPrefix(c.Scan.Clamd, "tcp://") {
		return fmt.Errorf("scan.clamd %q: use unix:/path/to/clamd.ctl or tcp://host:port", c.Scan.Clamd)
	}
	if c.PEC.MaxTotalBytes < 0 {
		return fmt.Errorf("pec.max_total_bytes must not be negative, not %d", c.PEC.MaxTotalBytes)
	}
	if c.MinFreeBytes < 0 {
		return fmt.Errorf("min_free_bytes must not be negative, not %d", c.MinFreeBytes)
	}
	if err := c.SMTPPolicy.validate(); err != nil {
		return err
	}
	if c.MaxInflightBytes < 0 {
		return fmt.Errorf("max_inflight_bytes must not be negative, not %d (0: sized from the machine's memory)", c.MaxInflightBytes)
	}
	if c.MaxConnections < 1 || c.MaxConnectionsPerHost < 1 {
		return errors.New("max_connections and max_connections_per_host must be at least 1")
	}
	if c.MaxUnauthenticatedPerHost < 0 {
		return fmt.Errorf("max_unauthenticated_per_host must not be negative, not %d", c.MaxUnauthenticatedPerHost)
	}
	if err := c.Timeouts.validate(); err != nil {
		return err
	}
	if err := c.Raft.validate(); err != nil {
		return err
	}
	if err := c.Backup.validate(); err != nil {
		return err
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: use debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// Map returns the listeners by their config names.
func (l Listen) Map() map[string]string {
	return map[string]string{
		"smtp": l.SMTP, "submission": l.Submission, "submissions": l.Submissions,
		"imap": l.IMAP, "imaps": l.IMAPS, "pop3": l.POP3, "pop3s": l.POP3S, "https": l.HTTPS, "http": l.HTTP,
	}
}

// MinFree is the effective free-space floor for new mail.
func (c *Config) MinFree() int64 {
	if c.MinFreeBytes > 0 {
		return c.MinFreeBytes
	}
	return c.MaxMessageBytes * 3 / 2
}

// ControlSocket is the path of the unix socket the command line talks to.
func (c *Config) ControlSocket() string { return filepath.Join(c.DataDir, "control.sock") }
