// Package admin is Sigillo's HTTPS front end for people and scripts. For
// now it serves the node's health as JSON (/healthz) and the embedded web
// UI's status page; the provisioning API, sessions and roles come with the
// admin UI issue. It is not the command line's channel: that is the control
// socket.
package admin

import (
	"context"
	"encoding/json"
	"net/http"

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

// Status is what /healthz reports from.
type Status struct {
	Node    Node
	Store   Store
	Version string
	// Scan, if set, reports the virus scanner's health: clamd answering
	// or not ("scan_ok" in /healthz; "status" is "degraded" when not).
	Scan func() (ok bool, lastErr string)
}

// New returns the HTTP handler.
func New(st Status) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		idx, err := st.Store.AppliedIndex(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]string{"error": "store unavailable"})
			return
		}
		out := map[string]any{
			"status": "ok", "version": st.Version, "leader": st.Node.IsLeader(), "applied_index": idx,
		}
		if st.Scan != nil {
			ok, lastErr := st.Scan()
			out["scan_ok"] = ok
			if !ok {
				out["status"], out["scan_error"] = "degraded", lastErr
			}
		}
		json.NewEncoder(w).Encode(out)
	})
	mux.Handle("GET /", embedui.Handler())
	return securityHeaders(mux)
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
