// Package tlsname names TLS protocol versions the way OpenSSL and Postfix
// write them ("TLSv1.3"), for the Received header fields Sigillo adds and
// for the logs of outbound deliveries, so that both say the same. It only
// names; choosing or checking versions is package tlsmgr's business.
package tlsname

import (
	"crypto/tls"
	"fmt"
)

// Version is the name of TLS version v: "TLSv1", "TLSv1.1", "TLSv1.2",
// "TLSv1.3", or "TLS(0x0305)" for a number it does not know.
func Version(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("TLS(0x%04x)", v)
}
