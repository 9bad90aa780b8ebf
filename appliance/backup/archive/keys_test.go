package archive_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigillo/appliance/backup/archive"
)

// An operator's key files as age-keygen writes them: the public keys in the recipients file given to
// the servers, the identity kept offline; a backup written with the one is read with the other.
func TestKeyFilesFromAgeKeygen(t *testing.T) {
	dir := t.TempDir()
	a, b := newKey(t), newKey(t)
	pub := filepath.Join(dir, "backup.age.pub")
	os.WriteFile(pub, []byte("# operators\n"+a.Recipient().String()+"\n\n  "+b.Recipient().String()+"  \n"), 0o644)
	idFile := filepath.Join(dir, "backup.age.key")
	os.WriteFile(idFile, []byte("# created: 2026-12-02T21:00:00Z\n# public key: "+b.Recipient().String()+"\n"+b.String()+"\n"), 0o600)

	recs, texts, err := archive.ReadRecipients(pub)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || texts[0] != a.Recipient().String() || texts[1] != b.Recipient().String() {
		t.Fatalf("recipients %v", texts)
	}
	ids, err := archive.ReadIdentities(idFile)
	if err != nil || len(ids) != 1 {
		t.Fatalf("identities: %d, %v", len(ids), err)
	}
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	want := nodeFiles(t)
	m, err := archive.Write(ctx, st, snapshotManifest(), sources(want), archive.Options{Recipients: recs})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := archive.OpenPart(ctx, st, m, "sigillo.toml", ids)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != string(want["sigillo.toml"]) {
		t.Errorf("read back %q, %v", got, err)
	}
}

// Mistakes with key files are told with the file's name and the line, and never echo a secret key.
func TestKeyFileMistakes(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	for _, tc := range []struct{ name, body, says string }{
		{"secret.pub", "# oops\n" + k.String() + "\n", "line 2 is a secret key (an identity), not a recipient"},
		{"garbage.pub", "ssh-ed25519 AAAA\n", "line 1: not an age recipient"},
		{"empty.pub", "# nothing\n", "no recipients in it"},
	} {
		_, _, err := archive.ReadRecipients(write(tc.name, tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && strings.Contains(err.Error(), k.String()) {
			t.Errorf("%s: the error shows the secret key", tc.name)
		}
	}
	if _, _, err := archive.ReadRecipients(filepath.Join(dir, "absent.pub")); err == nil || !strings.Contains(err.Error(), "absent.pub") {
		t.Errorf("absent recipients file: %v", err)
	}
	_, err := archive.ReadIdentities(write("pub-as-id", k.Recipient().String()+"\n"))
	if err == nil || !strings.Contains(err.Error(), "pub-as-id") {
		t.Errorf("public key as identity: %v", err)
	}
	if _, err := archive.ReadIdentities(filepath.Join(dir, "absent.key")); err == nil || !strings.Contains(err.Error(), "absent.key") {
		t.Errorf("absent identity file: %v", err)
	}
}
