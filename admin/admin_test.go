package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

// serve runs New(st) over real TLS on a loopback port and returns its base
// URL and a client that trusts it.
func serve(t *testing.T, st Status) (string, *http.Client) {
	t.Helper()
	pki := apptest.NewPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: New(st), TLSConfig: pki.ServerConfig(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	tr := &http.Transport{TLSClientConfig: pki.ClientConfig("localhost")}
	t.Cleanup(tr.CloseIdleConnections)
	return "https://localhost:" + portOf(ln.Addr()), &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// get fetches path and returns its status, content type and JSON body.
func get(t *testing.T, c *http.Client, url string) (int, string, map[string]any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: %d %q is not JSON: %v", url, resp.StatusCode, body, err)
	}
	t.Logf("GET %s: %d %s", url, resp.StatusCode, body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), v
}

// TestReadyzFollowsTheNodeAndHealthzStaysAlive: a load balancer polling
// /readyz sees 503 with the reason while the node is not ready, and 200
// once it is again, with nothing restarted; /healthz says "alive" all
// along. Neither asks for a login.
func TestReadyzFollowsTheNodeAndHealthzStaysAlive(t *testing.T) {
	store, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	gate := &apptest.Gate{}
	base, c := serve(t, Status{Store: store, Version: "test", Ready: gate.Ready})

	code, ctype, v := get(t, c, base+"/readyz")
	if code != 200 || ctype != "application/json" || len(v) != 1 || v["ready"] != true {
		t.Errorf("/readyz of a ready node: %d %s %v, want 200 application/json {\"ready\":true}", code, ctype, v)
	}

	gate.Down("no cluster leader for 6s")
	code, ctype, v = get(t, c, base+"/readyz")
	if code != 503 || ctype != "application/json" || len(v) != 2 || v["ready"] != false || v["reason"] != "no cluster leader for 6s" {
		t.Errorf("/readyz of a node that is not ready: %d %s %v, want 503 {\"ready\":false,\"reason\":...}", code, ctype, v)
	}
	code, ctype, v = get(t, c, base+"/healthz")
	if code != 200 || ctype != "application/json" || v["status"] != "alive" {
		t.Errorf("/healthz of a node that is not ready: %d %s %v, want 200 \"status\":\"alive\"", code, ctype, v)
	}
	if _, ok := v["applied_index"]; !ok {
		t.Errorf("/healthz without applied_index: %v", v)
	}

	gate.Up()
	if code, _, v = get(t, c, base+"/readyz"); code != 200 || v["ready"] != true {
		t.Errorf("/readyz once ready again: %d %v", code, v)
	}
}

// TestHealthWithNothingWired: a Status with nothing set is alive and
// ready (a node that has not wired its checks yet).
func TestHealthWithNothingWired(t *testing.T) {
	base, c := serve(t, Status{})
	if code, _, v := get(t, c, base+"/healthz"); code != 200 || v["status"] != "alive" {
		t.Errorf("/healthz: %d %v", code, v)
	}
	if code, _, v := get(t, c, base+"/readyz"); code != 200 || v["ready"] != true {
		t.Errorf("/readyz: %d %v", code, v)
	}
}
