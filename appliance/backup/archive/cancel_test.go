package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"filippo.io/age"

	"sigillo/appliance/backup/archive"
)

// settledGoroutines waits for the goroutine count to come back to at most want.
func settledGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cancelAfter reads r and cancels once n bytes went through.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// A backup stopped half way (the node shuts down) returns at once with the context's error,
// leaves nothing on the target and no goroutine behind; so does a read stopped half way.
func TestAStoppedBackupLeavesNothing(t *testing.T) {
	root := t.TempDir()
	st := fileTarget(t, root)
	key := newKey(t)
	base := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srcs := sources(nodeFiles(t))
	srcs[0].Open = func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(&cancelAfter{r: newBigDB(1 << 30), n: 8 << 20, cancel: cancel}), nil
	}
	_, err := archive.Write(ctx, st, snapshotManifest(), srcs, archive.Options{Recipients: []age.Recipient{key.Recipient()}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "snapshots", snapshotManifest().ID)); len(left) != 0 {
		t.Errorf("left on the target: %v", left)
	}
	settledGoroutines(t, base)

	m, err := archive.Write(context.Background(), st, snapshotManifest(), sources(nodeFiles(t)), archive.Options{Recipients: []age.Recipient{key.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rc, err := archive.OpenPart(rctx, st, m, "sigillo.db", []age.Identity{key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	rcancel()
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	rc.Close()
	// Opened and closed without reading to the end.
	rc, err = archive.OpenPart(context.Background(), st, m, "sigillo.db", []age.Identity{key})
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	settledGoroutines(t, base)
}

// A log set: raft entries encoded into the "entries" part, written encrypted, read back in order.
func TestALogSetCarriesEntries(t *testing.T) {
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	key := newKey(t)
	want := sampleEntries()
	body := encodeEntries(t, want)
	m := archive.Manifest{
		Kind: archive.KindLog, ID: archive.LogID(48214, 48990), Time: taken, FirstIndex: 48214, Index: 48990,
		Version: "test", Schema: 7, Node: "n1",
	}
	written, err := archive.Write(ctx, st, m, []archive.Source{{Name: "entries", Kind: "log", Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}}}, archive.Options{Recipients: []age.Recipient{key.Recipient()}})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := archive.Sets(ctx, st, archive.KindLog)
	if err != nil || len(logs) != 1 || logs[0].ID != "00000000000000048214-00000000000000048990" || logs[0].Parts[0] != written.Parts[0] {
		t.Fatalf("log sets %v, %v", logs, err)
	}
	rc, err := archive.OpenPart(ctx, st, logs[0], "entries", []age.Identity{key})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	r := archive.NewEntryReader(rc)
	for i := 0; ; i++ {
		e, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Errorf("%d entries, wrote %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !sameEntry(e, want[i]) {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
}
