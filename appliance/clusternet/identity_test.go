package clusternet_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigillo/appliance/clusternet"
)

// identityPEM issues a node certificate of ca for nodeID, as a join does.
func identityPEM(t *testing.T, ca *clusternet.CA, nodeID string) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, pub, err := clusternet.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Issue(nodeID, pub, now)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// TestIdentitySavedAndLoaded: a node that has joined keeps its certificate,
// key (mode 0600) and the CA in its directory and finds them at restart; a
// node that has not joined finds nothing (os.ErrNotExist); a key others can
// read, or a certificate of another CA, is refused.
func TestIdentitySavedAndLoaded(t *testing.T) {
	ca := mustCA(t, "c")
	certPEM, keyPEM := identityPEM(t, ca, "n1")
	dir := filepath.Join(t.TempDir(), "cluster")

	if _, err := clusternet.LoadIdentity(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before the join: %v, want os.ErrNotExist", err)
	}
	if err := clusternet.SaveIdentity(dir, certPEM, keyPEM, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, clusternet.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	id, err := clusternet.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.NodeID != "n1" || !id.CA.Equal(ca.Cert) || len(id.Cert.Certificate) != 2 || id.Cert.Leaf == nil {
		t.Fatalf("identity %q, %d certificates in the chain", id.NodeID, len(id.Cert.Certificate))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("%d files in the identity directory, want 3 (no leftovers)", len(entries))
	}

	// Saving again (a renewed certificate) replaces the files.
	certPEM2, keyPEM2 := identityPEM(t, ca, "n1")
	if err := clusternet.SaveIdentity(dir, certPEM2, keyPEM2, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if id2, err := clusternet.LoadIdentity(dir); err != nil || id2.Cert.Leaf.Equal(id.Cert.Leaf) {
		t.Fatalf("after a renewal: %v", err)
	}

	if err := os.Chmod(filepath.Join(dir, clusternet.KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := clusternet.LoadIdentity(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: %v", err)
	}

	other := mustCA(t, "other")
	if err := clusternet.SaveIdentity(t.TempDir(), certPEM, keyPEM, other.CertPEM); err == nil || !strings.Contains(err.Error(), "not signed by the cluster CA") {
		t.Fatalf("a certificate of another CA: %v", err)
	}
	if err := clusternet.SaveIdentity(t.TempDir(), certPEM, keyPEM2, ca.CertPEM); err == nil {
		t.Fatal("a key of another certificate was saved")
	}

	if err := os.Chmod(filepath.Join(dir, clusternet.KeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, clusternet.CertFile))
	if _, err := clusternet.LoadIdentity(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("without node.crt: %v, want os.ErrNotExist", err)
	}
}
