package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
	"sigillo/storage"
)

// Recover rewrites the cluster membership of a STOPPED node, for when its
// cluster has lost its quorum for good (two of three nodes destroyed):
// no leader can ever be elected again, so no command can commit, and
// raft's own membership changes, which need a quorum, cannot help.
//
// THIS IS THE LAST RESORT, AND IT CAN LOSE DATA. It wraps
// raft.RecoverCluster: every entry in this node's log is applied to its
// store as if committed, including entries the old cluster never
// committed (a client that was told "try again" may find its command
// done); whatever the lost nodes committed that never reached this node
// is gone for good; and the node forgets the old membership for servers.
// Use it only when the lost nodes will never come back: a node of the old
// membership that returns would hold a history the new cluster does not
// share. Wipe such a node's data before it joins again.
//
// The node must not be running (Recover takes raft.db's lock and fails if
// the node holds it). servers is the new membership and must name this
// node (cfg.NodeID) as a voter. The safe recipe is one survivor, the one
// with the longest log, recovered with servers = itself alone: afterwards
// Open elects it leader by itself, and the other nodes join it again from
// empty data directories. Recovering several survivors with the same
// servers each is what raft documents, but their unreplicated tails may
// differ and then their stores do.
//
// The store keeps what it holds; Recover applies the log after it, makes
// a snapshot holding the new membership, and empties the log. A log
// holding a command this binary does not know (storage.CommandVersion)
// is refused before anything changes: recover with the newer binary.
func Recover(cfg Config, store *storage.Store, servers []raft.Server) error {
	cfg.setDefaults()
	logger := cfg.Logger.With("component", "raft", "op", "recover")
	self := false
	for _, s := range servers {
		if s.ID == raft.ServerID(cfg.NodeID) && s.Suffrage == raft.Voter {
			self = true
		}
	}
	if !self {
		return fmt.Errorf("recover: the new membership %v does not have this node (%s) as a voter", servers, cfg.NodeID)
	}
	ctx := context.Background()
	logStore, err := logstore.Open(ctx, filepath.Join(cfg.Dir, "raft.db"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("recover: raft log (is the node still running?): %w", err)
	}
	defer logStore.Close()
	snaps, err := raft.NewFileSnapshotStore(cfg.Dir, 2, io.Discard)
	if err != nil {
		return fmt.Errorf("recover: snapshot store: %w", err)
	}
	if _, err := catchUpFromSnapshot(ctx, snaps, store, logStore, logger); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := checkKnown(ctx, store, logStore); err != nil {
		return fmt.Errorf("recover: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{logger}})
	transport := cfg.Transport
	if transport == nil {
		_, transport = raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID))
		defer transport.(io.Closer).Close()
	}
	f := newFSM(store, logger, int(cfg.TrailingLogs))
	defer f.halt()
	if err := raft.RecoverCluster(rc, recoverFSM{f}, logStore, logStore, snaps, transport,
		raft.Configuration{Servers: servers}); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	// The store holds the snapshot just made: Open must not restore it.
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return fmt.Errorf("recover: the new snapshot is not there (%v)", err)
	}
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := recordSnapshot(logStore, list[0].Index, applied); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	logger.Warn("cluster membership rewritten: the node will start with the new membership only",
		"servers", fmt.Sprint(servers), "snapshot_index", list[0].Index, "applied", applied)
	return nil
}

// checkKnown refuses a log that holds, after what the store has applied, a
// command this binary does not know: RecoverCluster would apply what comes
// after it and then delete the log.
func checkKnown(ctx context.Context, store *storage.Store, logs *logstore.Store) error {
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		return err
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	for i := max(first, applied+1); i <= last && i > 0; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("raft log entry %d: %w", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if _, err := storage.Decode(l.Data); errors.Is(err, storage.ErrUnknownCommand) {
			return fmt.Errorf("log entry %d: %w", i, err)
		}
	}
	return nil
}

// recoverFSM is the FSM for RecoverCluster, which first restores the
// newest snapshot: the store is already at least there
// (catchUpFromSnapshot), so that copy is skipped.
type recoverFSM struct{ *fsm }

func (recoverFSM) Restore(rc io.ReadCloser) error { return rc.Close() }
