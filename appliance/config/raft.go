package config

import (
	"fmt"
	"time"
)

// Raft is the [raft] table: when the replicated log is snapshotted (a
// copy of the database) and truncated. Left out, the defaults of raftfsm
// apply: 256 MiB and one hour.
type Raft struct {
	// SnapshotBytes: commands logged since the last snapshot that make
	// the next one; a start replays at most about this much.
	SnapshotBytes int64 `toml:"snapshot_bytes"`
	// SnapshotInterval: a snapshot at least this often when anything
	// changed, a Go duration ("1h").
	SnapshotInterval string `toml:"snapshot_interval"`
}

// SnapshotEvery is the effective [raft] snapshot_interval (0: the default).
func (r Raft) SnapshotEvery() time.Duration {
	d, _ := time.ParseDuration(r.SnapshotInterval)
	return d
}

func (r Raft) validate() error {
	if r.SnapshotBytes != 0 && r.SnapshotBytes < 1<<20 {
		return fmt.Errorf("raft.snapshot_bytes %d: use at least 1048576 (1 MiB), or leave it out for 256 MiB", r.SnapshotBytes)
	}
	if r.SnapshotInterval != "" {
		if d, err := time.ParseDuration(r.SnapshotInterval); err != nil || d < time.Second {
			return fmt.Errorf("raft.snapshot_interval %q is not a duration of at least a second (\"1h\")", r.SnapshotInterval)
		}
	}
	return nil
}
