//go:build sigillo_upgradeprobe

package control

import (
	"context"

	"sigillo/appliance/manage"
)

// nextVersionRequest answers the requests only the test build that stands
// for the next version knows (tag sigillo_upgradeprobe, see
// storage/upgradeprobe.go): debug.upgrade-probe (args: value) proposes its
// command, debug.upgrade-probe-read reads its value on this node. known is
// false for any other request.
func nextVersionRequest(ctx context.Context, m *manage.Manager, a manage.Actor, req Request) (v any, known bool, err error) {
	switch req.Op {
	case "debug.upgrade-probe":
		v, err = m.SetUpgradeProbe(ctx, a, req.Args["value"])
		return v, true, err
	case "debug.upgrade-probe-read":
		v, err = m.UpgradeProbe(ctx, a)
		return v, true, err
	}
	return nil, false, nil
}
