package manage

import (
	"context"
	"errors"

	"sigillo/appliance/settings"
)

// The cluster-wide settings (appliance/settings): every node's TOML
// gives its own view, the replicated store the value every node uses.

// ListSettings is every cluster-wide setting as this node sees it: its
// value, where it comes from, and whether this node's TOML disagrees; for
// the operator.
func (m *Manager) ListSettings(ctx context.Context, a Actor) ([]settings.Row, error) {
	if err := operatorOnly(a, "a cluster-wide setting"); err != nil {
		return nil, err
	}
	v, err := settings.Load(ctx, m.Store)
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	return settings.List(m.TOML, v), nil
}

// GetSetting names one cluster-wide setting.
type GetSetting struct{ Key string }

// GetSetting is one setting's row; for the operator.
func (m *Manager) GetSetting(ctx context.Context, a Actor, r GetSetting) (settings.Row, error) {
	if err := operatorOnly(a, "a cluster-wide setting"); err != nil {
		return settings.Row{}, err
	}
	v, err := settings.Load(ctx, m.Store)
	if err != nil {
		return settings.Row{}, wrap(err, Unavailable)
	}
	row, err := settings.Get(m.TOML, v, r.Key)
	return row, settingErr(err)
}

// SetSetting changes one cluster-wide setting: Value as typed on the
// command line.
type SetSetting struct{ Key, Value string }

// SetSetting is for the operator. The value is checked with the
// configuration's rules and committed for every node; the answer is the
// setting's row read back after the commit.
func (m *Manager) SetSetting(ctx context.Context, a Actor, r SetSetting) (settings.Row, error) {
	if err := operatorOnly(a, "a cluster-wide setting"); err != nil {
		return settings.Row{}, err
	}
	if err := settings.Set(ctx, m.Proposer, r.Key, r.Value); err != nil {
		return settings.Row{}, settingErr(err)
	}
	return m.GetSetting(ctx, a, GetSetting{Key: r.Key})
}

// settingErr classifies settings' errors: a refused key or value is
// Invalid, anything else (no leader, the store) Unavailable.
func settingErr(err error) error {
	if errors.Is(err, settings.ErrInvalid) {
		return wrap(err, Invalid)
	}
	return applyErr(err)
}
