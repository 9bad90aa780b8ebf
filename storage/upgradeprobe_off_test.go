//go:build !sigillo_upgradeprobe

package storage

import (
	"context"
	"errors"
	"testing"
)

// The next version's command (upgradeprobe.go) is, to this build, a
// command from a newer version: a store stops at it, and neither applies
// nor refuses it as damaged.
func TestThisBuildDoesNotKnowTheNextVersionsCommand(t *testing.T) {
	s, _ := newStore(t)
	entry := futureEntry(CommandVersion, "upgrade-probe", `{"value":"v1"}`)
	_, err := s.Apply(context.Background(), []Entry{{Index: 1, Data: entry}})
	var u *UnknownCommandError
	if !errors.As(err, &u) || u.Op != "upgrade-probe" || u.Index != 1 {
		t.Fatalf("apply: %v, want an unknown command", err)
	}
	if idx, _ := s.AppliedIndex(context.Background()); idx != 0 {
		t.Fatalf("applied index %d", idx)
	}
}
