package config

import (
	"strings"
	"testing"
	"time"
)

func TestTimeoutsHaveDefaultsAndCanBeSet(t *testing.T) {
	cfg, err := Load(write(t, `hostname = "mail.example.test"`))
	if err != nil {
		t.Fatal(err)
	}
	want := TimeoutValues{Login: 30 * time.Second, SMTP: 5 * time.Minute, IMAP: 30 * time.Minute, POP3: 10 * time.Minute,
		Data: 5 * time.Minute, MinDataRate: 500}
	if got := cfg.Timeouts.Values(); got != want || cfg.UnauthenticatedPerHost() != 10 {
		t.Fatalf("defaults: %+v, %d unauthenticated", got, cfg.UnauthenticatedPerHost())
	}
	cfg, err = Load(write(t, `
max_unauthenticated_per_host = 4
[timeouts]
login = "2s"
imap = "31m"
min_data_rate = 1000
`))
	if err != nil {
		t.Fatal(err)
	}
	want.Login, want.IMAP, want.MinDataRate = 2*time.Second, 31*time.Minute, 1000
	if got := cfg.Timeouts.Values(); got != want || cfg.UnauthenticatedPerHost() != 4 {
		t.Fatalf("set: %+v, %d unauthenticated", got, cfg.UnauthenticatedPerHost())
	}
	for text, msg := range map[string]string{
		"[timeouts]\nlogin = \"30\"":        "timeouts.login",
		"[timeouts]\nsmtp = \"-5m\"":        "timeouts.smtp",
		"[timeouts]\nidle = \"5m\"":         "unknown key timeouts.idle",
		"[timeouts]\nmin_data_rate = -1":    "timeouts.min_data_rate",
		"max_unauthenticated_per_host = -1": "max_unauthenticated_per_host",
		"[timeouts]\ndata = 300":            "timeouts.data",
	} {
		if _, err := Load(write(t, text)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, msg)
		}
	}
}
