package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync/atomic"
	"time"

	"sigillo/appliance/backup/archive"
	"sigillo/storage"
)

// partEntries is the one part of a log set.
const partEntries = "entries"

// errEnough stops the walk of the log at the last entry of a set.
var errEnough = errors.New("enough entries")

// shipLog writes the log entries committed after what ts holds, up to the
// applied index, as one log set. It writes nothing when there is nothing
// new. gone is true when the entries are no longer in the raft log: the
// target then needs a snapshot.
func (b *Backuper) shipLog(ctx context.Context, ts *targetState) (gone bool, err error) {
	_, shipped, _ := b.position(ts)
	applied, err := b.src.AppliedIndex(ctx)
	if err != nil {
		return false, fmt.Errorf("log to %s: applied index: %w", ts.name, err)
	}
	if applied <= shipped {
		return false, nil
	}
	from, to := shipped+1, applied
	m := archive.Manifest{
		Kind:       archive.KindLog,
		ID:         archive.LogID(from, to),
		Time:       b.cfg.Now().UTC(),
		Index:      to,
		FirstIndex: from,
		Version:    b.cfg.Version,
		Schema:     storage.SchemaVersion(),
		Node:       b.cfg.NodeID,
	}
	var logGone atomic.Bool
	part := archive.Source{Name: partEntries, Kind: "log", Open: func(ctx context.Context) (io.ReadCloser, error) {
		return produce(ctx, func(ctx context.Context, w io.Writer) error {
			err := b.writeEntries(ctx, w, from, to)
			if errors.Is(err, ErrLogGone) {
				logGone.Store(true)
			}
			return err
		}), nil
	}}
	start := time.Now()
	written, err := archive.Write(ctx, ts.t.Store, m, []archive.Source{part}, b.cfg.Options)
	if errors.Is(err, fs.ErrExist) {
		written, err = archive.ReadManifest(ctx, ts.t.Store, m.Kind, m.ID)
	}
	if err != nil {
		if logGone.Load() {
			b.log.Info("backup log entries gone from the raft log: a snapshot follows", "target", ts.name, "from", from)
			return true, nil
		}
		return false, err // archive's errors name the set and the target
	}
	b.succeeded(ts, written)
	b.log.Debug("backup log shipped", "target", ts.name, "id", written.ID, "entries", to-from+1,
		"duration", time.Since(start).Round(time.Millisecond))
	return false, nil
}

// writeEntries writes the entries from..to, every one of them, to w.
func (b *Backuper) writeEntries(ctx context.Context, w io.Writer, from, to uint64) error {
	ew := archive.NewEntryWriter(w)
	next := from
	err := b.src.LogEntries(ctx, from, func(e archive.Entry) error {
		if e.Index > to {
			return errEnough
		}
		if e.Index != next {
			if next == from && e.Index > from {
				return fmt.Errorf("the log starts at %d, not %d: %w", e.Index, from, ErrLogGone)
			}
			return fmt.Errorf("log entry %d where %d was expected", e.Index, next)
		}
		next++
		if err := ew.Write(e); err != nil {
			return err
		}
		if next > to {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return fmt.Errorf("log entries from %d: %w", from, err)
	}
	if next <= to {
		return fmt.Errorf("log entries from %d: the log ended at %d, before %d", from, next-1, to)
	}
	return ew.Close()
}
