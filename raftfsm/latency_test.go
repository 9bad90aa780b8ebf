package raftfsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"sigillo/storage"
)

func TestCommitLatencyDescribesTheLatestCommits(t *testing.T) {
	ctx := context.Background()
	n, store := openNode(t, t.TempDir(), Config{})
	defer store.Close()
	defer n.Close()
	if p50, p99 := n.CommitLatency(); p50 != 0 || p99 != 0 {
		t.Fatalf("before any command: p50 %v p99 %v, want zeros", p50, p99)
	}
	// Refusals among them: a refusal was committed too.
	const commands = 60
	for i := range commands {
		_, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i%(commands/2))})
		if err != nil && !storage.IsCode(err, storage.ErrExists) {
			t.Fatal(err)
		}
	}
	p50, p99 := n.CommitLatency()
	if p50 <= 0 || p99 < p50 || p99 > 10*time.Second {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	t.Logf("%d commits on a lone node: p50 %v, p99 %v", commands, p50, p99)
}

func TestCommitLatencyPercentiles(t *testing.T) {
	var n Node
	for i := 1; i <= 100; i++ {
		n.latency.record(time.Duration(i) * time.Millisecond)
	}
	if p50, p99 := n.CommitLatency(); p50 != 51*time.Millisecond || p99 != 99*time.Millisecond {
		t.Fatalf("1..100 ms: p50 %v p99 %v, want 51ms 99ms", p50, p99)
	}
	// The ring forgets the oldest: after 1,024 samples of 1 ms, the 100
	// larger ones are gone.
	for range latencySamples {
		n.latency.record(time.Millisecond)
	}
	if p50, p99 := n.CommitLatency(); p50 != time.Millisecond || p99 != time.Millisecond {
		t.Fatalf("after the ring turned: p50 %v p99 %v, want 1ms", p50, p99)
	}
}
