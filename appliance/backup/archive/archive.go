// Package archive is the format of a Sigillo backup: a set of parts (the database, the node's TOML,
// its secrets, or raft log entries), each streamed through zstd and, when recipients are given, age,
// stored next to a manifest that lists their sizes and SHA-256 and may be signed with the gestore key.
// The manifest is written last, so a set without one is incomplete and invisible.
//
// What protects what: the SHA-256 of every part finds damage (a flipped bit, a cut upload); age's
// MAC finds any change to an encrypted part; only the manifest's signature, checked against the
// gestore's CA (VerifySignature with roots), shows who wrote the set. An unsigned, unencrypted set
// can be rewritten whole, manifest included, by whoever can write to the target.
//
// It is not where backups go (package target implements Store for directories and S3), nor when
// they are taken (package backup), nor how a node is rebuilt from them (package restore). It holds
// nothing in memory whole: parts stream from their Source to the Store and back.
package archive

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"
)

// FormatVersion is the manifest format this package writes and the newest it reads.
const FormatVersion = 1

// Kinds of set.
const (
	KindSnapshot = "snapshot"
	KindLog      = "log"
)

// ManifestName is the object name of a set's manifest inside its directory.
const ManifestName = "manifest.json"

// Store is one backup target as the format sees it. target.File and target.S3 implement it.
type Store interface {
	// Put writes r to name. The object appears under name only once complete (file: temp file,
	// fsync, rename; S3: single or multipart upload completed); on error nothing is left under name.
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	// Get opens name; when absent the error wraps fs.ErrNotExist.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List calls fn for every object whose name starts with prefix, in lexical order of name.
	List(ctx context.Context, prefix string, fn func(name string, size int64) error) error
	// Delete removes name (absent is not an error).
	Delete(ctx context.Context, name string) error
	// String names the target without credentials ("file:///srv/backup", "s3://bucket/prefix").
	String() string
}

// SnapshotID is the id of a snapshot set: the time (UTC, to the second) and the raft index, e.g.
// "20261202T212300Z-48213". Ids of one target sort by time.
func SnapshotID(t time.Time, index uint64) string {
	return fmt.Sprintf("%s-%d", t.UTC().Format("20060102T150405Z"), index)
}

// LogID is the id of a log set: its first and last index, 20 digits each, so that ids sort by index.
func LogID(first, last uint64) string {
	return fmt.Sprintf("%020d-%020d", first, last)
}

// Manifest describes one set. It is stored as indented JSON under "<kind>s/<id>/manifest.json".
type Manifest struct {
	Format     int              `json:"format"` // FormatVersion
	Kind       string           `json:"kind"`   // KindSnapshot | KindLog
	ID         string           `json:"id"`
	Time       time.Time        `json:"time"`                  // when taken (UTC)
	Index      uint64           `json:"index"`                 // snapshot: applied index of the state; log: last entry
	FirstIndex uint64           `json:"first_index,omitempty"` // log: first entry
	Version    string           `json:"version"`               // Sigillo version that wrote it
	Schema     int              `json:"schema"`                // storage.SchemaVersion()
	Node       string           `json:"node"`
	Encrypted  bool             `json:"encrypted"`
	Recipients []string         `json:"recipients,omitempty"` // age recipients (public), as text
	Counts     map[string]int64 `json:"counts,omitempty"`     // "domains","mailboxes","messages"
	Parts      []PartInfo       `json:"parts"`
	Signature  *Signature       `json:"signature,omitempty"`
}

// PartInfo describes one stored part of a set.
type PartInfo struct {
	Name      string `json:"name"`       // "sigillo.db", "sigillo.toml", "secrets.tar", "entries"
	Kind      string `json:"kind"`       // "database", "config", "secrets", "log"
	Bytes     int64  `json:"bytes"`      // stored (compressed, encrypted) bytes
	SHA256    string `json:"sha256"`     // hex SHA-256 of the stored bytes
	RawBytes  int64  `json:"raw_bytes"`  // before compression
	RawSHA256 string `json:"raw_sha256"` // hex SHA-256 before compression
}

// Signature signs a manifest: Value is over the manifest's json.Marshal encoding with Signature nil.
type Signature struct {
	Algorithm    string   `json:"algorithm"`    // AlgRSA | AlgECDSA
	Certificates [][]byte `json:"certificates"` // DER, signer first
	Value        []byte   `json:"value"`
}

// Signature algorithms.
const (
	AlgRSA   = "RSA-PKCS1v15-SHA256"
	AlgECDSA = "ECDSA-SHA256"
)

// Source is one part to write: Open is called once, by Write, and what it returns is closed by Write.
type Source struct {
	Name string
	Kind string
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Options say how Write protects a set.
type Options struct {
	Recipients []age.Recipient     // none: the parts are stored compressed only (config encrypt = false)
	Signer     crypto.Signer       // nil: unsigned
	Chain      []*x509.Certificate // signer's certificate first
}

// setName names a set in errors: "snapshot 20261202T212300Z-48213".
func (m Manifest) setName() string { return m.Kind + " " + m.ID }

// dir is the set's object prefix: "snapshots/<id>/".
func dir(kind, id string) string { return kind + "s/" + id + "/" }

// Part returns the manifest's entry for the part called name.
func (m Manifest) Part(name string) (PartInfo, bool) {
	for _, p := range m.Parts {
		if p.Name == name {
			return p, true
		}
	}
	return PartInfo{}, false
}

// checkKind refuses a kind this format does not know.
func checkKind(kind string) error {
	if kind != KindSnapshot && kind != KindLog {
		return fmt.Errorf("unknown set kind %q (want %q or %q)", kind, KindSnapshot, KindLog)
	}
	return nil
}

// checkName refuses ids and part names that could escape their set's directory or collide with
// the manifest.
func checkName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty %s", what)
	case name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%s %q: must not be . or .. or contain a slash", what, name)
	case len(name) > 200:
		return fmt.Errorf("%s %q: longer than 200 bytes", what, name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q: control character", what, name)
		}
	}
	return nil
}
