//go:build sigillo_upgradeprobe

package storage

import (
	"bytes"
	"context"
	"testing"
)

// The next version's command, as the default build's test would write it
// (futureEntry), is applied by this build: it sets its key.
func TestTheNextVersionAppliesItsCommand(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	enc, err := Encode(&UpgradeProbe{Value: "v1"})
	if err != nil || !bytes.Equal(enc, futureEntry(CommandVersion, "upgrade-probe", `{"value":"v1"}`)) {
		t.Fatalf("encoded % x, %v", enc, err)
	}
	if res, err := s.Apply(ctx, []Entry{{Index: 1, Data: enc}}); err != nil || res[0].Err != nil {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	if v, err := s.KV(ctx, UpgradeProbeKey); err != nil || string(v) != "v1" {
		t.Fatalf("%s = %q, %v", UpgradeProbeKey, v, err)
	}
}
