package readiness

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	if ok, why := Check(nil); !ok || why != "" {
		t.Errorf("nil Ready: %v %q, want ready", ok, why)
	}
	up := func() (bool, string) { return true, "ignored" }
	if ok, why := Check(up); !ok || why != "" {
		t.Errorf("ready: %v %q", ok, why)
	}
	for _, c := range []struct{ in, want string }{
		{"no cluster leader for 5s", "no cluster leader for 5s"},
		{"", DefaultReason},
		{" \r\n\t", DefaultReason},
		{"catching up\r\n250 OK injected", "catching up 250 OK injected"},
		{"  leading  and\x00trailing  ", "leading and trailing"},
		{"caffè lungo", "caff lungo"},
		{strings.Repeat("x", 200), strings.Repeat("x", MaxReason)},
	} {
		down := func() (bool, string) { return false, c.in }
		ok, why := Check(down)
		if ok || why != c.want {
			t.Errorf("Check(%q) = %v %q, want false %q", c.in, ok, why, c.want)
		}
	}
}
