package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oldStore makes a database the way a build that knew only the first n
// migrations left it, with one domain in it, closed.
func oldStore(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sigillo.db")
	db, err := openDBWith(path, migrations[:n])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO domains(name, created_at) VALUES('kept.test', 1)"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// files reads the database and whatever SQLite keeps beside it.
func files(t *testing.T, path string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	names, _ := filepath.Glob(path + "*")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(n)] = b
	}
	return out
}

func sameFiles(t *testing.T, before, after map[string][]byte) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("files %v, then %v", keys(before), keys(after))
	}
	for n, b := range before {
		if !bytes.Equal(b, after[n]) {
			t.Fatalf("%s changed (%d bytes, then %d)", n, len(b), len(after[n]))
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	from, _, err := NeedsMigration(path)
	if err != nil {
		t.Fatal(err)
	}
	return from
}

// An upgrade from version 5 whose migration 9 fails (after 6, 7 and 8
// and the first statement of 9 ran): the file is the same, byte for byte,
// the build of version 5 still opens it and finds its data, and the
// current build then migrates it.
func TestAFailedMigrationLeavesTheDatabaseAsItWas(t *testing.T) {
	path := oldStore(t, 5)
	before := files(t, path)
	if _, ok := before["sigillo.db"]; !ok || len(before) != 1 {
		t.Fatalf("after a clean close: %v", keys(before))
	}

	broken := append(append([]string{}, migrations[:8]...),
		"CREATE TABLE half_done (x INTEGER); UPDATE domains SET name = 'changed.test'; SELECT no_such_function();")
	_, err := openDBWith(path, broken)
	if err == nil {
		t.Fatal("a failing migration opened the database")
	}
	for _, want := range []string{"schema migration 9, upgrading from version 5 to 9", "no_such_function", "still at version 5"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	t.Logf("refused: %v", err)
	sameFiles(t, before, files(t, path))

	// The old build opens it as it was.
	db, err := openDBWith(path, migrations[:5])
	if err != nil {
		t.Fatalf("the old schema's build: %v", err)
	}
	var name string
	if err := db.QueryRow("SELECT name FROM domains").Scan(&name); err != nil || name != "kept.test" {
		t.Fatalf("domain %q, %v", name, err)
	}
	var tables int
	db.QueryRow("SELECT count(*) FROM sqlite_master WHERE name IN ('half_done', 'pec_received', 'pec_track')").Scan(&tables)
	db.Close()
	// pec_track is migration 4's; the others would be 6's and 9's.
	if tables != 1 {
		t.Fatalf("%d of the tables half_done, pec_received, pec_track", tables)
	}
	if v := userVersion(t, path); v != 5 {
		t.Fatalf("version %d", v)
	}

	// And this build migrates it, all of it.
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := s.Domains(context.Background())
	s.Close()
	if err != nil || len(ds) != 1 || ds[0].Name != "kept.test" {
		t.Fatalf("domains %+v, %v", ds, err)
	}
	if v := userVersion(t, path); v != SchemaVersion() {
		t.Fatalf("version %d after the upgrade", v)
	}
}

// A database from a newer Sigillo is refused by Open, by Restore and by
// NeedsMigration, naming both versions, and nothing in it is written.
func TestADatabaseFromANewerVersionIsRefusedUntouched(t *testing.T) {
	newer := SchemaVersion() + 1
	path := oldStore(t, SchemaVersion())
	db, err := openDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("CREATE TABLE from_the_future (x INTEGER); PRAGMA user_version = %d", newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before := files(t, path)

	want := fmt.Sprintf("schema version %d, and this build of Sigillo knows versions up to %d", newer, SchemaVersion())
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrSchemaNewer) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want ErrSchemaNewer saying %q", what, err, want)
		}
		sameFiles(t, before, files(t, path))
	}
	_, err = Open(path)
	check("open", err)
	t.Logf("refused: %v", err)
	from, to, err := NeedsMigration(path)
	check("needs migration", err)
	if from != newer || to != SchemaVersion() {
		t.Fatalf("NeedsMigration: %d → %d", from, to)
	}
	s, _ := newStore(t)
	check("restore", s.Restore(context.Background(), path))
	if ds, err := s.Domains(context.Background()); err != nil || len(ds) != 0 {
		t.Fatalf("the store restored into: %+v, %v", ds, err)
	}
}

// NeedsMigration peeks at the version without changing the file: what
// `sigillo serve` asks before it backs a database up and opens it.
func TestNeedsMigrationTellsWhetherOpenWillMigrate(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none", "sigillo.db")
	if from, to, err := NeedsMigration(missing); err != nil || from != to || to != SchemaVersion() {
		t.Fatalf("a new store: %d → %d, %v", from, to, err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
		t.Fatalf("NeedsMigration made %s: %v", filepath.Dir(missing), err)
	}

	path := oldStore(t, 7)
	before := files(t, path)
	if from, to, err := NeedsMigration(path); err != nil || from != 7 || to != SchemaVersion() {
		t.Fatalf("version 7: %d → %d, %v", from, to, err)
	}
	sameFiles(t, before, files(t, path))
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if from, to, err := NeedsMigration(path); err != nil || from != to {
		t.Fatalf("after Open: %d → %d, %v", from, to, err)
	}

	garbage := filepath.Join(t.TempDir(), "sigillo.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 100), 0o600)
	if _, _, err := NeedsMigration(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("a file that is no database: %v", err)
	}
}
