package clusternet_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/clusternet"
)

// testLogger writes the port's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// identity is a node of ca that has joined.
func identity(t *testing.T, ca *clusternet.CA, nodeID string) *clusternet.Identity {
	t.Helper()
	certPEM, keyPEM := identityPEM(t, ca, nodeID)
	id, err := clusternet.NewIdentity(certPEM, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// node opens the cluster port of id on 127.0.0.1 and serves h on it (when
// h is not nil) until the test ends.
func node(t *testing.T, id *clusternet.Identity, h http.Handler) *clusternet.Mux {
	t.Helper()
	m, err := clusternet.Listen("127.0.0.1:0", id, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	if h != nil {
		go func() { served <- m.ServeRPC(h) }()
	} else {
		served <- nil
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("ServeRPC: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("ServeRPC did not return after Close")
		}
	})
	return m
}

// whoami answers the node the request came from, and the HTTP version.
func whoami() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := clusternet.PeerNode(r)
		fmt.Fprintf(w, "%s %v %s", id, ok, r.Proto)
	})
}

func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestRPCNodeToNode: node 2 calls node 1's RPC service with NewClient, by
// address (no host name check), over HTTP/2; node 1's handler knows the
// caller is n2. A handler wrapped in RequireNode lets it through.
func TestRPCNodeToNode(t *testing.T) {
	ca := mustCA(t, "c")
	mux := http.NewServeMux()
	mux.Handle("/whoami", requireNodeWhoami())
	n1 := node(t, identity(t, ca, "n1"), mux)
	c := clusternet.NewClient(identity(t, ca, "n2"))
	defer c.CloseIdleConnections()

	code, body, err := get(t, c, "https://"+n1.Addr().String()+"/whoami")
	if err != nil || code != 200 || body != "n2 true HTTP/2.0" {
		t.Fatalf("node to node: %d %q %v", code, body, err)
	}

	// An HTTP/1.1-only client is served too.
	c1 := clusternet.NewClient(identity(t, ca, "n3"))
	c1.Transport.(*http.Transport).ForceAttemptHTTP2 = false
	c1.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
	defer c1.CloseIdleConnections()
	if code, body, err := get(t, c1, "https://"+n1.Addr().String()+"/whoami"); err != nil || body != "n3 true HTTP/1.1" {
		t.Fatalf("HTTP/1.1: %d %q %v", code, body, err)
	}

	// A node of another cluster refuses this node's certificate.
	stranger := clusternet.NewClient(identity(t, mustCA(t, "other"), "n2"))
	defer stranger.CloseIdleConnections()
	if _, _, err := get(t, stranger, "https://"+n1.Addr().String()+"/whoami"); err == nil {
		t.Fatal("a client of another cluster accepted this node")
	}
}

// requireNodeWhoami is whoami for cluster nodes only.
func requireNodeWhoami() http.Handler { return clusternet.RequireNode(whoami()) }

// TestJoinClientPinsTheCA: a node with a join token and no certificate
// reaches the join handler (left without RequireNode) when the token's pin
// is the cluster CA's, and is refused before sending anything when it is
// not. It gets 403 from every handler behind RequireNode.
func TestJoinClientPinsTheCA(t *testing.T) {
	ca := mustCA(t, "c")
	mux := http.NewServeMux()
	mux.Handle("/join", whoami())
	mux.Handle("/status", requireNodeWhoami())
	n1 := node(t, identity(t, ca, "n1"), mux)
	base := "https://" + n1.Addr().String()

	tok, err := clusternet.NewToken(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	joiner := clusternet.JoinClient(tok.CAPin)
	defer joiner.CloseIdleConnections()
	if code, body, err := get(t, joiner, base+"/join"); err != nil || code != 200 || !strings.HasPrefix(body, " false") {
		t.Fatalf("join with the right pin: %d %q %v", code, body, err)
	}
	code, body, err := get(t, joiner, base+"/status")
	if err != nil || code != http.StatusForbidden {
		t.Fatalf("status without a certificate: %d %q %v", code, body, err)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != "forbidden" || e.Error.Message == "" {
		t.Fatalf("403 body %q: %v", body, err)
	}

	wrong, err := clusternet.NewToken(mustCA(t, "other").Cert)
	if err != nil {
		t.Fatal(err)
	}
	bad := clusternet.JoinClient(wrong.CAPin)
	defer bad.CloseIdleConnections()
	if _, _, err := get(t, bad, base+"/join"); err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("join with another cluster's pin: %v", err)
	}
}

// TestStrangerGetsNothing: someone without a certificate of the cluster
// CA who connects to the port gets no raft connection, 403 from the RPC
// behind RequireNode, a failed handshake with a certificate of another CA;
// garbage is closed; a silent connection is dropped after the handshake
// timeout; and the port still serves its nodes afterwards.
func TestStrangerGetsNothing(t *testing.T) {
	ca := mustCA(t, "c")
	id1 := identity(t, ca, "n1")
	m, err := clusternet.ListenHandshakeTimeout("127.0.0.1:0", id1, testLogger(t), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	go m.ServeRPC(requireNodeWhoami())
	// Raft's side of the port takes whatever connection reaches it.
	layer := m.StreamLayer("")
	defer layer.Close()
	gotRaft := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := layer.Accept()
			if err != nil {
				return
			}
			gotRaft <- c
		}
	}()
	addr := m.Addr().String()
	// expectClosed: the server closes c (EOF or reset), it does not leave
	// it open.
	expectClosed := func(t *testing.T, c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("the connection stayed open: %v", err)
		}
	}

	t.Run("raft without a certificate", func(t *testing.T) {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{clusternet.RaftALPN}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if p := c.ConnectionState().NegotiatedProtocol; p != clusternet.RaftALPN {
			t.Fatalf("ALPN %q", p)
		}
		c.Write([]byte("append entries, please"))
		expectClosed(t, c)
	})

	t.Run("RPC without a certificate", func(t *testing.T) {
		c := clusternet.JoinClient(clusternet.Pin(ca.Cert))
		defer c.CloseIdleConnections()
		code, body, err := get(t, c, "https://"+addr+"/whoami")
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, `"forbidden"`) {
			t.Fatalf("%d %q %v", code, body, err)
		}
	})

	other := identity(t, mustCA(t, "other"), "n2")
	for _, proto := range []string{clusternet.RaftALPN, "h2"} {
		t.Run("certificate of another CA, "+proto, func(t *testing.T) {
			c, err := tls.Dial("tcp", addr, &tls.Config{
				InsecureSkipVerify: true, // the stranger trusts the server; the server must not trust it
				// Sent whatever CAs the server asks for (Go's client would
				// otherwise keep a certificate the server cannot accept).
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other.Cert, nil },
				NextProtos:           []string{proto},
			})
			if err == nil {
				defer c.Close()
				// TLS 1.3: the client learns of the server's refusal at its
				// first read.
				c.SetDeadline(time.Now().Add(2 * time.Second))
				c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
				_, err = c.Read(make([]byte, 1))
			}
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("handshake with another CA's certificate: %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("plain TCP garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\xff\x16\x03\x01garbage"))
		expectClosed(t, c)
	})

	t.Run("silent stranger", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		expectClosed(t, c)
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Fatalf("closed after %v, before the handshake timeout", d)
		}
	})

	select {
	case c := <-gotRaft:
		t.Fatalf("raft got a connection from %v", c.RemoteAddr())
	default:
	}

	// The port still serves a node.
	n2 := clusternet.NewClient(identity(t, ca, "n2"))
	defer n2.CloseIdleConnections()
	if code, body, err := get(t, n2, "https://"+addr+"/whoami"); err != nil || code != 200 || !strings.HasPrefix(body, "n2 true") {
		t.Fatalf("a node after the strangers: %d %q %v", code, body, err)
	}
}

// TestCloseStopsEverything: Close returns while a connection is silent in
// its handshake, a raft connection is open and ServeRPC runs; all of them
// end; a second Close is harmless; the port no longer accepts.
func TestCloseStopsEverything(t *testing.T) {
	ca := mustCA(t, "c")
	id1 := identity(t, ca, "n1")
	m, err := clusternet.Listen("127.0.0.1:0", id1, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- m.ServeRPC(whoami()) }()
	addr := m.Addr().String()

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	layer := m.StreamLayer("")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := layer.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	dialer := mustMux(t, identity(t, ca, "n2")).StreamLayer("")
	rc, err := dialer.Dial(raftAddr(addr), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatal("raft did not get the connection of node n2")
	}

	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v", d)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("ServeRPC: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ServeRPC still runs after Close")
	}
	silent.SetDeadline(time.Now().Add(time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent connection is still open")
	}
	rc.SetDeadline(time.Now().Add(time.Second))
	if _, err := rc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the raft connection is still open")
	}
	if _, err := layer.Accept(); err == nil {
		t.Fatal("raft accepts after Close")
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := m.ServeRPC(whoami()); err == nil {
		t.Fatal("ServeRPC after Close")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("the port still accepts")
	}
}

func mustMux(t *testing.T, id *clusternet.Identity) *clusternet.Mux {
	t.Helper()
	m, err := clusternet.Listen("127.0.0.1:0", id, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
