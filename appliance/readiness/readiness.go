// Package readiness is how Sigillo's front ends (smtpd, imapd, pop3d and
// the HTTPS handler) ask whether the node may take writes, and the one rule
// for what they tell a client when it may not: a short reason on one line
// of printable ASCII, safe in an SMTP reply, an IMAP response or a POP3
// line.
//
// It does not decide readiness (the appliance does, from the raft node: a
// leader known recently, the log caught up) and keeps no state: each front
// end has a field Ready func() (ok bool, reason string), nil meaning always
// ready, and calls Check with it when a new write begins.
package readiness

import "strings"

// DefaultReason is what a client is told when Ready gives no usable reason.
const DefaultReason = "node not ready"

// MaxReason is the most bytes of a reason a client is shown.
const MaxReason = 80

// Check asks ready whether the node may take writes; a nil ready always
// may. The reason of a refusal is cleaned for a protocol line: control and
// non-ASCII characters become spaces, runs of spaces one, and it is cut at
// MaxReason bytes; an empty one becomes DefaultReason. The reason of a
// ready node is "".
func Check(ready func() (ok bool, reason string)) (ok bool, reason string) {
	if ready == nil {
		return true, ""
	}
	ok, reason = ready()
	if ok {
		return true, ""
	}
	return false, Clean(reason)
}

// Clean makes a reason fit for a client: printable ASCII on one line, at
// most MaxReason bytes, DefaultReason if nothing is left.
func Clean(reason string) string {
	var b strings.Builder
	space := false
	for _, r := range reason {
		if r <= ' ' || r >= 0x7f {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() >= MaxReason {
			break
		}
	}
	s := b.String()
	if len(s) > MaxReason {
		s = s[:MaxReason]
	}
	if s == "" {
		return DefaultReason
	}
	return s
}
