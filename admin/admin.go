// Package admin is Sigillo's HTTPS front end for people and scripts. For
// now it serves the node's health as JSON, /healthz (alive) and /readyz
// (serving, for load balancers), and the embedded web UI's status page;
// the provisioning API, sessions and roles come with the admin UI issue.
// It is not the command line's channel: that is the control socket.
package admin

import (
	"context"
	"encoding/json"
	"net/http"

	"sigillo/appliance/readiness"
	"sigillo/embedui"
)

// Node is the part of the raft node the status needs.
type Node interface {
	IsLeader() bool
}

// Store is the part of the store the status needs.
type Store interface {
	AppliedIndex(ctx context.Context) (uint64, error)
}

// Status is what /healthz and /readyz report from.
type Status struct {
	Node    Node  // nil: /healthz leaves "leader" out
	Store   Store // nil: /healthz leaves "applied_index" out
	Version string
	// Scan, if set, reports the virus scanner's health: clamd answering
	// or not ("scan_ok" in /healthz).
	Scan func() (ok bool, lastErr string)
	// Ready, if set, says whether the node serves (package readiness;
	// nil: always): /readyz answers 200 {"ready":true}, or 503
	// {"ready":false,"reason":"..."} with the reason on one short line.
	Ready func() (bool, string)
}

// New returns the HTTP handler. /healthz and /readyz need no login and
// say nothing secret: a load balancer or a monitor polls them.
func New(st Status) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", st.healthz)
	mux.HandleFunc("GET /readyz", st.readyz)
	mux.Handle("GET /", embedui.Handler())
	return securityHeaders(mux)
}

// healthz says the process is alive: always 200 and "status": "alive",
// whatever the cluster or the scanner do (that is /readyz's business), so
// that a supervisor never restarts a node for its cluster's troubles. The
// other fields are information for people.
func (st Status) healthz(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"status": "alive"}
	if st.Version != "" {
		out["version"] = st.Version
	}
	if st.Node != nil {
		out["leader"] = st.Node.IsLeader()
	}
	if st.Store != nil {
		if idx, err := st.Store.AppliedIndex(r.Context()); err == nil {
			out["applied_index"] = idx
		}
	}
	if st.Scan != nil {
		ok, _ := st.Scan() // the error text is for `sigillo scan status`
		out["scan_ok"] = ok
	}
	writeJSON(w, http.StatusOK, out)
}

// readyz says whether the node serves: 200 {"ready":true}, or 503
// {"ready":false,"reason":"..."}.
func (st Status) readyz(w http.ResponseWriter, r *http.Request) {
	if ok, reason := readiness.Check(st.Ready); !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) // a write error is the client's gone
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		h.ServeHTTP(w, r)
	})
}
