package config

import (
	"strings"
	"testing"
	"time"
)

func TestTheRaftTableSetsTheSnapshotTriggers(t *testing.T) {
	cfg, err := Load(write(t, "[raft]\nsnapshot_bytes = 4194304\nsnapshot_interval = \"10m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Raft.SnapshotBytes != 4<<20 || cfg.Raft.SnapshotEvery() != 10*time.Minute {
		t.Fatalf("[raft] read as %+v", cfg.Raft)
	}
	cfg, err = Load(write(t, `hostname = "mail.example.test"`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Raft.SnapshotBytes != 0 || cfg.Raft.SnapshotEvery() != 0 {
		t.Fatalf("without [raft]: %+v, want the defaults (zero)", cfg.Raft)
	}
	for text, want := range map[string]string{
		"[raft]\nsnapshot_bytes = 1000":         "raft.snapshot_bytes",
		"[raft]\nsnapshot_bytes = -1":           "raft.snapshot_bytes",
		"[raft]\nsnapshot_interval = \"often\"": "raft.snapshot_interval",
		"[raft]\nsnapshot_interval = \"1ms\"":   "raft.snapshot_interval",
		"[raft]\ntrailing_logs = 5":             "unknown key raft.trailing_logs",
	} {
		if _, err := Load(write(t, text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, want)
		}
	}
}
