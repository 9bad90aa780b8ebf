//go:build sigillo_upgradeprobe

package manage

import (
	"context"

	"sigillo/storage"
)

// This file is built only with the tag sigillo_upgradeprobe, the test
// build that stands for the next version of Sigillo (storage/upgradeprobe.go).

// UpgradeProbe is the value of storage.UpgradeProbeKey on this node, and
// the log index of the command that set it when this call set it.
type UpgradeProbe struct {
	Value string `json:"value"`
	Index uint64 `json:"index,omitempty"`
}

// SetUpgradeProbe proposes the next version's command (through the leader,
// like every write); for the operator.
func (m *Manager) SetUpgradeProbe(ctx context.Context, a Actor, value string) (UpgradeProbe, error) {
	if err := operatorOnly(a, "the upgrade probe"); err != nil {
		return UpgradeProbe{}, err
	}
	applied, err := m.Proposer.Apply(ctx, &storage.UpgradeProbe{Value: value})
	if err != nil {
		return UpgradeProbe{}, applyErr(err)
	}
	return UpgradeProbe{Value: value, Index: applied.Index}, nil
}

// UpgradeProbe reads the probe's value in this node's store; for the
// operator.
func (m *Manager) UpgradeProbe(ctx context.Context, a Actor) (UpgradeProbe, error) {
	if err := operatorOnly(a, "the upgrade probe"); err != nil {
		return UpgradeProbe{}, err
	}
	v, err := m.Store.KV(ctx, storage.UpgradeProbeKey)
	if err != nil {
		return UpgradeProbe{}, wrap(err, Unavailable)
	}
	return UpgradeProbe{Value: string(v)}, nil
}
