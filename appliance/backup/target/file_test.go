package target

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newFileTarget(t *testing.T) (*File, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := Open("file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return st.(*File), dir
}

// A backup directory on a local disk: every scenario of a target.
func TestFileScenarios(t *testing.T) {
	runStoreScenarios(t, func(t *testing.T) Store {
		st, _ := newFileTarget(t)
		return st
	})
}

// What the operator finds on the disk: directories 0700, files 0600,
// no temporary file left, and empty directories gone after a delete.
func TestFileOnDisk(t *testing.T) {
	st, dir := newFileTarget(t)
	put(t, st, "snapshots/20261202T212300Z-48213/sigillo.db", "db")
	for p, want := range map[string]os.FileMode{
		"snapshots":                                   0o700 | os.ModeDir,
		"snapshots/20261202T212300Z-48213":            0o700 | os.ModeDir,
		"snapshots/20261202T212300Z-48213/sigillo.db": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "snapshots/20261202T212300Z-48213"))
	if len(entries) != 1 {
		t.Errorf("set directory holds %d entries, want only sigillo.db", len(entries))
	}
	// A temporary file of a Put under way (or of a crash) is not listed.
	os.WriteFile(filepath.Join(dir, "snapshots/.manifest.json.tmp-123"), []byte("half"), 0o600)
	if got := list(t, st, ""); len(got) != 1 {
		t.Fatalf("listed %v", got)
	}
	os.Remove(filepath.Join(dir, "snapshots/.manifest.json.tmp-123"))
	if err := st.Delete(context.Background(), "snapshots/20261202T212300Z-48213/sigillo.db"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "snapshots")); !os.IsNotExist(err) {
		t.Errorf("empty directories left after the delete: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the root went with them: %v", err)
	}
	if err := st.Delete(context.Background(), "snapshots"); err != nil {
		t.Errorf("delete of a name that is gone: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "d/e"), 0o700)
	if err := st.Delete(context.Background(), "d"); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("delete of a directory: %v", err)
	}
}

// The backup disk is not mounted: the target says so and does not write
// into the empty mount point's parent.
func TestFileMissingRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "usb-backup")
	st, err := Open("file://"+dir, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(context.Background(), "snapshots/x/manifest.json", strings.NewReader("{}"))
	if err == nil || !strings.Contains(err.Error(), "directory "+dir+" does not exist") {
		t.Fatalf("put to a missing root: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the put created the root: %v", err)
	}
	if err := st.List(context.Background(), "", func(string, int64) error { return nil }); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("list of a missing root: %v", err)
	}
	os.WriteFile(dir, nil, 0o600)
	if _, err := st.Get(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("root is a file: %v", err)
	}
}
