package archive_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
)

// fileTarget is the file:// target over dir, as a node configured with url = "file://<dir>" has.
func fileTarget(t *testing.T, dir string) *target.File {
	t.Helper()
	f, err := target.NewFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The same format on an S3 bucket (versitygw): a signed, encrypted set with a part larger than one
// multipart chunk reads back; a flipped byte in the bucket is found by name; DeleteSet empties it.
func TestASetOnS3(t *testing.T) {
	ctx := context.Background()
	s3 := apptest.StartS3(t)
	s3.MakeBucket(t, "backups")
	creds := filepath.Join(t.TempDir(), "s3.env")
	s3.WriteCredentials(t, creds)
	st, err := target.Open(s3.URL("backups", "sigillo"), creds)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	signKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g := newGestore(t, signKey)
	const size = 40 << 20 // more than the 16 MiB of one upload part, even compressed
	db := newBigDB(size)
	srcs := sources(nodeFiles(t))
	srcs[0].Open = func(context.Context) (io.ReadCloser, error) { return io.NopCloser(db), nil }
	m, err := archive.Write(ctx, st, snapshotManifest(), srcs, archive.Options{
		Recipients: []age.Recipient{key.Recipient()}, Signer: g.key, Chain: g.chain,
	})
	if err != nil {
		t.Fatal(err)
	}
	sets, err := archive.Sets(ctx, st, archive.KindSnapshot)
	if err != nil || len(sets) != 1 {
		t.Fatalf("Sets on S3: %v, %v", sets, err)
	}
	if err := archive.VerifySignature(sets[0], g.roots); err != nil {
		t.Error(err)
	}
	rc, err := archive.OpenPart(ctx, st, sets[0], "sigillo.db", []age.Identity{key})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(db.h.Sum(nil)) {
		t.Fatalf("read back from S3: %d bytes, %v", n, err)
	}
	dbInfo, _ := m.Part("sigillo.db")
	t.Logf("S3: sigillo.db %d MiB stored as %d MiB", dbInfo.RawBytes>>20, dbInfo.Bytes>>20)

	// Bit rot in the bucket: the object is rewritten with one byte changed.
	name := "snapshots/" + m.ID + "/sigillo.toml"
	obj, err := st.Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(obj)
	obj.Close()
	b[len(b)/2] ^= 0x80
	if _, err := st.Put(ctx, name, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	want := "snapshot " + m.ID + ": part sigillo.toml: SHA-256 mismatch"
	if err := archive.CheckPart(ctx, st, m, "sigillo.toml"); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CheckPart on S3: %v", err)
	}
	if _, err := readPart(t, st, m, "sigillo.toml", []age.Identity{key}); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("OpenPart on S3: %v", err)
	}

	if err := archive.DeleteSet(ctx, st, m); err != nil {
		t.Fatal(err)
	}
	var left []string
	st.List(ctx, "", func(name string, _ int64) error { left = append(left, name); return nil })
	if len(left) != 0 {
		t.Errorf("left in the bucket after DeleteSet: %v", left)
	}
}
