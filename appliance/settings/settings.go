// Package settings is the cluster-wide part of Sigillo's configuration:
// the keys every node must agree on (max_message_bytes, [routes], the
// gestore's identity in [pec], the [acme] names, …), kept as JSON values
// in the replicated key-value table under "settings/<key>", so that one
// command changes them on every node. The table of those keys is in
// table.go; every other key is node-local and read from each node's TOML
// alone.
//
// The rule: once a key is in the store, the store's value wins on every
// node; the bootstrap node seeds the store from its TOML at the first
// start (Seed); a node whose TOML gives another value says so at start
// (Effective's Disagreements, Warn). Values are checked with
// appliance/config's own rules (Config.Validate), never rules of their
// own.
//
// It is not the configuration file (appliance/config), nor the transport
// of `sigillo settings` (appliance/manage and appliance/control), and it
// does not decide which front-end field reads which value: the server
// wires that (Live).
package settings

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"sigillo/appliance/config"
	"sigillo/storage"
)

// Prefix is the replicated key-value table's prefix of the settings: key
// K is stored under Prefix+K.
const Prefix = "settings/"

// KV reads the replicated key-value table; *storage.Store is one.
type KV interface {
	// KV refuses a missing key with storage.ErrNotFound.
	KV(ctx context.Context, key string) ([]byte, error)
	KVKeys(ctx context.Context, prefix string) ([]string, error)
}

// Values are the cluster-wide settings the store has: each key that is
// set, with its value in its Go type. The zero Values has none. Values
// are not changed once made; a change is a new Values.
type Values struct {
	m map[string]any
}

// Has says whether the store has key.
func (v Values) Has(key string) bool {
	_, ok := v.m[key]
	return ok
}

// Text is key's value as `sigillo settings get` prints it, and whether
// the store has it.
func (v Values) Text(key string) (string, bool) {
	s := lookup(key)
	val, ok := v.m[key]
	if s == nil || !ok {
		return "", false
	}
	return s.format(val), true
}

// Len is how many keys the store has.
func (v Values) Len() int { return len(v.m) }

// Equal says whether v and w have the same keys with the same values.
func (v Values) Equal(w Values) bool {
	if len(v.m) != len(w.m) {
		return false
	}
	for k := range v.m {
		a, _ := v.Text(k)
		b, ok := w.Text(k)
		if !ok || a != b {
			return false
		}
	}
	return true
}

// Load reads the settings the store has. A stored key this version does
// not know (a newer node's) is left out; a stored value that does not
// read is an error naming its key.
func Load(ctx context.Context, kv KV) (Values, error) {
	keys, err := kv.KVKeys(ctx, Prefix)
	if err != nil {
		return Values{}, fmt.Errorf("settings: %w", err)
	}
	v := Values{m: map[string]any{}}
	for _, k := range keys {
		s := lookup(strings.TrimPrefix(k, Prefix))
		if s == nil {
			continue
		}
		data, err := kv.KV(ctx, k)
		if storage.IsCode(err, storage.ErrNotFound) {
			continue // removed since KVKeys
		}
		if err != nil {
			return Values{}, fmt.Errorf("settings: %w", err)
		}
		val, err := s.decode(data)
		if err != nil {
			return Values{}, fmt.Errorf("settings: stored %s %s: %w", s.key, data, err)
		}
		v.m[s.key] = val
	}
	return v, nil
}

func unmarshal(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// Set checks value (as typed on the command line) for key with the
// configuration's rules and stores it for the whole cluster. An unknown
// key or a refused value is an error that Is ErrInvalid, and nothing is
// written. The value is stored in its effective form: "0" for
// pec.max_total_bytes is stored as the default it means.
func Set(ctx context.Context, p storage.Proposer, key, value string) error {
	s := lookup(key)
	if s == nil {
		return errUnknown(key)
	}
	val, err := s.check(value)
	if err != nil {
		return err
	}
	data, err := json.Marshal(val)
	if err != nil {
		return fmt.Errorf("setting %s: %w", key, err)
	}
	if _, err := p.Apply(ctx, &storage.PutKV{Key: Prefix + key, Value: data}); err != nil {
		return fmt.Errorf("setting %s: %w", key, err)
	}
	return nil
}

// check reads text and judges it with the configuration's rules, on a
// configuration that is valid but for this key; it returns the effective
// value.
func (s *setting) check(text string) (any, error) {
	val, err := s.parse(text)
	if err != nil {
		return nil, &invalidError{fmt.Sprintf("setting %s: %v", s.key, err)}
	}
	c := config.Default()
	// With [acme] and an http listener, so that an [acme] key is judged
	// on its own: whether this node has the listener http-01 needs is
	// each node's own check at start.
	c.ACME = &config.ACME{}
	c.Listen.HTTP = ":80"
	s.put(&c, val)
	if err := c.Validate(); err != nil {
		return nil, &invalidError{fmt.Sprintf("setting %s: %v", s.key, err)}
	}
	return s.get(&c), nil
}

// Seed stores, for each cluster-wide key the store does not have yet,
// this node's effective value of it (its TOML's, or the default): the
// bootstrap node does it at every start, so that the first start of a
// cluster fixes every key and a key new in this version gets a value. It
// returns the keys it stored. [acme] keys are seeded only from a node
// with [acme].
func Seed(ctx context.Context, kv KV, p storage.Proposer, cfg config.Config) ([]string, error) {
	return seed(ctx, kv, p, cfg, false)
}

// Adopt is Seed for a server alone (no raft_addr), whose TOML stays what
// its operator edits: every cluster-wide key the file gives is written to
// the store when the stored value differs, so a change of the file takes
// effect at the next start as it always did; `settings set` of a key the
// file gives lasts until then. It returns the keys written.
func Adopt(ctx context.Context, kv KV, p storage.Proposer, cfg config.Config) ([]string, error) {
	return seed(ctx, kv, p, cfg, true)
}

func seed(ctx context.Context, kv KV, p storage.Proposer, cfg config.Config, fileWins bool) ([]string, error) {
	have, err := Load(ctx, kv)
	if err != nil {
		return nil, err
	}
	var seeded []string
	for i := range table {
		s := &table[i]
		if s.acme && cfg.ACME == nil {
			continue
		}
		if have.Has(s.key) {
			if !fileWins || !cfg.Gives(s.key) {
				continue
			}
			if stored, ok := have.Text(s.key); ok && stored == s.format(s.get(&cfg)) {
				continue
			}
		}
		data, err := json.Marshal(s.get(&cfg))
		if err != nil {
			return seeded, fmt.Errorf("seed setting %s: %w", s.key, err)
		}
		if _, err := p.Apply(ctx, &storage.PutKV{Key: Prefix + s.key, Value: data}); err != nil {
			return seeded, fmt.Errorf("seed setting %s: %w", s.key, err)
		}
		seeded = append(seeded, s.key)
	}
	return seeded, nil
}

// Disagreement is a key this node's TOML gives another value than the
// cluster uses.
type Disagreement struct {
	Key     string
	TOML    string // this node's TOML's value
	Cluster string // the value the cluster uses (and this node too)
}

// String is the warning a node logs at start.
func (d Disagreement) String() string {
	return fmt.Sprintf("setting %s: this node's TOML says %s, the cluster uses %s (change it with `sigillo settings set %s %s`, or remove it from the TOML)",
		d.Key, quote(d.TOML), quote(d.Cluster), d.Key, shellWord(d.TOML))
}

// quote shows an empty value as "".
func quote(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// shellWord is s as one word of a shell command.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Effective is cfg (this node's TOML) with the cluster's stored values in
// place of its own, and the keys where the TOML gave another value. A key
// the store does not have keeps cfg's value; an [acme] key counts only on
// a node with [acme]. cfg is not changed. The result has not been through
// Validate: a cluster-wide value can still clash with a node-local one
// (acme.challenge http-01 without listen.http), which the caller checks.
func Effective(cfg config.Config, stored Values) (config.Config, []Disagreement) {
	out := cfg
	if cfg.ACME != nil {
		a := *cfg.ACME
		out.ACME = &a
	}
	var ds []Disagreement
	for i := range table {
		s := &table[i]
		val, ok := stored.m[s.key]
		if !ok || (s.acme && cfg.ACME == nil) {
			continue
		}
		if mine, theirs := s.format(s.get(&cfg)), s.format(val); cfg.Gives(s.key) && mine != theirs {
			ds = append(ds, Disagreement{Key: s.key, TOML: mine, Cluster: theirs})
		}
		s.put(&out, val)
	}
	return out, ds
}

// Warn logs each disagreement as one warning.
func Warn(log *slog.Logger, ds []Disagreement) {
	for _, d := range ds {
		log.Warn(d.String(), "setting", d.Key)
	}
}

// Row is one line of `sigillo settings list`.
type Row struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Source is "cluster" (the store has it), "TOML" (this node's file
	// gives it and the store has not) or "default".
	Source string `json:"source"`
	// Disagrees: this node's TOML gives TOML, and the cluster another
	// Value.
	Disagrees bool   `json:"disagrees,omitempty"`
	TOML      string `json:"toml,omitempty"`
	// Why the key is cluster-wide.
	Why string `json:"why"`
}

// Sources of a Row.
const (
	SourceCluster = "cluster"
	SourceTOML    = "TOML"
	SourceDefault = "default"
)

// List is every cluster-wide key as this node sees it: cfg is its TOML.
func List(cfg config.Config, stored Values) []Row {
	rows := make([]Row, len(table))
	for i := range table {
		rows[i] = row(&table[i], cfg, stored)
	}
	return rows
}

// Get is key's Row; an unknown key is an error that Is ErrInvalid.
func Get(cfg config.Config, stored Values, key string) (Row, error) {
	s := lookup(key)
	if s == nil {
		return Row{}, errUnknown(key)
	}
	return row(s, cfg, stored), nil
}

func row(s *setting, cfg config.Config, stored Values) Row {
	r := Row{Key: s.key, Why: s.why, Value: s.format(s.get(&cfg)), Source: SourceDefault}
	if cfg.Gives(s.key) {
		r.Source = SourceTOML
	}
	if val, ok := stored.m[s.key]; ok {
		theirs := s.format(val)
		if r.Source == SourceTOML && r.Value != theirs && !(s.acme && cfg.ACME == nil) {
			r.Disagrees, r.TOML = true, r.Value
		}
		r.Value, r.Source = theirs, SourceCluster
	}
	return r
}
