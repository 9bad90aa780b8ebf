package tlsmgr

import (
	"testing"

	"github.com/caddyserver/certmagic"
)

func TestACMESettingsAreChecked(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	for _, c := range []ACMEConfig{
		{Names: []string{"a.test"}},
		{CA: "https://ca.test/dir"},
		{CA: "https://ca.test/dir", Names: []string{"a.test"}, Challenge: "dns-01"},
		{CA: "https://ca.test/dir", Names: []string{"a.test"}, CARoot: []byte("not PEM")},
	} {
		if _, err := NewACME(c, st, nil, nil); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	a, err := NewACME(ACMEConfig{CA: "https://ca.test/dir", Names: []string{"a.test"}}, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a.Close()
}
