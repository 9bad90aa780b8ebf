package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigillo/storage"
)

func openNode(t testing.TB, dir string, cfg Config) (*Node, *storage.Store) {
	t.Helper()
	store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dir = filepath.Join(dir, "raft")
	cfg.Bootstrap = true
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Open(ctx, cfg, store)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	return n, store
}

func TestCommandsSurviveARestartAndALostDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n, store := openNode(t, dir, Config{SnapshotThreshold: 8, TrailingLogs: 4})
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "example.test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "example.test"}); !storage.IsCode(err, storage.ErrExists) {
		t.Fatalf("duplicate domain: %v", err)
	}
	for i := 0; i < 20; i++ {
		if _, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 25; i++ {
		if _, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	n.Close()
	store.Close()

	// A plain restart: the database is reused, the log tail is skipped.
	n, store = openNode(t, dir, Config{})
	ds, _ := store.Domains(ctx)
	if len(ds) != 26 {
		t.Fatalf("after restart %d domains, want 26", len(ds))
	}
	n.Close()
	store.Close()

	// The database is lost: snapshot + log rebuild it.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "sigillo.db"+suffix))
	}
	n, store = openNode(t, dir, Config{})
	defer store.Close()
	defer n.Close()
	ds, _ = store.Domains(ctx)
	if len(ds) != 26 {
		t.Fatalf("after rebuild %d domains, want 26", len(ds))
	}
}

func TestConcurrentCommandsAreBatchedAndAllAcknowledged(t *testing.T) {
	ctx := context.Background()
	n, store := openNode(t, t.TempDir(), Config{})
	defer store.Close()
	defer n.Close()
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		go func(i int) {
			_, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("c%d.test", i)})
			errs <- err
		}(i)
	}
	for i := 0; i < 200; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ds, _ := store.Domains(ctx)
	if len(ds) != 200 {
		t.Fatalf("%d domains, want 200", len(ds))
	}
}

func TestAStoppedNodeAnswersUnavailable(t *testing.T) {
	n, store := openNode(t, t.TempDir(), Config{})
	defer store.Close()
	n.Close()
	_, err := n.Apply(context.Background(), &storage.AddDomain{Name: "late.test"})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("apply after close: %v", err)
	}
}
