package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/appliance/backup/archive"
	"sigillo/storage"
)

// Batches of log commands applied in one transaction, as the FSM bounds
// them.
const (
	batchEntries = 256
	batchBytes   = 64 << 20
)

// replay applies the log sets after the snapshot to the store.
type replay struct {
	ctx   context.Context
	o     Options
	store *storage.Store
	dir   string // scratch files go here, and are removed
	log   *slog.Logger

	next     uint64 // the index of the next entry to apply
	entries  int
	commands int
	lastTerm uint64
	// lastAppended is the AppendedAt of the last entry applied.
	lastAppended time.Time

	batch     []storage.Entry
	batchSize int
}

// run replays every log set that follows, in order, until At, the end of
// the log, or a gap.
func (rp *replay) run(rep *Report) error {
	sets, err := archive.Sets(rp.ctx, rp.o.From, archive.KindLog)
	if err != nil {
		if rp.ctx.Err() != nil {
			return err
		}
		// An unreadable log manifest is a set missing: the replay stops at
		// the gap it leaves, and says so.
		rep.Warnings = append(rep.Warnings, err.Error())
		rp.log.Warn("some log manifests cannot be read", "err", err)
	}
	rep.LogEnd = "end"
	for _, m := range sets {
		if m.Index < rp.next {
			continue // entirely before what the store holds
		}
		if m.FirstIndex > rp.next {
			rep.LogEnd = fmt.Sprintf("gap: entries %d to %d are in no log set (next set %s); nothing after was applied",
				rp.next, m.FirstIndex-1, m.ID)
			break
		}
		end, err := rp.apply(m)
		if err != nil {
			return err
		}
		rep.LogSets++
		if end != "" {
			rep.LogEnd = end
			break
		}
	}
	if err := rp.flush(); err != nil {
		return err
	}
	if rep.LogEnd != "end" && rep.LogEnd != "at" {
		rp.log.Warn("log replay stopped at a gap", "reason", rep.LogEnd)
	}
	return nil
}

// apply replays one log set. It returns why the replay ends within it
// ("at", "gap …"), or "" to go on with the next set.
func (rp *replay) apply(m archive.Manifest) (string, error) {
	part, err := partOfKind(m, "log")
	if err != nil {
		return "", err
	}
	// The part is checked to its end before any of it is applied: a damaged
	// set is refused whole, not applied up to the damage.
	scratch, err := os.MkdirTemp(rp.dir, "tmp-restore-log-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scratch)
	path := filepath.Join(scratch, part)
	if err := writePart(rp.ctx, rp.o, m, part, path); err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r := archive.NewEntryReader(f)
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("log %s: part %s: %w", m.ID, part, err)
		}
		if e.Index < rp.next {
			continue
		}
		if e.Index > rp.next {
			return fmt.Sprintf("gap: entry %d is missing from log set %s (it goes on at %d); nothing after was applied",
				rp.next, m.ID, e.Index), nil
		}
		if !rp.o.At.IsZero() && e.AppendedAt.After(rp.o.At) {
			return "at", nil
		}
		if raft.LogType(e.Type) == raft.LogCommand {
			rp.batch = append(rp.batch, storage.Entry{Index: e.Index, Data: e.Data})
			rp.batchSize += len(e.Data)
			rp.commands++
		}
		rp.entries++
		rp.next = e.Index + 1
		rp.lastTerm = e.Term
		rp.lastAppended = e.AppendedAt
		if len(rp.batch) >= batchEntries || rp.batchSize >= batchBytes {
			if err := rp.flush(); err != nil {
				return "", err
			}
		}
	}
}

// flush applies the batch of commands, as the FSM does: a command's
// refusal is its result (the cluster refused it too), not an error.
func (rp *replay) flush() error {
	if len(rp.batch) == 0 {
		return nil
	}
	_, err := rp.store.Apply(rp.ctx, rp.batch)
	var unknown *storage.UnknownCommandError
	if errors.As(err, &unknown) {
		return fmt.Errorf("log entry %d: %w: restore with the Sigillo version that wrote it, or with an --at before it", unknown.Index, err)
	}
	if err != nil {
		return fmt.Errorf("apply log entries %d to %d: %w", rp.batch[0].Index, rp.batch[len(rp.batch)-1].Index, err)
	}
	rp.batch, rp.batchSize = rp.batch[:0], 0
	return nil
}
