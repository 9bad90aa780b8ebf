package smtpd

import (
	"fmt"
	"net"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// The node's readiness (Server.Ready): a node that may not take writes
// (no raft leader, still catching up) refuses new mail transactions with
// 421 4.3.0, as Postfix greets with 421 when it cannot serve, so that the
// sender tries another MX or submission host, or this one later. A
// transaction that got past MAIL goes on: its end of data answers 451 if
// the message cannot be committed.

// notReadyReply is the 421 of a node that is not ready; reason is already
// cleaned by readiness.Check.
func notReadyReply(hostname, reason string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: fmt.Sprintf("%s Service not available: %s", hostname, reason)}
}

// notReady answers MAIL FROM with 421 and has the connection closed once
// the reply is written (go-smtp keeps a connection open after a 421 of
// ours).
func (s *session) notReady(reason string) error {
	s.log.Info("mail refused: node not ready", "reason", reason)
	if s.track != nil {
		s.track.hangUp.Store(true)
	}
	return notReadyReply(s.srv.hostname(), reason)
}

// refusingConn is a connection accepted while the node was not ready:
// go-smtp's greeting (its first write, after the TLS handshake on the
// implicit TLS port) is replaced with the 421 reply, and the connection is
// closed after it.
type refusingConn struct {
	net.Conn // what go-smtp would have had: the trackedConn, or TLS over it
	track    *trackedConn
	reply    *smtp.SMTPError
	done     atomic.Bool
}

func (r *refusingConn) Write(p []byte) (int, error) {
	if r.done.Swap(true) {
		return r.Conn.Write(p)
	}
	line := fmt.Sprintf("%d %d.%d.%d %s\r\n", r.reply.Code,
		r.reply.EnhancedCode[0], r.reply.EnhancedCode[1], r.reply.EnhancedCode[2], r.reply.Message)
	_, err := r.Conn.Write([]byte(line))
	r.track.lingerClose()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
