package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/backup"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
	"sigillo/appliance/config"
	"sigillo/appliance/manage"
	"sigillo/appliance/signer"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// backupTargets opens the [[backup.target]]s of cfg.
func backupTargets(cfg config.Config) ([]backup.Target, error) {
	var out []backup.Target
	for i, t := range cfg.Backup.Targets {
		st, err := target.Open(t.URL, t.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("backup.target[%d]: %w", i, err)
		}
		out = append(out, backup.Target{Store: st, Retention: target.Retention{KeepLast: t.KeepLast, KeepDaily: t.KeepDaily, KeepMonthly: t.KeepMonthly}})
	}
	return out, nil
}

// backupOptions are the recipients of [backup] age_recipients_file and,
// with a gestore key, its signer for the manifests.
func backupOptions(cfg config.Config, key *signer.Signer) (archive.Options, error) {
	var o archive.Options
	if cfg.Backup.AgeRecipientsFile != "" {
		rs, _, err := archive.ReadRecipients(cfg.Backup.AgeRecipientsFile)
		if err != nil {
			return o, fmt.Errorf("backup.age_recipients_file: %w", err)
		}
		o.Recipients = rs
	}
	if key != nil {
		o.Signer, o.Chain = key.Key(), key.Chain()
	}
	return o, nil
}

// newBackuper is the backup job of cfg, or nil without a target.
func newBackuper(cfg config.Config, configFile, nodeID string, src backup.Source, key *signer.Signer, now func() time.Time, log *slog.Logger) (*backup.Backuper, error) {
	if len(cfg.Backup.Targets) == 0 {
		return nil, nil
	}
	targets, err := backupTargets(cfg)
	if err != nil {
		return nil, err
	}
	opts, err := backupOptions(cfg, key)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(cfg.DataDir, "backup-tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return backup.New(backup.Config{
		Interval: cfg.Backup.Every(), LogInterval: cfg.Backup.LogEvery(), Targets: targets, Options: opts,
		ConfigFile: configFile, SecretFiles: []string{filepath.Join(cfg.DataDir, acmeKeyFile)},
		TempDir: tmp, NodeID: nodeID, Version: Version, Now: now, Logger: log.With("component", "backup"),
	}, src), nil
}

// backupSource is the running node as the backup job reads it: a frozen
// view of the store, and the committed raft log.
type backupSource struct {
	store *storage.Store
	node  *raftfsm.Node
}

func (s backupSource) Snapshot(ctx context.Context, path string) (uint64, error) {
	v, err := s.store.Freeze(ctx)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	idx, err := v.AppliedIndex(ctx)
	if err != nil {
		return 0, err
	}
	return idx, v.CopyTo(ctx, path)
}

func (s backupSource) AppliedIndex(context.Context) (uint64, error) {
	return s.node.AppliedIndex(), nil
}

func (s backupSource) LogEntries(ctx context.Context, from uint64, fn func(archive.Entry) error) error {
	_, err := s.node.CommittedEntries(ctx, from, func(l *raft.Log) error {
		return fn(archive.Entry{Index: l.Index, Term: l.Term, Type: uint8(l.Type), AppendedAt: l.AppendedAt, Data: l.Data})
	})
	if errors.Is(err, raftfsm.ErrLogGone) {
		return fmt.Errorf("%w: %w", backup.ErrLogGone, err)
	}
	return err
}

// fileSource is a database file that no server has open (serve before it
// migrates it): its snapshot is a copy as it is; it has no log.
type fileSource struct{ path string }

func (s fileSource) Snapshot(ctx context.Context, path string) (uint64, error) {
	if err := storage.CopyDatabase(ctx, s.path, path); err != nil {
		return 0, err
	}
	return s.AppliedIndex(ctx)
}

func (s fileSource) AppliedIndex(ctx context.Context) (uint64, error) {
	return storage.FileAppliedIndex(ctx, s.path)
}

func (s fileSource) LogEntries(context.Context, uint64, func(archive.Entry) error) error {
	return fmt.Errorf("a database file has no log: %w", backup.ErrLogGone)
}

// backupBeforeMigrating backs the database file up to the first target
// when this binary is about to migrate it to a newer schema ([backup]
// before_migrate, on by default with a target). A failure stops the start:
// the operator fixes the target or says before_migrate = false.
// (The gestore's key is not open yet: this backup is not signed.)
func backupBeforeMigrating(ctx context.Context, cfg config.Config, configFile, nodeID string, log *slog.Logger) error {
	if !cfg.Backup.MigrateBackup() {
		return nil
	}
	path := DatabaseFile(cfg)
	from, to, err := storage.NeedsMigration(path)
	if err != nil || from == to || from == 0 {
		return err
	}
	first := cfg
	first.Backup.Targets = cfg.Backup.Targets[:1]
	b, err := newBackuper(first, configFile, nodeID, fileSource{path: path}, nil, time.Now, log)
	if err != nil {
		return err
	}
	log.Info("backing up the database before migrating it", "schema_from", from, "schema_to", to, "target", first.Backup.Targets[0].URL)
	res, err := b.Now(ctx, nil)
	if err != nil {
		return fmt.Errorf("backup before migrating schema %d to %d: %w (fix the target, or set [backup] before_migrate = false)", from, to, err)
	}
	for _, r := range res {
		if r.Err != nil {
			return fmt.Errorf("backup before migrating schema %d to %d: %w (fix the target, or set [backup] before_migrate = false)", from, to, r.Err)
		}
		log.Info("backup before migrating written", "id", r.ID, "target", r.Target, "bytes", r.Bytes)
	}
	return nil
}

// backupOps answers the backup operations of the control socket with the
// node's job, and tracks a running `backup now`'s progress.
type backupOps struct {
	b       *backup.Backuper
	mu      sync.Mutex
	written map[string]int64
}

func (o *backupOps) Now(ctx context.Context) ([]manage.BackupResult, error) {
	o.mu.Lock()
	o.written = map[string]int64{}
	o.mu.Unlock()
	res, err := o.b.Now(ctx, func(p backup.Progress) {
		o.mu.Lock()
		if o.written != nil {
			o.written[p.Target] = p.Bytes
		}
		o.mu.Unlock()
	})
	o.mu.Lock()
	o.written = nil
	o.mu.Unlock()
	out := make([]manage.BackupResult, 0, len(res))
	for _, r := range res {
		mr := manage.BackupResult{Target: r.Target, ID: r.ID, Bytes: r.Bytes}
		if _, idx, ok := strings.Cut(r.ID, "-"); ok {
			mr.Index, _ = strconv.ParseUint(idx, 10, 64)
		}
		if r.Err != nil {
			mr.Error = r.Err.Error()
		}
		out = append(out, mr)
	}
	return out, err
}

func (o *backupOps) Targets() []manage.BackupTarget {
	o.mu.Lock()
	written := o.written
	o.mu.Unlock()
	var out []manage.BackupTarget
	for _, s := range o.b.Status() {
		t := manage.BackupTarget{Target: s.Target, LastID: s.LastSnapshot, LastTime: s.LastSuccess, LastIndex: s.ShippedIndex,
			LastError: s.LastError, ErrorTime: s.LastErrorTime, Failures: s.Failures, NextAttempt: s.NextAttempt}
		if written != nil {
			o.mu.Lock()
			t.Written, t.Running = o.written[s.Target], true
			o.mu.Unlock()
		}
		out = append(out, t)
	}
	return out
}
