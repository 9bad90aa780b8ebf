package imapd

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/config"
	"sigillo/appliance/settings"
)

// An operator lowers max_message_bytes with `sigillo settings set` while
// clients are connected: the next APPEND over the new limit is refused
// with TOOBIG, on a session opened before the change, without a restart.
// The server reads the limit through the node's live settings, as the
// appliance wires it.
func TestMaxMessageBytesChangedInTheClusterSettingsLimitsTheNextAppend(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var live *settings.Live
	e := newEnv(t, func(s *Server) {
		s.MaxMessageBytesNow = func() int64 { return live.Config().MaxMessageBytes }
	})
	toml := config.Default()
	toml.MaxMessageBytes = testMaxMessage
	if _, err := settings.Seed(ctx, e.store, e.proposer, toml); err != nil {
		t.Fatal(err)
	}
	stored, err := settings.Load(ctx, e.store)
	if err != nil {
		t.Fatal(err)
	}
	live = settings.NewLive(toml, stored)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		settings.Watch(ctx, e.store, 100*time.Millisecond, apptest.Logger(t), live.Update)
	}()
	defer func() { cancel(); <-watched }()

	rc := e.raw()
	msg := append([]byte("Subject: 20 KB\r\n\r\n"), bytes.Repeat([]byte("x"), 20_000)...)
	if st := rc.literal("APPEND INBOX", msg); !strings.HasPrefix(st, "OK") {
		t.Fatalf("APPEND of 20 KB under 1 MiB: %s", st)
	}
	if err := settings.Set(ctx, e.proposer, "max_message_bytes", "10K"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for live.Config().MaxMessageBytes != 10<<10 {
		if time.Now().After(deadline) {
			t.Fatal("the live max_message_bytes did not follow within 1 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := rc.bigLiteral("APPEND INBOX", len(msg)); !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Errorf("APPEND of 20 KB over the new 10K: %s, want NO [TOOBIG]", st)
	}
	if n := len(e.messages("INBOX")); n != 1 {
		t.Errorf("INBOX has %d messages, want the first only", n)
	}
}
