package clusternet

import (
	"log/slog"
	"time"
)

// ListenHandshakeTimeout is Listen with a shorter handshake timeout, for
// the test of a silent stranger.
func ListenHandshakeTimeout(addr string, id *Identity, log *slog.Logger, timeout time.Duration) (*Mux, error) {
	return listen(addr, id, log, timeout)
}
