package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"sigillo/appliance/apptest"
)

// pebbleCA is an ACME server (Let's Encrypt's pebble) in the test process,
// on loopback, not started until Start: the CA may be down when Sigillo
// starts. Challenges are not really validated (PEBBLE_VA_ALWAYS_VALID).
type pebbleCA struct {
	srv    *httptest.Server
	ca     *ca.CAImpl
	URL    string // directory
	CAFile string // PEM of the root of pebble's own HTTPS certificate
	addr   string
}

func newPebble(t *testing.T, validity time.Duration) *pebbleCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	c := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "test", ValidityPeriod: uint64(validity / time.Second)},
	})
	v := va.New(logger, 80, 443, false, "", store)
	w := wfe.New(logger, store, v, c, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	pki := apptest.NewPKI(t, "127.0.0.1")
	srv := httptest.NewUnstartedServer(w.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.Cert}}
	// Until Start, the port refuses connections, as a CA that is down.
	addr := srv.Listener.Addr().String()
	srv.Listener.Close()
	t.Cleanup(srv.Close)
	return &pebbleCA{srv: srv, ca: c, URL: "https://" + addr + "/dir", CAFile: pki.CAFile, addr: addr}
}

func (p *pebbleCA) Start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.srv.Listener = ln
	p.srv.StartTLS()
}

// roots is a pool with pebble's root (for certificates it issues).
func (p *pebbleCA) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	for i := range p.ca.GetNumberOfRootCerts() {
		pool.AddCert(p.ca.GetRootCert(i).Cert)
	}
	return pool
}

// served is the leaf certificate a TLS listener presents for name.
func served(t *testing.T, addr, name string) *x509.Certificate {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func isPebble(c *x509.Certificate) bool { return strings.Contains(c.Issuer.CommonName, "Pebble") }

// TestListenersGetAndRenewACMECertificates starts Sigillo with [acme]
// pointing at a pebble that is not up yet: the local CA's certificate is
// served, then pebble's once it comes up, on IMAPS, SMTPS, POP3S and HTTPS;
// a short certificate life makes certmagic renew it, and the new one is
// served without a restart while an open connection stays up.
func TestListenersGetAndRenewACMECertificates(t *testing.T) {
	openssl := need(t, "openssl")
	const name = "mail.acme.test"
	p := newPebble(t, 40*time.Second)
	in := newInstance(t, "mail.acme.test", fmt.Sprintf("[acme]\nemail = \"postmaster@acme.test\"\nca = %q\nca_root = %q\n"+
		"names = [%q, \"pec.acme.test\"]\nchallenge = \"tls-alpn-01\"\nrenew_check = \"1s\"\nretry_first = \"1s\"\n", p.URL, p.CAFile, name))
	in.start()
	imaps := fmt.Sprintf("127.0.0.1:%d", in.ports["imaps"])
	if c := served(t, imaps, name); isPebble(c) {
		t.Fatalf("a pebble certificate before pebble started")
	}
	for wait := time.Now().Add(20 * time.Second); ; {
		out := in.cli("", "cert", "status")
		if strings.Contains(out, "local CA") && strings.Contains(out, "last ACME error") {
			t.Logf("CA down:\n%s", out)
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("cert status with the CA down:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	p.Start(t)
	roots := p.roots()
	deadline := time.Now().Add(60 * time.Second)
	for !isPebble(served(t, imaps, name)) || !isPebble(served(t, imaps, "pec.acme.test")) {
		if time.Now().After(deadline) {
			t.Fatalf("no ACME certificate 60 s after pebble started:\n%s", in.cli("", "cert", "status"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	first := served(t, imaps, name)
	for _, l := range []string{"imaps", "submissions", "pop3s", "https"} {
		addr := fmt.Sprintf("127.0.0.1:%d", in.ports[l])
		for _, n := range []string{name, "pec.acme.test"} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: n, RootCAs: roots})
			if err != nil {
				t.Fatalf("%s for %s: the ACME certificate does not verify: %v", l, n, err)
			}
			conn.Close()
		}
	}
	out, err := exec.Command(openssl, "s_client", "-connect", imaps, "-servername", name, "-verify_return_error", "-brief").CombinedOutput()
	if !strings.Contains(string(out), "Pebble") {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	if st := in.cli("", "cert", "status"); !strings.Contains(st, "acme") || !strings.Contains(st, "Pebble") {
		t.Fatalf("cert status:\n%s", st)
	}

	// An IMAP session opened now stays up across the renewal.
	conn, err := tls.Dial("tcp", imaps, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	if greet, _ := rd.ReadString('\n'); !strings.HasPrefix(greet, "* OK") {
		t.Fatalf("greeting %q", greet)
	}
	deadline = time.Now().Add(90 * time.Second)
	var renewed *x509.Certificate
	for {
		c := served(t, imaps, name)
		if isPebble(c) && c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not renewed within 90 s (first expires %v):\n%s", first.NotAfter, in.cli("", "cert", "status"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Fprintf(conn, "a1 NOOP\r\n")
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "a1 OK") {
		t.Fatalf("the session opened before the renewal: %q %v", line, err)
	}
	t.Logf("served the local CA's certificate while pebble was down; then pebble's (serial %x, to %v); renewed (serial %x, to %v) without a restart",
		first.SerialNumber, first.NotAfter.Format(time.TimeOnly), renewed.SerialNumber, renewed.NotAfter.Format(time.TimeOnly))
}

// TestHTTP01UsesThePort80Companion: with challenge http-01 the http
// listener opens, answers the CA (here pebble does not call it:
// PEBBLE_VA_ALWAYS_VALID) and redirects everything else to https.
func TestHTTP01UsesThePort80Companion(t *testing.T) {
	p := newPebble(t, time.Hour)
	p.Start(t)
	httpPort := freePort(t)
	in := newInstance(t, "mail.acme.test", fmt.Sprintf("http = \"127.0.0.1:%d\"\n[acme]\nca = %q\nca_root = %q\nchallenge = \"http-01\"\nretry_first = \"1s\"\n",
		httpPort, p.URL, p.CAFile))
	// http belongs in [listen]: the instance writes extra right after it.
	in.start()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/webmail?x=1", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != fmt.Sprintf("https://127.0.0.1:%d/webmail?x=1", httpPort) {
		t.Fatalf("port 80 companion: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	imaps := fmt.Sprintf("127.0.0.1:%d", in.ports["imaps"])
	deadline := time.Now().Add(60 * time.Second)
	for !isPebble(served(t, imaps, "mail.acme.test")) {
		if time.Now().After(deadline) {
			t.Fatalf("no ACME certificate with http-01:\n%s", in.cli("", "cert", "status"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
