// Package backup is the writing side of Sigillo's backups: the leader job
// that takes a snapshot of the store every interval (skipping it when
// nothing changed) and ships the raft log committed since every log
// interval, to every target independently and with backoff for a target
// that fails; `backup now`; retention applied after each snapshot; and the
// listing of what the targets hold.
//
// It is not the format of a backup (package archive), nor where one is
// stored (package target), nor reading one back (package restore), and it
// knows nothing of raft: the node hands it a Source.
package backup

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
)

// ErrLogGone is what Source.LogEntries returns (wrapped) when the entries
// asked for are no longer in the raft log: a snapshot truncated it. The
// job then takes a snapshot instead of shipping the log.
var ErrLogGone = errors.New("log entries are no longer in the raft log")

// Source is what the node gives the job.
type Source interface {
	// Snapshot writes a consistent copy of the database to path (a new
	// file) and returns the applied index of that copy.
	Snapshot(ctx context.Context, path string) (uint64, error)
	// AppliedIndex is the last applied raft index.
	AppliedIndex(ctx context.Context) (uint64, error)
	// LogEntries calls fn for every committed raft log entry with index >=
	// from, in order, up to the last committed; an error wrapping
	// ErrLogGone when from is no longer in the log. fn may stop the walk by
	// returning an error, which LogEntries returns.
	LogEntries(ctx context.Context, from uint64, fn func(archive.Entry) error) error
}

// Target is one place backups go, with its retention rule.
type Target struct {
	Store     archive.Store
	Retention target.Retention
}

// Config is the job's settings. Zero durations take the defaults.
type Config struct {
	// Interval is how often a snapshot is taken (default 1 h), and the
	// longest a failing target waits between attempts.
	Interval time.Duration
	// LogInterval is how often the log committed since is shipped (default 1 min).
	LogInterval time.Duration
	Targets     []Target
	// Options are the age recipients (none: the parts are stored
	// compressed only) and the signer of the manifests.
	Options archive.Options
	// ConfigFile is the node's TOML, stored as part "sigillo.toml" ("" for none).
	ConfigFile string
	// SecretFiles (e.g. DATA/acme-storage.key) are stored in part
	// "secrets.tar" only when the backup is encrypted; a file that does not
	// exist is left out.
	SecretFiles []string
	// TempDir is where a snapshot is copied before it is written to the
	// targets (default os.TempDir()); put it on the data disk.
	TempDir string
	NodeID  string
	Version string
	// Now is the clock of manifests, retention and status (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Backuper writes backups to the targets of a Config. Its methods are safe
// for concurrent use: `backup now` may run while Run does.
type Backuper struct {
	cfg     Config
	src     Source
	log     *slog.Logger
	targets []*targetState

	secretsNote sync.Once
	// snapTurn is held (a token in it) while a snapshot is taken, so that
	// Run's workers due at once share one.
	snapTurn chan struct{}

	mu     sync.Mutex
	shared *snapshot // the snapshot Run's workers are writing; nil when none
}

// targetState is what the Backuper knows of one target. Its fields other
// than t and name are guarded by Backuper.mu.
type targetState struct {
	t    Target
	name string

	snapIndex uint64    // index of the newest snapshot on the target (0: none known)
	snapTime  time.Time // its time
	shipped   uint64    // the last index the target holds, by snapshot or log set
	status    TargetStatus
}

// New returns a Backuper for cfg, taking snapshots and log entries from src.
func New(cfg Config, src Source) *Backuper {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.LogInterval <= 0 {
		cfg.LogInterval = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backuper{cfg: cfg, src: src, log: log, snapTurn: make(chan struct{}, 1)}
	for _, t := range cfg.Targets {
		name := t.Store.String()
		b.targets = append(b.targets, &targetState{t: t, name: name, status: TargetStatus{Target: name}})
	}
	return b
}

// Result is what one target got from Now: the snapshot's id and the bytes
// stored, or the error.
type Result struct {
	Target string
	ID     string
	Bytes  int64
	Err    error
}

// TargetStatus is the state of one target as the job sees it.
type TargetStatus struct {
	Target string `json:"target"`
	// LastID is the last set written (snapshot or log), at LastSuccess.
	LastID      string    `json:"last_id,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// LastSnapshot is the newest snapshot known on the target.
	LastSnapshot string `json:"last_snapshot,omitempty"`
	// SnapshotIndex and ShippedIndex are the raft index of that snapshot
	// and the last index the target holds (snapshot or log).
	SnapshotIndex uint64 `json:"snapshot_index"`
	ShippedIndex  uint64 `json:"shipped_index"`
	// LastError and LastErrorTime are the last failure, kept after a
	// success; Failures is the number of failures since the last success.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	Failures      int       `json:"failures"`
	// NextAttempt is when Run next writes to the target (a retry while
	// Failures > 0); zero when Run is not running.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
}

// Status is the state of every target, in the order of Config.Targets.
func (b *Backuper) Status() []TargetStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]TargetStatus, len(b.targets))
	for i, ts := range b.targets {
		out[i] = ts.status
		out[i].SnapshotIndex, out[i].ShippedIndex = ts.snapIndex, ts.shipped
	}
	return out
}

// succeeded records a set written to ts.
func (b *Backuper) succeeded(ts *targetState, m archive.Manifest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch m.Kind {
	case archive.KindSnapshot:
		ts.snapIndex, ts.snapTime, ts.shipped = m.Index, m.Time, m.Index
		ts.status.LastSnapshot = m.ID
	case archive.KindLog:
		ts.shipped = max(ts.shipped, m.Index)
	}
	ts.status.LastID, ts.status.LastSuccess, ts.status.Failures = m.ID, b.cfg.Now(), 0
}

// failed records a failure of ts and returns how many in a row it has had.
func (b *Backuper) failed(ts *targetState, err error) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts.status.LastError, ts.status.LastErrorTime = err.Error(), b.cfg.Now()
	ts.status.Failures++
	return ts.status.Failures
}

func (b *Backuper) setNext(ts *targetState, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts.status.NextAttempt = at
}

// position is what the Backuper knows of ts: its newest snapshot's index
// and the last index it holds.
func (b *Backuper) position(ts *targetState) (snapIndex, shipped uint64, snapTime time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return ts.snapIndex, ts.shipped, ts.snapTime
}

// learned records what was read from the target itself.
func (b *Backuper) learned(ts *targetState, newest *archive.Manifest, shipped uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ts.snapIndex, ts.snapTime, ts.status.LastSnapshot = 0, time.Time{}, ""
	if newest != nil {
		ts.snapIndex, ts.snapTime, ts.status.LastSnapshot = newest.Index, newest.Time, newest.ID
	}
	ts.shipped = shipped
}
