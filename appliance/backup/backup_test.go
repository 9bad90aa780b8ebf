package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/target"
	"sigillo/storage"
)

// restoreDatabase reads the database part of m on st into a file and opens
// it read-only.
func restoreDatabase(t *testing.T, st archive.Store, m archive.Manifest, ids ...age.Identity) *storage.Store {
	t.Helper()
	rc, err := archive.OpenPart(context.Background(), st, m, "sigillo.db", ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	path := filepath.Join(t.TempDir(), "restored.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatalf("read the database part back: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := storage.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readPart(t *testing.T, st archive.Store, m archive.Manifest, part string, ids ...age.Identity) []byte {
	t.Helper()
	rc, err := archive.OpenPart(context.Background(), st, m, part, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read part %s back: %v", part, err)
	}
	return b
}

func TestBackupNowWritesOneSnapshotToBothTargetsAndListShowsIt(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 3)
	one, two := newFileTarget(t), newFileTarget(t)
	toml := filepath.Join(t.TempDir(), "sigillo.toml")
	if err := os.WriteFile(toml, []byte("[backup]\ninterval = \"1h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "acme-storage.key")
	if err := os.WriteFile(secret, []byte("SECRET KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs apptest.LogBuffer
	tmp := t.TempDir()
	b := backup.New(backup.Config{
		Targets:    []backup.Target{{Store: one.store}, {Store: two.store}},
		ConfigFile: toml, SecretFiles: []string{secret},
		NodeID: "node-1", Version: "1.2.3", TempDir: tmp,
		Logger: logs.Logger(slog.LevelInfo),
	}, n)

	last := map[string]backup.Progress{}
	reports := 0
	results, err := b.Now(ctx, func(p backup.Progress) { last[p.Target] = p; reports++ })
	if err != nil {
		t.Fatalf("backup now: %v", err)
	}
	if len(results) != 2 || results[0].ID != results[1].ID || results[0].Err != nil || results[1].Err != nil {
		t.Fatalf("results: %+v", results)
	}
	applied, _ := n.AppliedIndex(ctx)
	for i, st := range []archive.Store{one.store, two.store} {
		r := results[i]
		if r.Target != st.String() || r.Bytes <= 0 || !strings.HasSuffix(r.ID, "-"+itoa(applied)) {
			t.Errorf("result %d: %+v (applied index %d)", i, r, applied)
		}
		p := last[st.String()]
		if !p.Done || p.Err != nil || p.Bytes != r.Bytes || p.Read != p.Total || p.Total == 0 {
			t.Errorf("last progress of %s: %+v, result %+v", st, p, r)
		}
		ms := snapshots(t, st)
		if len(ms) != 1 {
			t.Fatalf("%s holds %d snapshots", st, len(ms))
		}
		m := ms[0]
		var names []string
		for _, p := range m.Parts {
			names = append(names, p.Name)
		}
		if m.ID != r.ID || m.Index != applied || m.Node != "node-1" || m.Version != "1.2.3" ||
			m.Schema != storage.SchemaVersion() || m.Encrypted || strings.Join(names, ",") != "sigillo.db,sigillo.toml" {
			t.Errorf("manifest on %s: %+v", st, m)
		}
		want := map[string]int64{"domains": 1, "mailboxes": 2, "messages": 3}
		if !equalCounts(m.Counts, want) {
			t.Errorf("manifest counts %v, want %v", m.Counts, want)
		}
		got, err := restoreDatabase(t, st, m).Counts(ctx)
		if err != nil || !equalCounts(got, want) {
			t.Errorf("the stored database counts %v (%v), want %v", got, err, want)
		}
		if got := readPart(t, st, m, "sigillo.toml"); string(got) != "[backup]\ninterval = \"1h\"\n" {
			t.Errorf("stored config: %q", got)
		}
	}
	t.Logf("%d progress reports; stored %d bytes on each target", reports, results[0].Bytes)

	listed, err := backup.List(ctx, []archive.Store{one.store, two.store})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || listed[0].Target != one.store.String() || listed[1].Target != two.store.String() {
		t.Fatalf("list: %+v", listed)
	}
	for i, l := range listed {
		if l.ID != results[0].ID || l.Index != applied || l.Bytes != results[i].Bytes || l.State != "complete" || l.Time.IsZero() {
			t.Errorf("listed: %+v", l)
		}
	}
	js, _ := json.Marshal(listed[0])
	var fields map[string]any
	json.Unmarshal(js, &fields)
	if len(fields) != 6 || fields["id"] == nil || fields["target"] == nil || fields["time"] == nil ||
		fields["index"] == nil || fields["bytes"] == nil || fields["state"] == nil {
		t.Errorf("list JSON: %s", js)
	}
	t.Logf("list --json: %s", js)
	if st := b.Status(); st[0].LastID != results[0].ID || st[0].Failures != 0 || st[1].LastSnapshot != results[0].ID {
		t.Errorf("status: %+v", st)
	}
	// Unencrypted: the secret is not stored, and the log says so (once).
	if _, err := b.Now(ctx, nil); err != nil {
		t.Fatalf("second backup now: %v", err)
	}
	if c := strings.Count(logs.String(), "hold no secret files"); c != 1 {
		t.Errorf("the note on secrets appears %d times:\n%s", c, logs.String())
	}
	for _, f := range []*fileTarget{one, two} {
		filepath.WalkDir(f.dir, func(path string, _ os.DirEntry, _ error) error {
			if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte("SECRET KEY")) {
				t.Errorf("%s holds the secret in the clear", path)
			}
			return nil
		})
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the temporary copy is left: %v", left)
	}

}

func TestAnEncryptedBackupHoldsTheSecretFilesAndNothingInTheClear(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 2)
	tgt := newFileTarget(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "acme-storage.key")
	if err := os.WriteFile(secret, []byte("SECRET KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(t.TempDir(), "not-there.key")
	b := backup.New(backup.Config{
		Targets:     []backup.Target{{Store: tgt.store}},
		SecretFiles: []string{secret, absent},
		Options:     archive.Options{Recipients: []age.Recipient{id.Recipient()}},
	}, n)
	if _, err := b.Now(ctx, nil); err != nil {
		t.Fatal(err)
	}
	m := snapshots(t, tgt.store)[0]
	if !m.Encrypted || len(m.Parts) != 2 || m.Parts[1].Name != "secrets.tar" {
		t.Fatalf("manifest: %+v", m)
	}
	tarball := readPart(t, tgt.store, m, "secrets.tar", id)
	if !bytes.Contains(tarball, []byte("SECRET KEY")) || !bytes.Contains(tarball, []byte("acme-storage.key")) ||
		bytes.Contains(tarball, []byte("not-there")) {
		t.Errorf("secrets.tar (%d bytes) does not hold the key file alone", len(tarball))
	}
	if got, err := restoreDatabase(t, tgt.store, m, id).Counts(ctx); err != nil || got["messages"] != 2 {
		t.Errorf("restored counts %v, %v", got, err)
	}
	filepath.WalkDir(tgt.dir, func(path string, _ os.DirEntry, _ error) error {
		if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte("SECRET KEY")) {
			t.Errorf("%s holds the secret in the clear", path)
		}
		return nil
	})
}

func TestOneTargetDownDoesNotStopTheOtherAndItCatchesUpWhenFixed(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 2)
	good, bad := newFileTarget(t), newFileTarget(t)
	bad.breakIt(t)
	b := backup.New(backup.Config{
		Interval: 50 * time.Millisecond, LogInterval: 20 * time.Millisecond,
		Targets: []backup.Target{{Store: good.store}, {Store: bad.store}},
		Logger:  apptest.Logger(t),
	}, n)

	// backup now: the good target has it, the error names the bad one.
	results, err := b.Now(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), bad.store.String()) || strings.Contains(err.Error(), good.store.String()) {
		t.Fatalf("backup now with one target down: %v", err)
	}
	if results[0].Err != nil || results[1].Err == nil || len(snapshots(t, good.store)) != 1 {
		t.Fatalf("results: %+v", results)
	}
	t.Logf("backup now: %v", err)

	// The job: the bad target keeps failing, with its error and a next
	// attempt shown; the good one goes on (a change, then its snapshot).
	stop := runJob(t, b)
	n.deliver(1, 1)
	eventually(t, "a failing target shown with 3 failures", func() bool { return b.Status()[1].Failures >= 3 })
	eventually(t, "the good target shipping the change", func() bool {
		applied, _ := n.AppliedIndex(ctx)
		return b.Status()[0].ShippedIndex == applied
	})
	st := b.Status()
	if !strings.Contains(st[1].LastError, bad.store.String()) || st[1].LastErrorTime.IsZero() || st[1].NextAttempt.IsZero() || st[1].LastSnapshot != "" {
		t.Errorf("status of the failing target: %+v", st[1])
	}
	if st[0].Failures != 0 || st[0].LastID == "" {
		t.Errorf("status of the good target: %+v", st[0])
	}
	t.Logf("failing target: %d failures, last error %q, next attempt in %v",
		st[1].Failures, st[1].LastError, time.Until(st[1].NextAttempt).Round(time.Millisecond))

	bad.fix(t)
	eventually(t, "the fixed target caught up", func() bool { return len(snapshots(t, bad.store)) == 1 })
	applied, _ := n.AppliedIndex(ctx)
	if m := snapshots(t, bad.store)[0]; m.Index != applied {
		t.Errorf("catch-up snapshot at %d, applied %d", m.Index, applied)
	}
	eventually(t, "the failure count reset", func() bool { return b.Status()[1].Failures == 0 })
	stop()
	if st := b.Status(); !st[0].NextAttempt.IsZero() {
		t.Errorf("a next attempt shown after Run stopped: %+v", st[0])
	}
}

func TestNothingChangedNoNewSnapshot(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 1)
	tgt := newFileTarget(t)
	cfg := backup.Config{
		Interval: 50 * time.Millisecond, LogInterval: time.Hour,
		Targets: []backup.Target{{Store: tgt.store}},
		Logger:  apptest.Logger(t),
	}
	b := backup.New(cfg, n)
	stop := runJob(t, b)
	eventually(t, "the first snapshot", func() bool { return len(snapshots(t, tgt.store)) == 1 })
	time.Sleep(6 * cfg.Interval) // several ticks, nothing applied
	if got := len(snapshots(t, tgt.store)); got != 1 {
		t.Fatalf("%d snapshots after ticks without a change, want 1", got)
	}
	stop()

	// A new leader (a new Backuper) reads the target and skips too.
	stop = runJob(t, backup.New(cfg, n))
	time.Sleep(6 * cfg.Interval)
	if got := len(snapshots(t, tgt.store)); got != 1 {
		t.Fatalf("a new leader wrote %d snapshots without a change, want 1", got)
	}
	n.deliver(1, 1)
	eventually(t, "a snapshot of the change", func() bool { return len(snapshots(t, tgt.store)) == 2 })
	stop()
	applied, _ := n.AppliedIndex(ctx)
	if ms := snapshots(t, tgt.store); ms[1].Index != applied {
		t.Errorf("newest snapshot at %d, applied %d", ms[1].Index, applied)
	}
}

func TestRetentionKeepsTheLastTwoOfFive(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 1)
	keep2, keepAll := newFileTarget(t), newFileTarget(t)
	clock := apptest.NewClock(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	b := backup.New(backup.Config{
		Targets: []backup.Target{{Store: keep2.store, Retention: target.Retention{KeepLast: 2}}, {Store: keepAll.store}},
		Now:     clock.Now,
	}, n)
	var ids []string
	for i := 0; i < 5; i++ {
		n.deliver(1, 1)
		r, err := b.Now(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r[0].ID)
		clock.Add(time.Hour)
	}
	var kept []string
	for _, m := range snapshots(t, keep2.store) {
		kept = append(kept, m.ID)
	}
	if strings.Join(kept, " ") != strings.Join(ids[3:], " ") {
		t.Errorf("keep_last = 2 kept %v of %v", kept, ids)
	}
	if got := len(snapshots(t, keepAll.store)); got != 5 {
		t.Errorf("no retention kept %d of 5", got)
	}
	listed, _ := backup.List(ctx, []archive.Store{keep2.store, keepAll.store})
	if len(listed) != 7 || listed[6].ID != ids[4] || listed[0].ID != ids[0] {
		t.Errorf("list: %+v", listed)
	}
	// Nothing of the dropped sets is left.
	filepath.WalkDir(keep2.dir, func(path string, d os.DirEntry, _ error) error {
		for _, id := range ids[:3] {
			if !d.IsDir() && strings.Contains(path, id) {
				t.Errorf("%s left", path)
			}
		}
		return nil
	})
}

func TestTheLogCommittedAfterASnapshotIsShipped(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	mbox := n.mailDomain("example.test", 1)
	tgt := newFileTarget(t)
	cfg := backup.Config{
		Interval: time.Hour, LogInterval: 20 * time.Millisecond,
		Targets: []backup.Target{{Store: tgt.store, Retention: target.Retention{KeepLast: 1}}},
		Logger:  apptest.Logger(t),
	}
	b := backup.New(cfg, n)
	if _, err := b.Now(ctx, nil); err != nil {
		t.Fatal(err)
	}
	snapIndex := snapshots(t, tgt.store)[0].Index

	stop := runJob(t, b)
	n.deliver(mbox, 3)
	applied, _ := n.AppliedIndex(ctx)
	eventually(t, "a log set up to the applied index", func() bool {
		ls := logSets(t, tgt.store)
		return len(ls) > 0 && ls[len(ls)-1].Index == applied
	})
	ls := logSets(t, tgt.store)
	if ls[0].FirstIndex != snapIndex+1 {
		t.Errorf("first log set starts at %d, the snapshot is at %d", ls[0].FirstIndex, snapIndex)
	}
	var got []uint64
	for _, m := range ls {
		r := archive.NewEntryReader(bytes.NewReader(readPart(t, tgt.store, m, "entries")))
		for {
			e, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("log %s: %v", m.ID, err)
			}
			c, err := storage.Decode(e.Data)
			if err != nil || c.Op() != "deliver" {
				t.Errorf("entry %d: %v, %v", e.Index, c, err)
			}
			got = append(got, e.Index)
		}
	}
	want := []uint64{snapIndex + 1, snapIndex + 2, snapIndex + 3}
	if !equalIndexes(got, want) {
		t.Errorf("shipped entries %v, want %v", got, want)
	}
	t.Logf("%d log sets hold entries %v", len(ls), got)

	// The raft log is compacted past what the target holds: a snapshot is
	// taken instead of a log set.
	stop()
	n.deliver(mbox, 1)
	n.compact()
	n.deliver(mbox, 1)
	stop = runJob(t, backup.New(cfg, n))
	applied, _ = n.AppliedIndex(ctx)
	// Retention (keep_last = 1) then drops the first snapshot and the logs it made useless.
	eventually(t, "a snapshot in place of the lost entries, alone on the target", func() bool {
		ms, ls := snapshots(t, tgt.store), logSets(t, tgt.store)
		return len(ms) == 1 && ms[0].Index == applied && len(ls) == 0
	})
	stop()
}

func TestADamagedManifestIsListedAsDamaged(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 1)
	tgt := newFileTarget(t)
	clock := apptest.NewClock(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC))
	b := backup.New(backup.Config{Targets: []backup.Target{{Store: tgt.store}}, Now: clock.Now}, n)
	var ids []string
	for i := 0; i < 2; i++ {
		n.deliver(1, 1)
		r, err := b.Now(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r[0].ID)
		clock.Add(time.Hour)
	}
	if err := os.WriteFile(filepath.Join(tgt.dir, "snapshots", ids[0], "manifest.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tgt.dir, "snapshots", ids[1], "sigillo.db")); err != nil {
		t.Fatal(err)
	}
	listed, err := backup.List(ctx, []archive.Store{tgt.store})
	if err != nil || len(listed) != 2 {
		t.Fatalf("list: %+v, %v", listed, err)
	}
	for i, l := range listed {
		if l.ID != ids[i] || !strings.HasPrefix(l.State, "damaged: ") || l.Time.IsZero() || l.Index == 0 {
			t.Errorf("listed: %+v", l)
		}
		t.Logf("%s: %s", l.ID, l.State)
	}
	if !strings.Contains(listed[1].State, "sigillo.db") {
		t.Errorf("the missing part is not named: %s", listed[1].State)
	}
}

func TestListNamesATargetItCannotRead(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	n.mailDomain("example.test", 1)
	good, bad := newFileTarget(t), newFileTarget(t)
	if _, err := backup.New(backup.Config{Targets: []backup.Target{{Store: good.store}}}, n).Now(ctx, nil); err != nil {
		t.Fatal(err)
	}
	bad.breakIt(t)
	listed, err := backup.List(ctx, []archive.Store{good.store, bad.store})
	if len(listed) != 1 || err == nil || !strings.Contains(err.Error(), bad.store.String()) {
		t.Fatalf("list with a broken target: %+v, %v", listed, err)
	}
	t.Logf("list: %v", err)
}

// TestMemoryStaysFlatWhileALargeStoreIsBackedUp backs up a store of
// 100 MB of messages to two targets at once and samples the heap.
func TestMemoryStaysFlatWhileALargeStoreIsBackedUp(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("fills a 100 MB store (never skipped under CI=true)")
	}
	ctx := context.Background()
	n := newNode(t)
	mbox := n.mailDomain("example.test", 0)
	const messages, size = 100, 1 << 20
	body := make([]byte, size)
	for i := 0; i < messages; i++ {
		fillIncompressible(body, uint64(i))
		n.apply(&storage.Deliver{Targets: []storage.Target{{MailboxID: mbox}},
			Data: append([]byte("Subject: big\r\n\r\n"), body...), InternalDate: 5})
	}
	n.compact() // the test's in-memory log would count against the heap
	one, two := newFileTarget(t), newFileTarget(t)
	b := backup.New(backup.Config{Targets: []backup.Target{{Store: one.store}, {Store: two.store}}}, n)

	body = nil
	runtime.GC()
	base, peak := heapInuse(), uint64(0)
	var wg sync.WaitGroup
	stopSampling := make(chan struct{})
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, heapInuse())
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	results, err := b.Now(ctx, nil)
	took := time.Since(start)
	close(stopSampling)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	m := snapshots(t, one.store)[0]
	growth := int64(peak) - int64(base)
	t.Logf("backup of %d MB (%d messages) to two targets in %v: stored %d and %d bytes; heap in use %d MB before, peak %d MB (growth %d MB)",
		m.Parts[0].RawBytes>>20, m.Counts["messages"], took.Round(time.Millisecond), results[0].Bytes, results[1].Bytes,
		base>>20, peak>>20, growth>>20)
	if m.Parts[0].RawBytes < messages*size {
		t.Fatalf("the database is only %d bytes", m.Parts[0].RawBytes)
	}
	if growth > 48<<20 {
		t.Errorf("the heap grew by %d MB while backing up %d MB", growth>>20, m.Parts[0].RawBytes>>20)
	}
}
