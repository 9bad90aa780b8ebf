package archive_test

import (
	"context"
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/devtoken"
	"sigillo/appliance/signer"
)

// The gestore key as a server has it, in a PKCS#11 token (SoftHSM2, through crypto11), signs a
// backup set, and the set verifies against the gestore certificate.
func TestTheGestoreKeyInATokenSignsABackup(t *testing.T) {
	apptest.NeedTool(t, "softhsm2-util")
	ctx := context.Background()
	tok, err := devtoken.Ensure(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	pin, err := os.ReadFile(tok.PinFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := signer.Config{PKCS11Module: tok.Module, TokenLabel: tok.TokenLabel, PIN: strings.TrimSpace(string(pin)), KeyLabel: tok.KeyLabel}
	cert, err := signer.Init(cfg, signer.InitOptions{ProviderName: "Sigillo (test)", ServiceAddress: "posta-certificata@localhost"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := signer.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	st := fileTarget(t, t.TempDir())
	m := snapshotManifest()
	m.Time = time.Now() // within the certificate's validity, which starts about now
	m.ID = archive.SnapshotID(m.Time, m.Index)
	m, err = archive.Write(ctx, st, m, sources(nodeFiles(t)), archive.Options{Signer: s.Key(), Chain: s.Chain()})
	if err != nil {
		t.Fatal(err)
	}
	read, err := archive.ReadManifest(ctx, st, archive.KindSnapshot, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	if err := archive.VerifySignature(read, roots); err != nil {
		t.Fatal(err)
	}
	t.Logf("signed in the token with %s by %q", read.Signature.Algorithm, cert.Subject.CommonName)
}
