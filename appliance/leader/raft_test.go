package leader_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/leader"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// With a real raft node: alone, it leads once open, and its jobs run and
// write through it; when raft stops, leadership ends and so do the jobs.
func TestARaftNodeRunsItsJobsWhileItLeads(t *testing.T) {
	dir := t.TempDir()
	store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var logs apptest.LogBuffer
	log := logs.Logger(slog.LevelInfo)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	node, err := raftfsm.Open(ctx, raftfsm.Config{Dir: filepath.Join(dir, "raft"), NodeID: "n-test", Logger: log, Bootstrap: true}, store)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			node.Close()
		}
	}()

	wrote := make(chan error, 1)
	jobs := []leader.Job{
		{Name: "queue", Run: func(ctx context.Context) error {
			_, err := node.Apply(ctx, &storage.AddDomain{Name: "written-by-the-leader.test"})
			wrote <- err
			<-ctx.Done()
			return nil
		}},
		{Name: "ca-refresh", Run: func(ctx context.Context) error { <-ctx.Done(); return nil }},
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	done := make(chan struct{})
	go func() {
		defer close(done)
		leader.Run(runCtx, node, jobs, log.With("component", "leader"))
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("a leader job could not write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the jobs did not start on a leading node")
	}
	t.Logf("leadership gained: %s", firstLine(logs.String(), "leader jobs started"))

	// Raft stops: the node no longer leads, and the jobs stop with it.
	node.Close()
	closed = true
	waitFor(t, "the jobs to stop", func() bool { return strings.Contains(logs.String(), "leader jobs stopped: queue, ca-refresh") })
	t.Logf("leadership lost: %s", firstLine(logs.String(), "leader jobs stopped"))
	stopRun()
	<-done
}

func firstLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
