package smtpd

import (
	"sync/atomic"
	"testing"
)

func TestAChangedMessageSizeLimitReachesNewSessions(t *testing.T) {
	var limit atomic.Int64
	limit.Store(1000)
	e := newEnv(t, 64<<10, func(s *Server) { s.MaxMessageBytesNow = limit.Load })

	before := dialRaw(t, e.inbound)
	before.cmd("EHLO client.remote.test", "250")
	before.cmd("MAIL FROM:<someone@remote.test> SIZE=1500", "552")

	limit.Store(2000) // sigillo settings set max_message_bytes 2000
	after := dialRaw(t, e.inbound)
	after.cmd("EHLO client.remote.test", "250")
	after.cmd("MAIL FROM:<someone@remote.test> SIZE=1500", "250")
	after.cmd("RCPT TO:<bob@example.test>", "250")
	after.cmd("RSET", "250")
	after.cmd("MAIL FROM:<someone@remote.test> SIZE=2500", "552")

	// The session that began before the change keeps its limit.
	before.cmd("MAIL FROM:<someone@remote.test> SIZE=1500", "552")

	limit.Store(0) // unset: the configured max_message_bytes
	third := dialRaw(t, e.inbound)
	third.cmd("EHLO client.remote.test", "250")
	third.cmd("MAIL FROM:<someone@remote.test> SIZE=60000", "250")
	third.cmd("QUIT", "221")
}
