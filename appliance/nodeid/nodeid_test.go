package nodeid_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigillo/appliance/nodeid"
)

func TestFreshDataDirGetsARandomIDKeptAcrossStarts(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	idA, err := nodeid.Load(a, filepath.Join(a, "raft"), "")
	if err != nil {
		t.Fatal(err)
	}
	idB, err := nodeid.Load(b, filepath.Join(b, "raft"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two fresh data directories: %s and %s", idA, idB)
	if !regexp.MustCompile(`^n-[a-z2-7]{8}$`).MatchString(idA) {
		t.Errorf("id %q is not n- and 8 base32 characters", idA)
	}
	if idA == idB || idA == nodeid.Legacy {
		t.Errorf("fresh ids %q and %q: want two different random ids", idA, idB)
	}
	again, err := nodeid.Load(a, filepath.Join(a, "raft"), "")
	if err != nil || again != idA {
		t.Errorf("second start: %q, %v; want %q", again, err, idA)
	}
	b2, _ := os.ReadFile(filepath.Join(a, nodeid.FileName))
	if strings.TrimSpace(string(b2)) != idA {
		t.Errorf("node-id file holds %q, want %q", b2, idA)
	}
}

func TestDataDirWithRaftStateButNoIDIsNode1(t *testing.T) {
	dir := t.TempDir()
	raftDir := filepath.Join(dir, "raft")
	os.MkdirAll(raftDir, 0o700)
	os.WriteFile(filepath.Join(raftDir, "raft.db"), []byte("a raft log"), 0o600)
	id, err := nodeid.Load(dir, raftDir, "")
	if err != nil || id != nodeid.Legacy {
		t.Fatalf("existing raft state: %q, %v; want %q", id, err, nodeid.Legacy)
	}
	if _, err := nodeid.Load(dir, raftDir, "mx2"); err == nil {
		t.Error("a configured node_id other than the stored one was accepted")
	} else {
		t.Log(err)
	}
	if id, err := nodeid.Load(dir, raftDir, nodeid.Legacy); err != nil || id != nodeid.Legacy {
		t.Errorf("configured node1 on a node1 directory: %q, %v", id, err)
	}
}

func TestConfiguredID(t *testing.T) {
	dir := t.TempDir()
	id, err := nodeid.Load(dir, filepath.Join(dir, "raft"), "mx1.example")
	if err != nil || id != "mx1.example" {
		t.Fatalf("configured id: %q, %v", id, err)
	}
	// Later left out of the configuration: the stored one stays.
	if id, err := nodeid.Load(dir, filepath.Join(dir, "raft"), ""); err != nil || id != "mx1.example" {
		t.Errorf("after removing node_id from the config: %q, %v", id, err)
	}
	// An old data directory with raft state cannot take a new name.
	old := t.TempDir()
	os.MkdirAll(filepath.Join(old, "raft", "snapshots", "1-2-3"), 0o700)
	if _, err := nodeid.Load(old, filepath.Join(old, "raft"), "mx1"); err == nil {
		t.Error("renaming a node1 data directory was accepted")
	}
	for _, bad := range []string{" ", "-x", "a b", "a/b", strings.Repeat("x", 65), "é"} {
		if _, err := nodeid.Load(t.TempDir(), "", bad); err == nil {
			t.Errorf("node_id %q accepted", bad)
		}
	}
}

func TestDamagedFileIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, nodeid.FileName), []byte("\n"), 0o600)
	if _, err := nodeid.Load(dir, filepath.Join(dir, "raft"), ""); err == nil {
		t.Error("an empty node-id file was accepted")
	}
}
