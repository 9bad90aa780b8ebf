package restore

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Whatever the secrets tar holds, extractSecrets writes only plain files
// directly in the directory, under their base names, never outside it
// nor over the data directory's own files, and never crashes.
func FuzzExtractSecrets(f *testing.F) {
	// The seed corpus is in testdata/fuzz/FuzzExtractSecrets.
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "data")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		names, err := extractSecrets(bytes.NewReader(data), dir)
		if err != nil {
			return
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != len(names) {
			t.Fatalf("%d files written, %d reported", len(entries), len(names))
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || reserved[e.Name()] {
				t.Fatalf("%s: %v %v", e.Name(), fi.Mode(), err)
			}
		}
		if others, _ := os.ReadDir(parent); len(others) != 1 {
			t.Fatalf("written beside the directory: %v", others)
		}
		for _, n := range names {
			if strings.ContainsRune(strings.SplitN(n, " ", 2)[0], '/') {
				t.Fatalf("a name with a directory: %q", n)
			}
		}
	})
}
