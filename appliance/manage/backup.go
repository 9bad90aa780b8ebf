package manage

import (
	"context"
	"time"
)

// BackupResult is one target's outcome of `sigillo backup now`.
type BackupResult struct {
	Target string `json:"target"`
	ID     string `json:"id,omitempty"`
	Index  uint64 `json:"index,omitempty"`
	Bytes  int64  `json:"bytes"`
	// Error says why the target did not get the snapshot ("" when it did).
	Error string `json:"error,omitempty"`
}

// BackupTarget is one target's state as the backup job knows it.
type BackupTarget struct {
	Target      string    `json:"target"`
	LastID      string    `json:"last_id,omitempty"`
	LastTime    time.Time `json:"last_time,omitzero"`
	LastIndex   uint64    `json:"last_index,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	ErrorTime   time.Time `json:"error_time,omitzero"`
	Failures    int       `json:"failures,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Written is the bytes sent so far by a backup running now.
	Written int64 `json:"written,omitempty"`
	Running bool  `json:"running,omitempty"`
}

// Backups is what the backup operations need of the running node.
type Backups interface {
	// Now takes a snapshot and writes it to every target.
	Now(ctx context.Context) ([]BackupResult, error)
	// Targets is every target's state.
	Targets() []BackupTarget
}

// BackupNow takes a backup to every target now; for the operator. The
// results say which targets failed; the error is for a backup that could
// not start (no target, the store).
func (m *Manager) BackupNow(ctx context.Context, a Actor) ([]BackupResult, error) {
	if err := operatorOnly(a, "a backup"); err != nil {
		return nil, err
	}
	if m.Backups == nil {
		return nil, refuse(Conflict, "no backup target: add [[backup.target]] to the configuration and restart")
	}
	res, err := m.Backups.Now(ctx)
	if err != nil {
		return res, wrap(err, Unavailable)
	}
	return res, nil
}

// BackupStatus is every target's state; for the operator.
func (m *Manager) BackupStatus(_ context.Context, a Actor) ([]BackupTarget, error) {
	if err := operatorOnly(a, "the backups' state"); err != nil {
		return nil, err
	}
	if m.Backups == nil {
		return []BackupTarget{}, nil
	}
	return m.Backups.Targets(), nil
}
