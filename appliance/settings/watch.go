package settings

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"sigillo/appliance/config"
)

// Watch reads the store's settings every interval until ctx ends and calls
// fn with them each time they changed, and once at the start. A set on any
// node is applied on every node through the raft log, so every node's
// Watch sees it within about one interval of its commit. A read that
// fails is logged (once until a read works again) and the last values
// stay.
func Watch(ctx context.Context, kv KV, every time.Duration, log *slog.Logger, fn func(Values)) {
	var last *Values
	failing := false
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		v, err := Load(ctx, kv)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				log.Warn("reading the cluster-wide settings failed; the last ones stay", "err", err)
			}
			failing = true
		case err == nil:
			failing = false
			if last == nil || !last.Equal(v) {
				last = &v
				fn(v)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Live holds this node's effective configuration: its TOML with the
// cluster's values in place (Effective), swapped whole when they change.
// A front end reads a cluster-wide value through it at each use
// (live.Config().MaxMessageBytes), so a `sigillo settings set` reaches it
// without a restart. Safe for concurrent use.
type Live struct {
	toml  config.Config
	state atomic.Pointer[liveState]
}

type liveState struct {
	values Values
	cfg    config.Config
}

// NewLive starts from toml (this node's TOML) and the values stored now.
func NewLive(toml config.Config, stored Values) *Live {
	l := &Live{toml: toml}
	l.Update(stored)
	return l
}

// Update puts the cluster's values v in place; Watch calls it.
func (l *Live) Update(v Values) {
	cfg, _ := Effective(l.toml, v)
	l.state.Store(&liveState{values: v, cfg: cfg})
}

// Values are the cluster's values now.
func (l *Live) Values() Values { return l.state.Load().values }

// Config is the effective configuration now. Its maps and slices are
// shared: read them, do not change them.
func (l *Live) Config() config.Config { return l.state.Load().cfg }

// ForNode is this node's configuration at start: its TOML (cfg) with the
// cluster's stored values in place, each disagreement logged as a
// warning, and the result checked with the configuration's rules, so that
// a cluster-wide value that clashes with a node-local one (acme.challenge
// http-01 without listen.http) stops the start with the reason. It also
// returns the stored values, for NewLive.
func ForNode(ctx context.Context, kv KV, cfg config.Config, log *slog.Logger) (config.Config, Values, error) {
	stored, err := Load(ctx, kv)
	if err != nil {
		return cfg, Values{}, err
	}
	eff, ds := Effective(cfg, stored)
	Warn(log, ds)
	if err := eff.Validate(); err != nil {
		return cfg, stored, fmt.Errorf("this node's configuration with the cluster's settings: %w", err)
	}
	return eff, stored, nil
}
