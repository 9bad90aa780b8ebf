//go:build !sigillo_upgradeprobe

package control

import (
	"context"

	"sigillo/appliance/manage"
)

// nextVersionRequest answers the requests only a build with the tag
// sigillo_upgradeprobe knows (nextversion.go): in this build, none.
func nextVersionRequest(context.Context, *manage.Manager, manage.Actor, Request) (any, bool, error) {
	return nil, false, nil
}
