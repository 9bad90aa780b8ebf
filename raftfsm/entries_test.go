package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"sigillo/storage"
)

func TestTheCommittedLogCanBeReadBackUntilASnapshotTruncatesIt(t *testing.T) {
	ctx := context.Background()
	n, store := openNode(t, t.TempDir(), Config{SnapshotThreshold: 1 << 20, TrailingLogs: 2})
	defer store.Close()
	defer n.Close()
	var added []uint64
	for i := 0; i < 5; i++ {
		a, err := n.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("d%d.test", i)})
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, a.Index)
	}
	var got []string
	last, err := n.CommittedEntries(ctx, added[1], func(l *raft.Log) error {
		if l.Type != raft.LogCommand {
			return nil
		}
		c, err := storage.Decode(l.Data)
		if err != nil {
			return err
		}
		got = append(got, c.(*storage.AddDomain).Name)
		if l.AppendedAt.IsZero() {
			t.Errorf("entry %d has no time", l.Index)
		}
		return nil
	})
	if err != nil || last != added[4] || fmt.Sprint(got) != "[d1.test d2.test d3.test d4.test]" {
		t.Fatalf("entries from %d: %v up to %d, %v; want d1..d4 up to %d", added[1], got, last, err, added[4])
	}
	if last, err := n.CommittedEntries(ctx, added[4]+1, func(*raft.Log) error { return errors.New("called") }); err != nil || last != added[4] {
		t.Fatalf("nothing new: %d, %v", last, err)
	}

	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, &storage.AddDomain{Name: "after.test"}); err != nil {
		t.Fatal(err)
	}
	_, err = n.CommittedEntries(ctx, added[0], func(*raft.Log) error { return nil })
	if !errors.Is(err, ErrLogGone) {
		t.Fatalf("entries truncated by the snapshot: %v, want ErrLogGone", err)
	}
	t.Logf("after the snapshot: %v", err)
}
