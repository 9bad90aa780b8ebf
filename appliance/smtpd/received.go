package smtpd

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"

	"sigillo/appliance/tlsname"
)

type receivedInfo struct {
	helo   string
	remote net.Addr
	by     string
	tls    *tls.ConnectionState // nil: cleartext
	auth   bool
	id     string
	rcpt   string // named with "for" when the message has one recipient
	at     time.Time
}

// received renders a Received: trace field (RFC 5321 §4.4) the way Postfix
// does, without reverse DNS (the client is always "unknown"):
//
//	Received: from helo.example (unknown [192.0.2.1])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits))
//		by mx.example.test (Sigillo) with ESMTPSA id ABCDEFGHIJKLMNOP
//		for <bob@example.test>; Mon, 02 Jan 2006 15:04:05 +0000
//
// with protocol ESMTP, plus S with TLS and A with authentication (RFC 3848).
func received(ri receivedInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s (unknown [%s])\r\n", cleanHelo(ri.helo), ipOf(ri.remote))
	proto := "ESMTP"
	if ri.tls != nil {
		fmt.Fprintf(&b, "\t(using %s with cipher %s%s)\r\n",
			tlsname.Version(ri.tls.Version), tls.CipherSuiteName(ri.tls.CipherSuite), cipherBits(ri.tls.CipherSuite))
		proto += "S"
	}
	if ri.auth {
		proto += "A"
	}
	fmt.Fprintf(&b, "\tby %s (Sigillo) with %s id %s", ri.by, proto, ri.id)
	if ri.rcpt != "" {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", ri.rcpt)
	}
	fmt.Fprintf(&b, "; %s\r\n", ri.at.Format(time.RFC1123Z))
	return b.String()
}

// cleanHelo keeps the client's HELO name from breaking the header: printable
// ASCII without parentheses or spaces, at most 255 characters.
func cleanHelo(h string) string {
	if h == "" {
		return "unknown"
	}
	if len(h) > 255 {
		h = h[:255]
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '(' || r == ')' || r == ';' {
			return '?'
		}
		return r
	}, h)
}

func ipOf(a net.Addr) string {
	if a == nil {
		return "unknown"
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// cipherBits is Postfix's " (256/256 bits)" for the usual suites.
func cipherBits(id uint16) string {
	name := tls.CipherSuiteName(id)
	switch {
	case strings.Contains(name, "AES_128"):
		return " (128/128 bits)"
	case strings.Contains(name, "AES_256"), strings.Contains(name, "CHACHA20"):
		return " (256/256 bits)"
	}
	return ""
}
