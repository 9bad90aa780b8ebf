// Package apptest holds helpers shared by the appliance's tests: a proposer
// that applies commands straight to a store in log order (what a one-node
// raft does, without raft), a throw-away PKI, a clock the test moves,
// loggers, and the rule for tools a test needs. It is imported only by tests; nothing in the server uses it.
package apptest

import (
	"os"
	"os/exec"
	"testing"
)

// NeedTool returns the path of an external program a test needs (python3,
// curl). Without it the test is skipped, loudly, except under CI=true where
// a missing tool is a failure: CI must run every interoperability test.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (%v): %s cannot run, and in CI that is a failure", name, err, t.Name())
	}
	t.Skipf("!!! SKIPPING %s: %s not found (%v); install %s to run it !!!", t.Name(), name, err, name)
	return ""
}
