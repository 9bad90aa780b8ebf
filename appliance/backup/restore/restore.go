// Package restore reads a backup back: Restore turns a snapshot set (a
// consistent copy of the database at applied raft index N), and the log
// sets that follow it up to a point in time, into a new data directory
// that `sigillo serve` starts as a one-node cluster serving that state;
// Verify restores a snapshot into a scratch directory and checks what it
// finds there.
//
// What a restored data directory holds, and why:
//
//   - sigillo.db: the snapshot's database, then every command of the log
//     sets after it applied in order, as the raft FSM applies them
//     (storage.Store.Apply), up to Options.At or the first gap.
//   - raft/: a raft snapshot at the last index restored (raftfsm.Seed),
//     whose configuration is this node alone. The new cluster's log
//     continues after that index; on a fresh log starting at 1 the store,
//     whose applied index is already N, would skip the new cluster's first
//     N entries as applied and lose acknowledged writes.
//   - node-id: Options.NodeID (a new random ID when empty), the restored
//     node's name in its new cluster.
//   - the files of the secrets.tar part, each under its base name (the
//     tar holds the path it had on the backed-up node), 0600: the ACME
//     storage key that every node of a cluster shares. The part exists
//     only in encrypted backups.
//
// The old cluster's identity: its membership is not restored (the node is
// the sole voter; other nodes join it again with `sigillo cluster token`
// and [cluster] join, as they join any cluster). Node certificates are
// per node and not in the backup: DATA/cluster/ is absent, and a clustered
// node (raft_addr) started on the directory, without a join list, certifies
// itself at its first start from the cluster CA in the restored store
// (cluster/ca/*), as the first node of a cluster does. That CA stays the
// same, so the restored cluster trusts certificates it issued before the
// backup: the nodes of the old cluster must be wiped, not restarted against
// it (as after raftfsm.Recover). Join tokens issued before the backup and
// neither used nor expired are in the restored store and still valid:
// revoke them with `sigillo cluster token revoke` if in doubt.
//
// A restore to a point before the end of the backed-up history (At, a
// gap, an older snapshot) starts a new history: the new cluster's log
// reuses the indexes after the restored one, so the old sets beyond it on
// the same target describe another history that a later restore would
// mix in. Give the restored cluster's backups a new target or prefix.
//
// The configuration file (part sigillo.toml) is not written: the operator
// starts the node with its own, which gives Options.NodeID and RaftAddr.
// Restore never writes into an existing data directory that is not
// empty: it builds the new one beside it (in DataDir's parent) and renames
// it into place at the end, so a failure leaves DataDir as it was.
//
// It is not the backup format (package archive), nor where backups are
// stored (package target), nor the job that writes them (package backup).
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"filippo.io/age"

	"sigillo/appliance/backup/archive"
	"sigillo/appliance/nodeid"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// DatabaseFile is the database's name in a data directory (as
// appliance.DatabaseFile has it).
const DatabaseFile = "sigillo.db"

// Options say what to restore and where.
type Options struct {
	// From is the target the backup is read from.
	From archive.Store
	// Snapshot is the snapshot set's ID; "" picks the newest, or with At
	// the newest taken at or before At.
	Snapshot string
	// At bounds the log replayed after the snapshot: only entries appended
	// at or before it. Zero: every log entry there is.
	At time.Time
	// SnapshotOnly restores the snapshot alone, no log (Verify).
	SnapshotOnly bool
	// Identities decrypt an encrypted backup.
	Identities []age.Identity
	// DataDir is the data directory to make: absent, or an empty directory.
	DataDir string
	// NodeID is the restored node's ID ([cluster] node_id of its TOML);
	// "" makes a new random one. RaftAddr is its raft advertise address,
	// "" for a node without raft_addr.
	NodeID, RaftAddr string
	Logger           *slog.Logger
}

// Report says what a Restore or a Verify did and found.
type Report struct {
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`  // when the snapshot was taken
	Index    uint64    `json:"index"` // the snapshot's applied index
	// Log replay: the sets read, the entries applied (commands and the
	// others, which advance the index only) and how many of them were
	// commands; FinalIndex is the index the new cluster's log continues
	// after, LastAppendedAt the time of the last entry applied.
	LogSets        int       `json:"log_sets"`
	LogEntries     int       `json:"log_entries"`
	Commands       int       `json:"commands"`
	FinalIndex     uint64    `json:"final_index"`
	LastAppendedAt time.Time `json:"last_appended_at,omitzero"`
	// LogEnd says why the replay stopped: "at" (the next entry is after
	// At), "end" (no more log), "gap …" (entries missing from the sets:
	// nothing after the gap was applied), "snapshot only".
	LogEnd   string           `json:"log_end"`
	Counts   map[string]int64 `json:"counts"`
	Secrets  []string         `json:"secrets,omitempty"` // files of secrets.tar written
	NodeID   string           `json:"node_id,omitempty"`
	DataDir  string           `json:"data_dir,omitempty"`
	LegalLog string           `json:"legal_log,omitempty"` // Verify: the legal log's verification
	Checks   []Check          `json:"checks,omitempty"`    // Verify: each check and its result
	// Warnings: manifests that could not be read, and the like.
	Warnings []string `json:"warnings,omitempty"`
}

// Check is one check of Verify.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// ErrNotEmpty is returned when DataDir exists and is not an empty
// directory; nothing was changed.
var ErrNotEmpty = errors.New("the data directory is not empty")

// Restore makes o.DataDir from the backup on o.From (see the package
// doc). It refuses a DataDir that exists and is not an empty directory,
// touching nothing; on any failure DataDir is left as it was (absent or
// empty) and the scratch directory beside it is removed.
func Restore(ctx context.Context, o Options) (Report, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "restore")
	if o.From == nil {
		return Report{}, errors.New("restore: no backup target")
	}
	if o.DataDir == "" {
		return Report{}, errors.New("restore: no data directory")
	}
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return Report{}, fmt.Errorf("restore: data directory: %w", err)
	}
	if err := checkEmpty(dataDir); err != nil {
		return Report{}, err
	}
	if o.NodeID == "" {
		if o.NodeID, err = nodeid.New(); err != nil {
			return Report{}, fmt.Errorf("restore: %w", err)
		}
	} else if err := nodeid.Check(o.NodeID); err != nil {
		return Report{}, fmt.Errorf("restore: %w", err)
	}

	var rep Report
	m, err := pickSnapshot(ctx, o, &rep)
	if err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	rep.Snapshot, rep.Time, rep.Index = m.ID, m.Time, m.Index
	if m.Schema > storage.SchemaVersion() {
		return rep, fmt.Errorf("restore: snapshot %s has schema %d, newer than this Sigillo's %d (it was written by %s): restore with that version",
			m.ID, m.Schema, storage.SchemaVersion(), m.Version)
	}
	log.Info("restoring", "snapshot", m.ID, "index", m.Index, "from", o.From.String(), "data_dir", dataDir)

	parent := filepath.Dir(dataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dataDir)+".restore-")
	if err != nil {
		return rep, fmt.Errorf("restore: scratch directory: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := build(ctx, o, m, tmp, &rep, log); err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	// An empty DataDir is replaced by the rename (rename(2) replaces an
	// empty directory, atomically; os.Rename refuses any directory); one
	// that got content meanwhile makes it fail.
	if err := syscall.Rename(tmp, dataDir); err != nil {
		return rep, fmt.Errorf("restore: move the restored data into %s: %w", dataDir, err)
	}
	done = true
	if err := syncDir(parent); err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	rep.DataDir, rep.NodeID = dataDir, o.NodeID
	log.Info("restored", "snapshot", rep.Snapshot, "index", rep.Index, "log_entries", rep.LogEntries, "final_index", rep.FinalIndex,
		"log_end", rep.LogEnd, "counts", fmt.Sprint(rep.Counts), "data_dir", dataDir, "node_id", o.NodeID)
	return rep, nil
}

// build makes the data directory's content in dir.
func build(ctx context.Context, o Options, m archive.Manifest, dir string, rep *Report, log *slog.Logger) error {
	dbPart, err := partOfKind(m, "database")
	if err != nil {
		return err
	}
	dbPath := filepath.Join(dir, DatabaseFile)
	if err := writePart(ctx, o, m, dbPart, dbPath); err != nil {
		return err
	}
	store, err := storage.Open(dbPath)
	if err != nil {
		return fmt.Errorf("snapshot %s: part %s: %w", m.ID, dbPart, err)
	}
	closed := false
	defer func() {
		if !closed {
			store.Close()
		}
	}()
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("snapshot %s: part %s: %w", m.ID, dbPart, err)
	}
	if applied != m.Index {
		log.Info("the database's applied index differs from the snapshot's", "applied", applied, "snapshot_index", m.Index)
	}
	base := max(applied, m.Index)
	rp := replay{ctx: ctx, o: o, store: store, dir: dir, next: base + 1, log: log}
	if o.SnapshotOnly {
		rep.LogEnd = "snapshot only"
	} else if err := rp.run(rep); err != nil {
		return err
	}
	rep.FinalIndex = rp.next - 1
	rep.LogEntries, rep.Commands, rep.LastAppendedAt = rp.entries, rp.commands, rp.lastAppended
	if rep.Counts, err = store.Counts(ctx); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, nodeid.FileName), []byte(o.NodeID+"\n"), 0o600); err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	if part, err := partOfKind(m, "secrets"); err == nil {
		if rep.Secrets, err = restoreSecrets(ctx, o, m, part, dir); err != nil {
			return err
		}
	}
	// Nothing ever applied (FinalIndex 0): a fresh log skips nothing, and
	// the node bootstraps as a new one does.
	if rep.FinalIndex > 0 {
		term := max(rp.lastTerm, 1)
		if err := raftfsm.Seed(ctx, filepath.Join(dir, "raft"), o.NodeID, o.RaftAddr, store, rep.FinalIndex, term); err != nil {
			return err
		}
	}
	closed = true
	if err := store.Close(); err != nil {
		return fmt.Errorf("close the restored database: %w", err)
	}
	return nil
}

// checkEmpty refuses a path that exists and is not an empty directory.
func checkEmpty(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: data directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("restore: %s: %w: it is a file; nothing was changed", dir, ErrNotEmpty)
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("restore: data directory: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(3)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("restore: data directory: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("restore: %s: %w (it holds %v…): restore into a new or empty directory; nothing was changed", dir, ErrNotEmpty, names)
	}
	return nil
}

// pickSnapshot finds the snapshot set o asks for.
func pickSnapshot(ctx context.Context, o Options, rep *Report) (archive.Manifest, error) {
	if o.Snapshot != "" {
		m, err := archive.ReadManifest(ctx, o.From, archive.KindSnapshot, o.Snapshot)
		if err != nil {
			return m, err
		}
		if !o.At.IsZero() && m.Time.After(o.At) {
			return m, fmt.Errorf("snapshot %s was taken at %s, after --at %s: pick an older snapshot or a later time",
				m.ID, m.Time.UTC().Format(time.RFC3339), o.At.UTC().Format(time.RFC3339))
		}
		return m, nil
	}
	sets, err := archive.Sets(ctx, o.From, archive.KindSnapshot)
	if err != nil {
		if len(sets) == 0 || ctx.Err() != nil {
			return archive.Manifest{}, err
		}
		rep.Warnings = append(rep.Warnings, err.Error())
		o.Logger.Warn("some snapshot manifests cannot be read; choosing among the others", "err", err)
	}
	if len(sets) == 0 {
		return archive.Manifest{}, fmt.Errorf("no snapshot on %s", o.From)
	}
	for i := len(sets) - 1; i >= 0; i-- {
		if o.At.IsZero() || !sets[i].Time.After(o.At) {
			return sets[i], nil
		}
	}
	return archive.Manifest{}, fmt.Errorf("no snapshot on %s taken at or before %s (the oldest is %s, taken %s)", o.From,
		o.At.UTC().Format(time.RFC3339), sets[0].ID, sets[0].Time.UTC().Format(time.RFC3339))
}

// partOfKind is the name of the set's part of that kind.
func partOfKind(m archive.Manifest, kind string) (string, error) {
	for _, p := range m.Parts {
		if p.Kind == kind {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("%s %s: no %s part", m.Kind, m.ID, kind)
}

// writePart writes a part's raw bytes to a new file at path, reading the
// part to its end: only then are its lengths and hashes checked.
func writePart(ctx context.Context, o Options, m archive.Manifest, part, path string) error {
	rc, err := archive.OpenPart(ctx, o.From, m, part, o.Identities)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return wrapPart(m, part, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// wrapPart names the set and the part in an error that does not yet
// (archive's errors about the data do).
func wrapPart(m archive.Manifest, part string, err error) error {
	if errors.Is(err, archive.ErrDamaged) {
		return err
	}
	return fmt.Errorf("%s %s: part %s: %w", m.Kind, m.ID, part, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
