package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/config"
	"sigillo/appliance/settings"
)

// An operator moves b.test's route to another host with `sigillo
// settings set routes …` while the queue runs: the next message goes to
// the new hop, without a restart. The runner reads the routes through the
// node's live settings, as the appliance wires it.
func TestARouteChangedInTheClusterSettingsTakesEffectWithoutRestart(t *testing.T) {
	w := newWorld(t)
	// b2 also serves b.test, with its own store: where a message lands says
	// which route it took.
	b2 := newHost(t, "mx2.b.test", w.pki, w.clock, nil, nil, []string{"b.test"}, "bob@b.test")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	toml := config.Default()
	toml.Routes = map[string]string{"b.test": w.b.inbound}
	if _, err := settings.Seed(ctx, w.a.store, w.a.prop, toml); err != nil {
		t.Fatal(err)
	}
	stored, err := settings.Load(ctx, w.a.store)
	if err != nil {
		t.Fatal(err)
	}
	live := settings.NewLive(toml, stored)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		settings.Watch(ctx, w.a.store, 100*time.Millisecond, apptest.Logger(t), live.Update)
	}()
	defer func() { cancel(); <-watched }()
	w.runner.Routes = nil
	w.runner.RoutesNow = func() map[string]string { return live.Config().Routes }
	w.start()

	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test"}, testMessage("by the first route"))
	eventually(t, "bob on mx.b.test to get the first", func() bool { return len(w.b.inbox("bob@b.test")) == 1 })

	if err := settings.Set(ctx, w.a.prop, "routes", "b.test="+b2.inbound); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the live routes to follow", func() bool { return live.Config().Routes["b.test"] == b2.inbound })
	w.a.submit(w.pki, "alice@a.test", []string{"bob@b.test"}, testMessage("by the new route"))
	eventually(t, "bob on mx2.b.test to get the second", func() bool { return len(b2.inbox("bob@b.test")) == 1 })
	if got := b2.inbox("bob@b.test")[0]; !strings.Contains(got, "by the new route") {
		t.Errorf("mx2.b.test got:\n%s", got)
	}
	if n := len(w.b.inbox("bob@b.test")); n != 1 {
		t.Errorf("mx.b.test has %d messages, want the first only", n)
	}
}
