package archive_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
)

// FuzzReadManifest: whatever lies in a manifest.json on a target, ReadManifest returns a clear error
// or a manifest that encodes back to one it reads the same.
func FuzzReadManifest(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzReadManifest (a snapshot manifest, format 2, a bad signature, a part
	// name that climbs out, another set's manifest, not JSON).
	root := f.TempDir()
	st, err := target.NewFile(root)
	if err != nil {
		f.Fatal(err)
	}
	const id = "20261202T212300Z-48213"
	dir := filepath.Join(root, "snapshots", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), body, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := archive.ReadManifest(context.Background(), st, archive.KindSnapshot, id)
		if err != nil {
			return
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("a manifest read cannot be encoded: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), again, 0o600); err != nil {
			t.Fatal(err)
		}
		m2, err := archive.ReadManifest(context.Background(), st, archive.KindSnapshot, id)
		if err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("manifest changed in a round trip:\n%+v\n%+v", m, m2)
		}
	})
}
