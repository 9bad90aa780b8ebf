package raftfsm

// Reading the committed log back, for the backups' log shipping: the
// commands committed since the last snapshot sent to a target, so that a
// restore can go to any point up to the last shipment.

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// ErrLogGone means entries asked for are no longer in this node's raft log:
// a snapshot truncated it past them. A backup then takes a new snapshot.
var ErrLogGone = errors.New("log entries no longer in the raft log (truncated after a snapshot)")

// CommittedEntries calls fn for every log entry from index from up to the
// last one this node has applied (so committed), in order, and returns the
// index of the last entry given (from-1 when there was none). An entry
// before the log's first is ErrLogGone, as is one truncated while it reads.
// fn must not keep l: the next entry reuses it.
func (n *Node) CommittedEntries(ctx context.Context, from uint64, fn func(l *raft.Log) error) (uint64, error) {
	if from == 0 {
		from = 1
	}
	last := n.AppliedIndex()
	if from > last {
		return from - 1, nil
	}
	first, err := n.logStore.FirstIndex()
	if err != nil {
		return from - 1, fmt.Errorf("raft log: %w", err)
	}
	if first == 0 || from < first {
		return from - 1, fmt.Errorf("entries from %d (the log starts at %d): %w", from, first, ErrLogGone)
	}
	var l raft.Log
	for i := from; i <= last; i++ {
		if err := ctx.Err(); err != nil {
			return i - 1, err
		}
		if err := n.logStore.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return i - 1, fmt.Errorf("entry %d: %w", i, ErrLogGone)
			}
			return i - 1, fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if err := fn(&l); err != nil {
			return i - 1, err
		}
	}
	return last, nil
}
