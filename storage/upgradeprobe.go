//go:build sigillo_upgradeprobe

package storage

// This file is built only with the tag sigillo_upgradeprobe: that build
// stands for "the next version of Sigillo", one op ahead of the default
// build, so that a rolling upgrade is tested with two real binaries
// (main_upgrade_test.go). It is not a feature: no release carries it.

// UpgradeProbeKey is the replicated key UpgradeProbe writes.
const UpgradeProbeKey = "upgrade/probe"

// UpgradeProbe is the op only the next version knows: it sets
// UpgradeProbeKey to Value. A binary built without the tag stops at it
// (UnknownCommandError).
type UpgradeProbe struct {
	Value string `json:"value"`
}

// Op implements Command.
func (*UpgradeProbe) Op() string { return "upgrade-probe" }

func (c *UpgradeProbe) apply(t *txn) (any, error) {
	_, err := t.exec("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
		UpgradeProbeKey, []byte(c.Value))
	return nil, err
}

// nextVersionCommand is the empty command of an op that only this build
// knows, or nil.
func nextVersionCommand(op string) Command {
	if op == "upgrade-probe" {
		return &UpgradeProbe{}
	}
	return nil
}
