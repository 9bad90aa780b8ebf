package raftfsm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
	"sigillo/storage"
)

// keyCurrentTerm is raft's own key for the current term in the stable
// store (hashicorp/raft's keyCurrentTerm).
var keyCurrentTerm = []byte("CurrentTerm")

// Seed gives an empty raft directory the state of a node that has applied
// everything up to index and is the only voter of its cluster: a raft
// snapshot at index (term term) holding a copy of store's database, whose
// configuration is this node alone (nodeID at addr), and the stable
// store's current term. Open then starts the node as a one-node cluster
// whose log continues at index+1, and other nodes join it as usual (they
// receive the snapshot, then the log after it).
//
// It is how a database restored from a backup becomes a cluster again.
// Starting such a database on a fresh log instead would be wrong: the new
// log would begin at 1, and the store, whose applied index is already
// larger, would skip entries 1 to index of the new cluster as applied,
// losing acknowledged writes.
//
// index must be at least the store's applied index (it may be larger: a
// no-op or configuration entry after the last command advances raft, not
// the store); term at least 1. addr is the raft address the node
// advertises: the [cluster] advertise address of a clustered node, or ""
// for a node without one (its in-memory transport's address is its ID).
// dir must hold no raft state; on error it may hold a part of one, and
// the caller removes it. The store is read (a consistent copy is made),
// not changed.
func Seed(ctx context.Context, dir, nodeID, addr string, store *storage.Store, index, term uint64) error {
	if nodeID == "" {
		return fmt.Errorf("seed raft: no node ID")
	}
	if addr == "" {
		addr = nodeID
	}
	if index == 0 || term == 0 {
		return fmt.Errorf("seed raft: index %d, term %d: both must be at least 1", index, term)
	}
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	if applied > index {
		return fmt.Errorf("seed raft: the database has applied index %d, past the seed index %d: the new log would repeat entries", applied, index)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		return fmt.Errorf("seed raft: snapshot store: %w", err)
	}
	logStore, err := logstore.Open(ctx, filepath.Join(dir, "raft.db"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("seed raft: raft log: %w", err)
	}
	defer logStore.Close()
	has, err := raft.HasExistingState(logStore, logStore, snaps)
	if err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	if has {
		return fmt.Errorf("seed raft: %s already holds raft state", dir)
	}

	// The snapshot first: without it the stable store's term alone would
	// be raft state of a node with no configuration.
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeID), Address: raft.ServerAddress(addr)}}}
	if err := writeSeedSnapshot(ctx, snaps, dir, store, index, term, conf); err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	if err := logStore.SetUint64(keyCurrentTerm, term); err != nil {
		return fmt.Errorf("seed raft: current term: %w", err)
	}
	// The database holds the snapshot (its applied index may be below the
	// snapshot's): Open must not restore it over the database.
	if err := recordSnapshot(logStore, index, applied); err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	return nil
}

// writeSeedSnapshot copies the store into a new raft snapshot: a
// consistent copy in a scratch file first (the live file may have a WAL),
// then into the snapshot's file.
func writeSeedSnapshot(ctx context.Context, snaps *raft.FileSnapshotStore, dir string, store *storage.Store, index, term uint64,
	conf raft.Configuration) error {
	scratch, err := os.MkdirTemp(dir, tempPrefix+"seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	path := filepath.Join(scratch, "db.sqlite")
	if err := store.Snapshot(ctx, path); err != nil {
		return err
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	// The transport only encodes the legacy peer list (raw addresses,
	// whatever the transport) into the snapshot's metadata.
	_, trans := raft.NewInmemTransport(conf.Servers[0].Address)
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, term, conf, index, trans)
	if err != nil {
		return fmt.Errorf("create snapshot: %w", err)
	}
	if _, err := io.Copy(sink, ctxReader{ctx, file}); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}
