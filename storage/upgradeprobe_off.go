//go:build !sigillo_upgradeprobe

package storage

// nextVersionCommand is the empty command of an op that only a build with
// the tag sigillo_upgradeprobe knows (upgradeprobe.go): in this build,
// none, so "upgrade-probe" is a command from a newer version.
func nextVersionCommand(string) Command { return nil }
