package archive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"sigillo/appliance/backup/archive"
)

// A node's backup as the engine would hand it over: a database file, the TOML, a secrets tar.
type files map[string][]byte

func nodeFiles(t *testing.T) files {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	db := make([]byte, 1<<20)
	for i := range db {
		// Runs of random bytes between runs of text: compressible but not trivially.
		if i%128 < 48 {
			db[i] = byte(rng.Uint32())
		} else {
			db[i] = "SQLite format 3 mailbox INBOX"[i%29]
		}
	}
	copy(db[4096:], "the secret subject line of message 42")
	return files{
		"sigillo.db":   db,
		"sigillo.toml": []byte("[node]\nid = \"n1\"\n[backup]\ninterval = \"1h\"\n"),
		"secrets.tar":  []byte("acme-storage.key\x00-----BEGIN EC PRIVATE KEY-----\n"),
	}
}

var partKinds = map[string]string{"sigillo.db": "database", "sigillo.toml": "config", "secrets.tar": "secrets"}

func sources(f files) []archive.Source {
	var out []archive.Source
	for _, name := range []string{"sigillo.db", "sigillo.toml", "secrets.tar"} {
		b := f[name]
		out = append(out, archive.Source{Name: name, Kind: partKinds[name], Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}})
	}
	return out
}

var taken = time.Date(2026, 12, 2, 21, 23, 0, 0, time.UTC)

func snapshotManifest() archive.Manifest {
	return archive.Manifest{
		Kind:    archive.KindSnapshot,
		ID:      archive.SnapshotID(taken, 48213),
		Time:    taken,
		Index:   48213,
		Version: "test",
		Schema:  7,
		Node:    "n1",
		Counts:  map[string]int64{"domains": 2, "mailboxes": 5, "messages": 1234},
	}
}

// newKey makes an age key pair and returns the identity.
func newKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func readPart(t *testing.T, st archive.Store, m archive.Manifest, part string, ids []age.Identity) ([]byte, error) {
	t.Helper()
	rc, err := archive.OpenPart(context.Background(), st, m, part, ids)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestIDsSortByTimeAndIndex(t *testing.T) {
	if got := archive.SnapshotID(time.Date(2026, 12, 2, 22, 23, 0, 0, time.FixedZone("CET", 3600)), 48213); got != "20261202T212300Z-48213" {
		t.Errorf("SnapshotID = %q", got)
	}
	if got := archive.LogID(48214, 48990); got != "00000000000000048214-00000000000000048990" {
		t.Errorf("LogID = %q", got)
	}
}

// A set written clear and one written for two age recipients both read back byte for byte; what is
// stored is compressed (and encrypted: no plaintext on the target), and Sets lists both.
func TestASetReadsBackByteForByte(t *testing.T) {
	ctx := context.Background()
	want := nodeFiles(t)
	alice, bob := newKey(t), newKey(t)
	for _, tc := range []struct {
		name       string
		recipients []age.Recipient
		ids        []age.Identity
	}{
		{"clear", nil, nil},
		{"encrypted", []age.Recipient{alice.Recipient(), bob.Recipient()}, []age.Identity{bob}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			st := fileTarget(t, root)
			m, err := archive.Write(ctx, st, snapshotManifest(), sources(want), archive.Options{Recipients: tc.recipients})
			if err != nil {
				t.Fatal(err)
			}
			if m.Format != 1 || m.Encrypted != (tc.recipients != nil) || len(m.Parts) != 3 {
				t.Fatalf("manifest: format %d encrypted %v parts %d", m.Format, m.Encrypted, len(m.Parts))
			}
			if tc.recipients != nil && !reflect.DeepEqual(m.Recipients, []string{alice.Recipient().String(), bob.Recipient().String()}) {
				t.Errorf("recipients %v", m.Recipients)
			}
			for _, p := range m.Parts {
				got, err := readPart(t, st, m, p.Name, tc.ids)
				if err != nil {
					t.Fatalf("read %s: %v", p.Name, err)
				}
				if !bytes.Equal(got, want[p.Name]) {
					t.Errorf("part %s: read %d bytes, wrote %d, not the same", p.Name, len(got), len(want[p.Name]))
				}
				if p.RawBytes != int64(len(want[p.Name])) || p.Kind != partKinds[p.Name] {
					t.Errorf("part %s: manifest says %d raw bytes, kind %q", p.Name, p.RawBytes, p.Kind)
				}
				if err := archive.CheckPart(ctx, st, m, p.Name); err != nil {
					t.Errorf("CheckPart: %v", err)
				}
				stored, err := os.ReadFile(filepath.Join(root, "snapshots", m.ID, p.Name))
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(stored)) != p.Bytes {
					t.Errorf("part %s: %d bytes stored, manifest says %d", p.Name, len(stored), p.Bytes)
				}
				if tc.recipients != nil && !bytes.HasPrefix(stored, []byte("age-encryption.org/v1\n")) {
					t.Errorf("part %s is not an age file", p.Name)
				}
				if tc.recipients == nil && !bytes.HasPrefix(stored, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
					t.Errorf("part %s is not a zstd stream", p.Name)
				}
			}
			db, _ := m.Part("sigillo.db")
			t.Logf("%s: sigillo.db %d raw bytes stored as %d", tc.name, db.RawBytes, db.Bytes)
			if db.Bytes >= db.RawBytes {
				t.Errorf("sigillo.db not compressed: %d → %d", db.RawBytes, db.Bytes)
			}

			// The manifest on the target is indented JSON and is what Write returned.
			body, err := os.ReadFile(filepath.Join(root, "snapshots", m.ID, "manifest.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(body, []byte("\n  \"kind\": \"snapshot\"")) {
				t.Errorf("manifest not indented JSON:\n%s", body)
			}
			sets, err := archive.Sets(ctx, st, archive.KindSnapshot)
			if err != nil || len(sets) != 1 || !reflect.DeepEqual(sets[0], m) {
				t.Fatalf("Sets = %+v, %v; want the one written", sets, err)
			}
			if logs, err := archive.Sets(ctx, st, archive.KindLog); err != nil || len(logs) != 0 {
				t.Errorf("log sets %v, %v", logs, err)
			}
		})
	}
}

// storedPath is where the file target keeps a part.
func storedPath(root string, m archive.Manifest, part string) string {
	return filepath.Join(root, m.Kind+"s", m.ID, part)
}

func flipByte(t *testing.T, path string, at func(size int) int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at(len(b))] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A flipped byte anywhere in a stored part (its start, middle or last byte): CheckPart and OpenPart
// both refuse it, naming the snapshot and the part, and the other parts still read.
func TestAFlippedByteIsFoundInEveryPart(t *testing.T) {
	ctx := context.Background()
	want := nodeFiles(t)
	key := newKey(t)
	where := map[string]func(int) int{
		"first":  func(int) int { return 0 },
		"middle": func(n int) int { return n / 2 },
		"last":   func(n int) int { return n - 1 },
	}
	for _, enc := range []bool{false, true} {
		var opt archive.Options
		if enc {
			opt.Recipients = []age.Recipient{key.Recipient()}
		}
		for _, part := range []string{"sigillo.db", "sigillo.toml", "secrets.tar"} {
			for pos, at := range where {
				t.Run(fmt.Sprintf("encrypted=%v/%s/%s", enc, part, pos), func(t *testing.T) {
					root := t.TempDir()
					st := fileTarget(t, root)
					m, err := archive.Write(ctx, st, snapshotManifest(), sources(want), opt)
					if err != nil {
						t.Fatal(err)
					}
					flipByte(t, storedPath(root, m, part), at)
					prefix := "snapshot " + m.ID + ": part " + part + ": "

					err = archive.CheckPart(ctx, st, m, part)
					if err == nil || !strings.HasPrefix(err.Error(), prefix+"SHA-256 mismatch (stored ") || !errors.Is(err, archive.ErrDamaged) {
						t.Errorf("CheckPart: %v", err)
					}
					_, err = readPart(t, st, m, part, []age.Identity{key})
					if err == nil || !strings.HasPrefix(err.Error(), prefix) || !errors.Is(err, archive.ErrDamaged) {
						t.Errorf("OpenPart: %v", err)
					}
					for _, other := range m.Parts {
						if other.Name == part {
							continue
						}
						if got, err := readPart(t, st, m, other.Name, []age.Identity{key}); err != nil || !bytes.Equal(got, want[other.Name]) {
							t.Errorf("undamaged part %s: %v", other.Name, err)
						}
					}
				})
			}
		}
	}
}

// A part cut short, one with bytes appended, and one gone: each refused by name.
func TestAPartShorterLongerOrMissingIsRefused(t *testing.T) {
	ctx := context.Background()
	want := nodeFiles(t)
	key := newKey(t)
	for _, enc := range []bool{false, true} {
		var opt archive.Options
		if enc {
			opt.Recipients = []age.Recipient{key.Recipient()}
		}
		for _, tc := range []struct {
			name, says string
			damage     func(path string) error
		}{
			{"truncated", "truncated: ", func(p string) error {
				fi, err := os.Stat(p)
				if err != nil {
					return err
				}
				return os.Truncate(p, fi.Size()-100)
			}},
			{"longer", "longer than the manifest says", func(p string) error {
				f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = f.Write([]byte("appended"))
				return err
			}},
			{"missing", "missing on file://", os.Remove},
		} {
			t.Run(fmt.Sprintf("encrypted=%v/%s", enc, tc.name), func(t *testing.T) {
				root := t.TempDir()
				st := fileTarget(t, root)
				m, err := archive.Write(ctx, st, snapshotManifest(), sources(want), opt)
				if err != nil {
					t.Fatal(err)
				}
				if err := tc.damage(storedPath(root, m, "sigillo.db")); err != nil {
					t.Fatal(err)
				}
				prefix := "snapshot " + m.ID + ": part sigillo.db: "
				err = archive.CheckPart(ctx, st, m, "sigillo.db")
				if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.says) || !errors.Is(err, archive.ErrDamaged) {
					t.Errorf("CheckPart: %v", err)
				}
				_, err = readPart(t, st, m, "sigillo.db", []age.Identity{key})
				if err == nil || !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.says) {
					t.Errorf("OpenPart: %v", err)
				}
				if tc.name == "missing" && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("a missing part does not wrap fs.ErrNotExist: %v", err)
				}
			})
		}
	}
}

// The wrong age key, and no key at all, are told apart from damage.
func TestTheWrongIdentityIsToldClearly(t *testing.T) {
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	right, wrong := newKey(t), newKey(t)
	m, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{Recipients: []age.Recipient{right.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = archive.OpenPart(ctx, st, m, "sigillo.db", []age.Identity{wrong})
	if err == nil || !strings.Contains(err.Error(), "part sigillo.db: no identity matches this backup's recipients ("+right.Recipient().String()) {
		t.Errorf("wrong identity: %v", err)
	}
	if errors.Is(err, archive.ErrDamaged) {
		t.Errorf("a wrong key is not damage: %v", err)
	}
	_, err = archive.OpenPart(ctx, st, m, "sigillo.db", nil)
	if err == nil || !strings.Contains(err.Error(), "an age identity is needed") {
		t.Errorf("no identity: %v", err)
	}
	// The right key among others works.
	if _, err := readPart(t, st, m, "sigillo.db", []age.Identity{wrong, right}); err != nil {
		t.Errorf("right identity second: %v", err)
	}
	if _, err := archive.OpenPart(ctx, st, m, "nosuch", []age.Identity{right}); err == nil || !strings.Contains(err.Error(), `no part "nosuch" (it has sigillo.db, sigillo.toml, secrets.tar)`) {
		t.Errorf("unknown part: %v", err)
	}
}

// Parts are written before the manifest: a set whose manifest never arrived is not listed, and a
// failed write leaves nothing behind and says which part failed on which target.
func TestAnIncompleteSetIsNotListed(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := fileTarget(t, root)
	files := nodeFiles(t)

	// A set that was being written when the node died: parts, no manifest.
	dead := filepath.Join(root, "snapshots", "20261202T200000Z-100")
	if err := os.MkdirAll(dead, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead, "sigillo.db"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A write whose second part cannot be put (something else holds its name): fails, cleans up.
	m := snapshotManifest()
	blocked := filepath.Join(root, "snapshots", m.ID, "sigillo.toml", "x")
	if err := os.MkdirAll(blocked, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := archive.Write(ctx, st, m, sources(files), archive.Options{})
	if err == nil || !strings.Contains(err.Error(), "to "+st.String()+": part sigillo.toml: ") {
		t.Fatalf("Write onto a blocked name: %v", err)

	}
	if _, err := os.Stat(storedPath(root, m, "sigillo.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the part written before the failure is still there: %v", err)
	}
	// A source that fails half way (the database file went away): same.
	os.RemoveAll(filepath.Join(root, "snapshots", m.ID))
	srcs := sources(files)
	srcs[2].Open = func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("half"), errReader{errors.New("disk gone")})), nil
	}
	_, err = archive.Write(ctx, st, m, srcs, archive.Options{})
	if err == nil || !strings.Contains(err.Error(), "part secrets.tar: read: disk gone") {
		t.Fatalf("Write of a failing source: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "snapshots", m.ID))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	sets, err := archive.Sets(ctx, st, archive.KindSnapshot)
	if err != nil || len(sets) != 0 {
		t.Errorf("Sets = %v, %v; want none", sets, err)
	}

	// Now one complete set: listed; the dead one is still not.
	if _, err := archive.Write(ctx, st, m, sources(files), archive.Options{}); err != nil {
		t.Fatal(err)
	}
	// Writing the same set again is refused (it would replace parts under a live manifest).
	if _, err := archive.Write(ctx, st, m, sources(files), archive.Options{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("rewrite of a set: %v", err)
	}
	sets, err = archive.Sets(ctx, st, archive.KindSnapshot)
	if err != nil || len(sets) != 1 || sets[0].ID != m.ID {
		t.Errorf("Sets = %v, %v; want %s only", sets, err, m.ID)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// Sets returns complete sets oldest first, and reports an unreadable manifest instead of hiding it.
func TestSetsAreOldestFirstAndBadManifestsReported(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := fileTarget(t, root)
	f := nodeFiles(t)
	for _, idx := range []uint64{300, 100, 200} {
		m := snapshotManifest()
		m.Time = taken.Add(time.Duration(idx) * time.Minute)
		m.Index = idx
		m.ID = archive.SnapshotID(m.Time, idx)
		if _, err := archive.Write(ctx, st, m, sources(f), archive.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	logm := archive.Manifest{Kind: archive.KindLog, ID: archive.LogID(301, 350), FirstIndex: 301, Index: 350, Time: taken}
	if _, err := archive.Write(ctx, st, logm, sources(f)[:1], archive.Options{}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(root, "snapshots", "20261203T000000Z-999")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, "manifest.json"), []byte("{not json"), 0o600)

	sets, err := archive.Sets(ctx, st, archive.KindSnapshot)
	var idx []uint64
	for _, s := range sets {
		idx = append(idx, s.Index)
	}
	if !reflect.DeepEqual(idx, []uint64{100, 200, 300}) {
		t.Errorf("indexes %v, want oldest first", idx)
	}
	if err == nil || !strings.Contains(err.Error(), "snapshot 20261203T000000Z-999 on file://") {
		t.Errorf("bad manifest not reported: %v", err)
	}
	logs, err := archive.Sets(ctx, st, archive.KindLog)
	if err != nil || len(logs) != 1 || logs[0].FirstIndex != 301 {
		t.Errorf("log sets %v, %v", logs, err)
	}

	// DeleteSet removes one set and only it.
	if err := archive.DeleteSet(ctx, st, sets[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", sets[0].ID, "sigillo.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("part left after DeleteSet: %v", err)
	}
	after, _ := archive.Sets(ctx, st, archive.KindSnapshot)
	if len(after) != 2 || after[0].ID != sets[1].ID {
		t.Errorf("after DeleteSet: %v", after)
	}
}

// A manifest written by a newer Sigillo (format 2) is refused with a clear error, not misread.
func TestANewerFormatIsRefused(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st := fileTarget(t, root)
	m, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "snapshots", m.ID, "manifest.json")
	body, _ := os.ReadFile(path)
	body = bytes.Replace(body, []byte(`"format": 1`), []byte(`"format": 2`), 1)
	os.WriteFile(path, body, 0o600)
	_, err = archive.ReadManifest(ctx, st, archive.KindSnapshot, m.ID)
	if err == nil || !strings.Contains(err.Error(), "format 2 is newer than this Sigillo reads (up to 1)") {
		t.Errorf("format 2: %v", err)
	}
	// And a manifest moved under another id is not taken for that set.
	other := "20261202T000000Z-1"
	os.MkdirAll(filepath.Join(root, "snapshots", other), 0o700)
	body = bytes.Replace(body, []byte(`"format": 2`), []byte(`"format": 1`), 1)
	os.WriteFile(filepath.Join(root, "snapshots", other, "manifest.json"), body, 0o600)
	if _, err := archive.ReadManifest(ctx, st, archive.KindSnapshot, other); err == nil || !strings.Contains(err.Error(), "the manifest is that of snapshot "+m.ID) {
		t.Errorf("moved manifest: %v", err)
	}
}

func TestBadPartNamesAreRefused(t *testing.T) {
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	for _, name := range []string{"", "..", "a/b", "manifest.json"} {
		srcs := sources(nodeFiles(t))
		srcs[0].Name = name
		if _, err := archive.Write(ctx, st, snapshotManifest(), srcs, archive.Options{}); err == nil {
			t.Errorf("part name %q accepted", name)
		}
	}
	m := snapshotManifest()
	m.ID = "../x"
	if _, err := archive.Write(ctx, st, m, sources(nodeFiles(t)), archive.Options{}); err == nil {
		t.Error("id ../x accepted")
	}
	m = snapshotManifest()
	m.Kind = "snap"
	if _, err := archive.Write(ctx, st, m, sources(nodeFiles(t)), archive.Options{}); err == nil {
		t.Error("kind snap accepted")
	}
}

// The manifest as JSON keeps the field names of the agreed format.
func TestManifestJSONFieldNames(t *testing.T) {
	b, _ := json.Marshal(archive.Manifest{FirstIndex: 1, Recipients: []string{"a"}, Counts: map[string]int64{"x": 1},
		Parts: []archive.PartInfo{{}}, Signature: &archive.Signature{}})
	for _, f := range []string{"format", "kind", "id", "time", "index", "first_index", "version", "schema", "node", "encrypted",
		"recipients", "counts", "parts", "signature", "name", "bytes", "sha256", "raw_bytes", "raw_sha256", "algorithm", "certificates", "value"} {
		if !bytes.Contains(b, []byte(`"`+f+`":`)) {
			t.Errorf("no %q in %s", f, b)
		}
	}
}

// The raw length and SHA-256 are checked too: a manifest edited by hand (unsigned) to claim other
// content is caught when the part is read, even though the stored bytes match.
func TestTheRawContentIsCheckedAgainstTheManifest(t *testing.T) {
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	m, err := archive.Write(ctx, st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	edited := m
	edited.Parts = append([]archive.PartInfo(nil), m.Parts...)
	edited.Parts[0].RawSHA256 = strings.Repeat("ab", 32)
	edited.Parts[1].RawBytes--
	edited.Parts[2].RawBytes++
	if err := archive.CheckPart(ctx, st, edited, "sigillo.db"); err != nil {
		t.Errorf("CheckPart looks at stored bytes only: %v", err)
	}
	for part, says := range map[string]string{
		"sigillo.db":   "SHA-256 mismatch once decompressed",
		"sigillo.toml": "longer than the manifest says once decompressed",
		"secrets.tar":  "bytes once decompressed, manifest says",
	} {
		_, err := readPart(t, st, edited, part, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "snapshot "+m.ID+": part "+part+": ") || !strings.Contains(err.Error(), says) || !errors.Is(err, archive.ErrDamaged) {
			t.Errorf("%s: %v", part, err)
		}
	}
}
