package tlsname

import (
	"crypto/tls"
	"testing"
)

func TestVersionNamesAsPostfixDoes(t *testing.T) {
	for v, want := range map[uint16]string{
		tls.VersionTLS10: "TLSv1",
		tls.VersionTLS11: "TLSv1.1",
		tls.VersionTLS12: "TLSv1.2",
		tls.VersionTLS13: "TLSv1.3",
		0x0305:           "TLS(0x0305)",
		0:                "TLS(0x0000)",
	} {
		if got := Version(v); got != want {
			t.Errorf("Version(%#04x) = %q, want %q", v, got, want)
		}
	}
}
