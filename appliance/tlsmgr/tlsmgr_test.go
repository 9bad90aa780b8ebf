package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

func TestAClientTrustingTheExportedRootConnects(t *testing.T) {
	ctx := context.Background()
	s, err := storage.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := apptest.NewProposer(s)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ca, err := NewLocalCA(ctx, "mail.example.test", s, p, clock)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(ca))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.RootPEM()) {
		t.Fatal("exported root is not PEM")
	}
	for _, name := range []string{"mail.example.test", "localhost", "127.0.0.1"} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("as %s: %v", name, err)
		}
		c.Close()
	}
	// TLS 1.1 is refused.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 accepted")
	}

	// A second start reuses the same CA and leaf.
	again, err := NewLocalCA(ctx, "mail.example.test", s, p, clock)
	if err != nil {
		t.Fatal(err)
	}
	c1, _ := ca.GetCertificate(nil)
	c2, _ := again.GetCertificate(nil)
	if string(again.RootPEM()) != string(ca.RootPEM()) || c1.Leaf.SerialNumber.Cmp(c2.Leaf.SerialNumber) != 0 {
		t.Fatal("restart made a new CA or certificate")
	}
	// Ten months later the leaf is renewed by the same CA.
	now = now.AddDate(0, 10, 0)
	if err := again.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	c3, _ := again.GetCertificate(nil)
	if c3.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) == 0 || c3.Leaf.NotAfter.Before(now.AddDate(0, 11, 0)) {
		t.Fatal("leaf not renewed")
	}
	if _, err := c3.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "mail.example.test", CurrentTime: now}); err != nil {
		t.Fatal(err)
	}
}
