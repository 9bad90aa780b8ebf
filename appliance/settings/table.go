package settings

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigillo/appliance/bytesize"
	"sigillo/appliance/config"
	"sigillo/appliance/scan"
	"sigillo/appliance/smtpd"
)

// table is the cluster-wide settings, in the order `sigillo settings list`
// shows them: the one place that says which keys the cluster shares. A key
// not here is node-local: each node's TOML alone decides it. Keys are as
// dotted in the TOML file.
var table = []setting{
	size("max_message_bytes", "a message one node accepts must not be refused by another (552)",
		func(c *config.Config) int64 { return c.MaxMessageBytes }, func(c *config.Config, v int64) { c.MaxMessageBytes = v }),
	list("relay_networks", "which application servers may send as the hosted domains must not depend on the node they reach",
		func(c *config.Config) []string { return c.RelayNetworks }, func(c *config.Config, v []string) { c.RelayNetworks = v }),
	number("max_rejected_recipients", "SMTP policy a client meets on any node",
		func(c *config.Config) int {
			if c.MaxRejectedRecipients == 0 {
				return smtpd.DefaultMaxRejectedRecipients
			}
			return c.MaxRejectedRecipients
		}, func(c *config.Config, v int) { c.MaxRejectedRecipients = v }),
	text("postmaster", "mail to postmaster goes to one mailbox, whichever node takes it",
		func(c *config.Config) string { return c.Postmaster }, func(c *config.Config, v string) { c.Postmaster = v }),
	routes("routes", "mail routing must not depend on which node got the message",
		func(c *config.Config) map[string]string { return c.Routes }, func(c *config.Config, v map[string]string) { c.Routes = v }),
	duration("timeouts.login", "protocol policy: a client behind a load balancer meets the same on every node",
		func(t config.TimeoutValues) time.Duration { return t.Login }, func(t *config.Timeouts, v string) { t.Login = v }),
	duration("timeouts.smtp", "protocol policy, as timeouts.login",
		func(t config.TimeoutValues) time.Duration { return t.SMTP }, func(t *config.Timeouts, v string) { t.SMTP = v }),
	duration("timeouts.imap", "protocol policy, as timeouts.login",
		func(t config.TimeoutValues) time.Duration { return t.IMAP }, func(t *config.Timeouts, v string) { t.IMAP = v }),
	duration("timeouts.pop3", "protocol policy, as timeouts.login",
		func(t config.TimeoutValues) time.Duration { return t.POP3 }, func(t *config.Timeouts, v string) { t.POP3 = v }),
	duration("timeouts.data", "protocol policy, as timeouts.login",
		func(t config.TimeoutValues) time.Duration { return t.Data }, func(t *config.Timeouts, v string) { t.Data = v }),
	plain("timeouts.min_data_rate", "protocol policy, as timeouts.login",
		func(c *config.Config) int64 { return c.Timeouts.Values().MinDataRate }, func(c *config.Config, v int64) { c.Timeouts.MinDataRate = v }),
	text("pec.provider_name", "the gestore's identity: one gestore, whichever node signs",
		func(c *config.Config) string { return c.PEC.ProviderName }, func(c *config.Config, v string) { c.PEC.ProviderName = v }),
	nonEmpty(text("pec.service_address", "the From of every receipt; its default follows the node's hostname, so the cluster fixes it",
		func(c *config.Config) string { return c.ServiceAddress() }, func(c *config.Config, v string) { c.PEC.ServiceAddress = v }),
		"give the address (left out, each node would use posta-certificata@ its own hostname)"),
	boolean("pec.verify_peer_tls", "the gestore's delivery rule, whichever node leads the queue",
		func(c *config.Config) bool { return c.PEC.VerifyPeerTLS }, func(c *config.Config, v bool) { c.PEC.VerifyPeerTLS = v }),
	size("pec.max_total_bytes", "a PEC submission's limit must not depend on the node",
		func(c *config.Config) int64 { return c.PECMaxTotalBytes() }, func(c *config.Config, v int64) { c.PEC.MaxTotalBytes = v }),
	acme(text("acme.email", "one ACME account for the cluster's certificates",
		func(c *config.Config) string { return c.ACME.Email }, func(c *config.Config, v string) { c.ACME.Email = v })),
	acme(text("acme.ca", "one CA issues the certificates every node serves",
		func(c *config.Config) string { return c.ACME.CA }, func(c *config.Config, v string) { c.ACME.CA = v })),
	nonEmpty(acme(list("acme.names", "every node serves the same certificate, for the names clients use",
		func(c *config.Config) []string { return c.ACME.Names }, func(c *config.Config, v []string) { c.ACME.Names = v })),
		"give at least one name (left out, each node would use its own hostname)"),
	acme(text("acme.challenge", "the CA's validation may reach any node behind the names",
		func(c *config.Config) string { return c.ACME.Challenge }, func(c *config.Config, v string) { c.ACME.Challenge = v })),
	boolean("scan.required", "whether mail waits while clamd is down is the provider's policy, not the node's",
		func(c *config.Config) bool { return c.ScanRequired() }, func(c *config.Config, v bool) { c.Scan.Required = &v }),
	size("scan.max_scan_bytes", "which messages pass unscanned must not depend on the node",
		func(c *config.Config) int64 { return scanBytes(c.Scan.MaxScanBytes) }, func(c *config.Config, v int64) { c.Scan.MaxScanBytes = v }),
}

// scanBytes is the effective [scan] max_scan_bytes (appliance/scan's
// default for 0).
func scanBytes(n int64) int64 {
	if n == 0 {
		return scan.DefaultMaxScanBytes
	}
	return n
}

// Keys are the cluster-wide settings' keys, in the table's order.
func Keys() []string {
	out := make([]string, len(table))
	for i, s := range table {
		out[i] = s.key
	}
	return out
}

// Why is the one-line reason key is cluster-wide ("" for a key that is
// not).
func Why(key string) string {
	if s := lookup(key); s != nil {
		return s.why
	}
	return ""
}

// setting is one cluster-wide key. Its value has a Go type T (int64, bool,
// string, a list, a map), held here as any: get reads the effective value
// from a configuration (defaults filled in), put writes one into it, parse
// reads the text typed on the command line, format prints a value as
// text (what list shows, and what parse reads back), and decode reads the
// JSON of the replicated store.
type setting struct {
	key, why string
	// acme: the key is of [acme], which a node without the table does not
	// use.
	acme   bool
	get    func(c *config.Config) any
	put    func(c *config.Config, v any)
	parse  func(text string) (any, error)
	format func(v any) string
	decode func(data []byte) (any, error)
}

func lookup(key string) *setting {
	for i := range table {
		if table[i].key == key {
			return &table[i]
		}
	}
	return nil
}

// typed makes a setting of the Go type T.
func typed[T any](key, why string, get func(*config.Config) T, put func(*config.Config, T), parse func(string) (T, error), format func(T) string) setting {
	return setting{
		key: key, why: why,
		get:    func(c *config.Config) any { return get(c) },
		put:    func(c *config.Config, v any) { put(c, v.(T)) },
		parse:  func(s string) (any, error) { return parse(s) },
		format: func(v any) string { return format(v.(T)) },
		decode: func(data []byte) (any, error) {
			var v T
			err := unmarshal(data, &v)
			return v, err
		},
	}
}

// acme marks a key of [acme]. On a configuration without the table it
// reads as its type's zero value and writes nothing.
func acme(s setting) setting {
	s.acme = true
	get, put := s.get, s.put
	zero, _ := s.parse("")
	s.get = func(c *config.Config) any {
		if c.ACME == nil {
			return zero
		}
		return get(c)
	}
	s.put = func(c *config.Config, v any) {
		if c.ACME != nil {
			put(c, v)
		}
	}
	return s
}

// nonEmpty refuses an empty value: one whose default differs from node
// to node.
func nonEmpty(s setting, why string) setting {
	parse := s.parse
	s.parse = func(text string) (any, error) {
		if strings.Trim(text, " ,") == "" {
			return nil, errors.New(why)
		}
		return parse(text)
	}
	return s
}

func size(key, why string, get func(*config.Config) int64, put func(*config.Config, int64)) setting {
	return typed(key, why, get, put, func(s string) (int64, error) {
		n, err := bytesize.Parse(s)
		if err != nil {
			return 0, fmt.Errorf("%q: %v: give bytes, or a size with K, M, G or T (1024-based) like 30M", s, err)
		}
		return n, nil
	}, func(n int64) string { return strconv.FormatInt(n, 10) })
}

func plain(key, why string, get func(*config.Config) int64, put func(*config.Config, int64)) setting {
	return typed(key, why, get, put, func(s string) (int64, error) {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", s)
		}
		return n, nil
	}, func(n int64) string { return strconv.FormatInt(n, 10) })
}

func number(key, why string, get func(*config.Config) int, put func(*config.Config, int)) setting {
	return typed(key, why, get, put, func(s string) (int, error) {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", s)
		}
		return n, nil
	}, strconv.Itoa)
}

func boolean(key, why string, get func(*config.Config) bool, put func(*config.Config, bool)) setting {
	return typed(key, why, get, put, func(s string) (bool, error) {
		switch strings.TrimSpace(s) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return false, fmt.Errorf("%q: use true or false", s)
	}, strconv.FormatBool)
}

func text(key, why string, get func(*config.Config) string, put func(*config.Config, string)) setting {
	return typed(key, why, get, put, func(s string) (string, error) { return strings.TrimSpace(s), nil },
		func(s string) string { return s })
}

// duration is a key of [timeouts]: a Go duration, kept as the text the
// TOML has ("5m"); its effective value has the default filled in.
func duration(key, why string, get func(config.TimeoutValues) time.Duration, put func(*config.Timeouts, string)) setting {
	return typed(key, why,
		func(c *config.Config) string { return formatDuration(get(c.Timeouts.Values())) },
		func(c *config.Config, v string) { put(&c.Timeouts, v) },
		func(s string) (string, error) {
			// config's rule refuses what is not a positive duration; a
			// valid one is kept in its shortest form.
			s = strings.TrimSpace(s)
			if d, err := time.ParseDuration(s); err == nil && d > 0 {
				return formatDuration(d), nil
			}
			return s, nil
		},
		func(s string) string { return s })
}

// formatDuration is d as a Go duration without its zero units: "5m", not
// "5m0s"; "1h30m".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// list is a list of words, typed separated by commas ("a, b"); "" is the
// empty list.
func list(key, why string, get func(*config.Config) []string, put func(*config.Config, []string)) setting {
	return typed(key, why, get, put, func(s string) ([]string, error) {
		out := []string{}
		for _, w := range strings.Split(s, ",") {
			if w = strings.TrimSpace(w); w != "" {
				out = append(out, w)
			}
		}
		return out, nil
	}, func(v []string) string { return strings.Join(v, ",") })
}

// routes is [routes]: "domain=host:port" pairs separated by commas; ""
// is no route.
func routes(key, why string, get func(*config.Config) map[string]string, put func(*config.Config, map[string]string)) setting {
	return typed(key, why, get, put, func(s string) (map[string]string, error) {
		out := map[string]string{}
		for _, w := range strings.Split(s, ",") {
			if w = strings.TrimSpace(w); w == "" {
				continue
			}
			dom, hop, ok := strings.Cut(w, "=")
			dom, hop = strings.TrimSpace(dom), strings.TrimSpace(hop)
			if !ok || dom == "" {
				return nil, fmt.Errorf("%q is not domain=host:port (example.org=10.0.0.5:25)", w)
			}
			out[dom] = hop
		}
		return out, nil
	}, func(m map[string]string) string {
		var parts []string
		for _, d := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, d+"="+m[d])
		}
		return strings.Join(parts, ",")
	})
}

// errUnknown and errValue are Set's refusals (ErrInvalid).
func errUnknown(key string) error {
	return &invalidError{fmt.Sprintf("no cluster-wide setting %q: the settings are %s (node-local ones are in each node's TOML)",
		key, strings.Join(Keys(), ", "))}
}

// ErrInvalid is what Set's refusals are (errors.Is): an unknown key or a
// value the configuration's rules refuse. Nothing was written.
var ErrInvalid = errors.New("invalid setting")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
