package cluster

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Barrier catches this node up with the leader: it asks the leader how far
// it has applied and waits until this node has applied as much. Reads on a
// follower are local and may lag by the replication delay; a caller that
// must see a change made through another node an instant ago (a login to
// a mailbox just made, a password just changed) calls Barrier and reads
// again. On the leader it returns at once.
func (f *Forwarder) Barrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addr, err := f.leader(ctx, "")
	if err != nil {
		return fmt.Errorf("read barrier: %w", err)
	}
	if addr == "" {
		return nil
	}
	var st NodeStatus
	if err := call(ctx, f.Client, http.MethodGet, addr, PathStatus, nil, &st); err != nil {
		return fmt.Errorf("read barrier: the leader's applied index: %w", err)
	}
	if err := f.Node.WaitApplied(ctx, st.AppliedIndex); err != nil {
		return fmt.Errorf("read barrier: %w", err)
	}
	return nil
}
