package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/restore"
	"sigillo/appliance/backup/target"
	"sigillo/storage"
)

// BenchmarkBackup100k: a store of 100,000 messages (BENCH_BACKUP_MESSAGES)
// backed up to a directory and to S3 (versitygw) at once, then restored
// from the directory: time, peak memory of the process (RSS high-water
// mark, reset before each step, and the Go heap in use sampled every
// 20 ms), bytes on each target. Streamed means the peak does not grow with
// the store.
func BenchmarkBackup100k(b *testing.B) {
	n := 100_000
	if s := os.Getenv("BENCH_BACKUP_MESSAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ctx := context.Background()
	dir := b.TempDir()
	store, err := storage.Open(filepath.Join(dir, "sigillo.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	p := apptest.NewProposer(store)
	p.Must(b, &storage.AddDomain{Name: "bench.test", At: 1})
	mbox := p.Must(b, &storage.AddMailbox{Address: "bench@bench.test", PasswordHash: "x", At: 1}).(int64)
	start := time.Now()
	for i := 0; i < n; i += 512 {
		var cmds []storage.Command
		for j := i; j < n && j < i+512; j++ {
			cmds = append(cmds, &storage.Deliver{Targets: []storage.Target{{MailboxID: mbox}}, InternalDate: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Unix(),
				Data: []byte(fmt.Sprintf("From: a@remote.test\r\nTo: bench@bench.test\r\nSubject: message %d\r\nMessage-ID: <%d@bench.test>\r\n\r\n%s\r\n", j, j, strings.Repeat(fmt.Sprintf("line %d of a 1 KB body\r\n", j), 40)))})
		}
		res, err := p.ApplyAll(ctx, cmds)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, "sigillo.db"))
	fmt.Printf("store: %d messages stored in %.1f s; sigillo.db %.1f MiB\n", n, time.Since(start).Seconds(), float64(fi.Size())/(1<<20))

	s3 := apptest.StartS3(b)
	s3.MakeBucket(b, "bench")
	cred := filepath.Join(dir, "s3.env")
	s3.WriteCredentials(b, cred)
	fileDir := filepath.Join(dir, "backups")
	if err := os.Mkdir(fileDir, 0o700); err != nil {
		b.Fatal(err)
	}
	var targets []backup.Target
	for _, u := range []struct{ url, cred string }{{"file://" + fileDir, ""}, {s3.URL("bench", "sigillo"), cred}} {
		st, err := target.Open(u.url, u.cred)
		if err != nil {
			b.Fatal(err)
		}
		targets = append(targets, backup.Target{Store: st})
	}
	bk := backup.New(backup.Config{Targets: targets, TempDir: dir, NodeID: "bench", Version: "bench"}, benchSource{store})

	runtime.GC()
	fmt.Printf("before the backup: RSS %.0f MiB\n", float64(procStatus(os.Getpid(), "VmRSS"))/1024)
	peak := watchMemory()
	start = time.Now()
	res, err := bk.Now(ctx, nil)
	took := time.Since(start)
	rss, heap := peak()
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		fmt.Printf("backup: %s: %s, %.1f MiB stored\n", r.Target, r.ID, float64(r.Bytes)/(1<<20))
	}
	fmt.Printf("backup of %d messages to both targets at once: %.1f s; peak RSS %.0f MiB, peak Go heap in use %.0f MiB\n", n, took.Seconds(), rss, heap)
	b.ReportMetric(took.Seconds(), "s_backup")
	b.ReportMetric(rss, "MiB_backup_peak_rss")
	b.ReportMetric(heap, "MiB_backup_peak_heap")

	runtime.GC()
	fmt.Printf("before the restore: RSS %.0f MiB\n", float64(procStatus(os.Getpid(), "VmRSS"))/1024)
	peak = watchMemory()
	start = time.Now()
	rep, err := restore.Restore(ctx, restore.Options{From: targets[0].Store, DataDir: filepath.Join(dir, "restored")})
	took = time.Since(start)
	rss, heap = peak()
	if err != nil {
		b.Fatal(err)
	}
	if rep.Counts["messages"] != int64(n) {
		b.Fatalf("restored %d messages, want %d", rep.Counts["messages"], n)
	}
	fmt.Printf("restore of %d messages from the directory: %.1f s; peak RSS %.0f MiB, peak Go heap in use %.0f MiB\n", n, took.Seconds(), rss, heap)
	b.ReportMetric(took.Seconds(), "s_restore")
	b.ReportMetric(rss, "MiB_restore_peak_rss")
}

// benchSource is a store no raft runs for: its snapshots, no log.
type benchSource struct{ store *storage.Store }

func (s benchSource) Snapshot(ctx context.Context, path string) (uint64, error) {
	v, err := s.store.Freeze(ctx)
	if err != nil {
		return 0, err
	}
	defer v.Close()
	idx, err := v.AppliedIndex(ctx)
	if err != nil {
		return 0, err
	}
	return idx, v.CopyTo(ctx, path)
}

func (s benchSource) AppliedIndex(ctx context.Context) (uint64, error) {
	return s.store.AppliedIndex(ctx)
}

func (s benchSource) LogEntries(context.Context, uint64, func(archive.Entry) error) error {
	return backup.ErrLogGone
}

// watchMemory resets the process's RSS high-water mark and samples the Go
// heap in use until the returned function is called, which gives both
// peaks in MiB.
func watchMemory() func() (rss, heap float64) {
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	var top atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > top.Load() {
				top.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (float64, float64) {
		close(done)
		wg.Wait()
		return float64(procStatus(os.Getpid(), "VmHWM")) / 1024, float64(top.Load()) / (1 << 20)
	}
}
