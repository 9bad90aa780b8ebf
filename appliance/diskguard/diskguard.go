// Package diskguard refuses new mail, with a temporary error, while the
// data directory's file system is nearly full, so that a full disk stalls
// neither the raft log nor the database and no client is left waiting:
// Postfix does the same when free space drops under 1.5 times
// message_size_limit. Commands that free space or change little (expunge,
// flags, folder and account changes) still go through. It is not a quota:
// mailbox quotas live in storage.
package diskguard

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"sigillo/storage"
)

// ErrLowDisk is the temporary refusal of new mail.
var ErrLowDisk = errors.New("insufficient system storage")

// Guard watches the file system holding Dir.
type Guard struct {
	Dir string
	// MinFree is the free space, in bytes, under which new mail is refused.
	MinFree int64
	// Free reports the free bytes of Dir's file system; nil reads statfs.
	Free func(dir string) (int64, error)
}

// Check returns ErrLowDisk (wrapped with the figures) when free space is
// under MinFree, or the error of reading it.
func (g *Guard) Check() error {
	free := g.Free
	if free == nil {
		free = statfsFree
	}
	n, err := free(g.Dir)
	if err != nil {
		return fmt.Errorf("free space of %s: %w", g.Dir, err)
	}
	if n < g.MinFree {
		return fmt.Errorf("%w: %d bytes free in %s, %d needed", ErrLowDisk, n, g.Dir, g.MinFree)
	}
	return nil
}

func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Guarded is a storage.Proposer that refuses storage.Deliver commands while the
// disk is low; everything else passes.
type Guarded struct {
	Next  storage.Proposer
	Guard *Guard
}

// Apply implements storage.Proposer.
func (g Guarded) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	if _, ok := cmd.(*storage.Deliver); ok {
		if err := g.Guard.Check(); err != nil {
			return storage.Applied{}, fmt.Errorf("%s: %w", cmd.Op(), err)
		}
	}
	return g.Next.Apply(ctx, cmd)
}
