package archive_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"filippo.io/age"

	"sigillo/appliance/backup/archive"
)

// bigDB reads like a database file of n bytes without existing anywhere: pages of random bytes
// between pages of repeated text (about 2:1 for zstd), hashed as it is read.
type bigDB struct {
	off, size int64
	rng       *rand.ChaCha8
	h         hash.Hash
}

func newBigDB(n int64) *bigDB {
	return &bigDB{size: n, rng: rand.NewChaCha8([32]byte{1}), h: sha256.New()}
}

const bigDBText = "INSERT INTO messages VALUES (1,'INBOX','\\Seen',1733174580,'Subject: hello'); "

func (d *bigDB) Read(p []byte) (int, error) {
	if d.off == d.size {
		return 0, io.EOF
	}
	const page = 32 << 10
	n := int(min(int64(len(p)), d.size-d.off, page-d.off%page))
	p = p[:n]
	if (d.off/page)%2 == 0 {
		d.rng.Read(p)
	} else {
		for i := range p {
			p[i] = bigDBText[(d.off+int64(i))%int64(len(bigDBText))]
		}
	}
	d.off += int64(n)
	d.h.Write(p)
	return n, nil
}

// heapPeak samples the heap in use until stop is called, and returns the highest figure seen.
func heapPeak(every time.Duration) (stop func() uint64) {
	var (
		wg   sync.WaitGroup
		peak uint64
		done = make(chan struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-time.After(every):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}

// A 200 MB database is written (encrypted) and read back through a pipe, never whole in memory:
// the heap in use stays a small fraction of the part, and so do the bytes allocated in all.
func TestALargePartStreamsInBoundedMemory(t *testing.T) {
	const size = 200 << 20
	ctx := context.Background()
	st := fileTarget(t, t.TempDir())
	key := newKey(t)
	db := newBigDB(size)
	src := []archive.Source{{Name: "sigillo.db", Kind: "database", Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(db), nil
	}}}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := heapPeak(20 * time.Millisecond)
	start := time.Now()
	m, err := archive.Write(ctx, st, snapshotManifest(), src, archive.Options{Recipients: []age.Recipient{key.Recipient()}})
	writeTime := time.Since(start)
	peak := stop()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	p := m.Parts[0]
	if p.RawBytes != size || p.RawSHA256 != hex.EncodeToString(db.h.Sum(nil)) {
		t.Fatalf("manifest: %d raw bytes, %s", p.RawBytes, p.RawSHA256)
	}
	writePeak, writeAlloc := peak-min(peak, before.HeapInuse), after.TotalAlloc-before.TotalAlloc
	t.Logf("write: %d MiB raw → %d MiB stored in %v; heap in use peak +%.1f MiB, allocated in all %.1f MiB",
		size>>20, p.Bytes>>20, writeTime.Round(time.Millisecond), mib(writePeak), mib(writeAlloc))

	runtime.GC()
	runtime.ReadMemStats(&before)
	stop = heapPeak(20 * time.Millisecond)
	start = time.Now()
	rc, err := archive.OpenPart(ctx, st, m, "sigillo.db", []age.Identity{key})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	readTime := time.Since(start)
	peak = stop()
	runtime.ReadMemStats(&after)
	if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != p.RawSHA256 {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	readPeak, readAlloc := peak-min(peak, before.HeapInuse), after.TotalAlloc-before.TotalAlloc
	t.Logf("read:  %d MiB in %v; heap in use peak +%.1f MiB, allocated in all %.1f MiB",
		size>>20, readTime.Round(time.Millisecond), mib(readPeak), mib(readAlloc))

	const bound = 48 << 20 // the part is 200 MiB
	for what, v := range map[string]uint64{"write heap peak": writePeak, "write allocated": writeAlloc, "read heap peak": readPeak} {
		if v > bound {
			t.Errorf("%s %.1f MiB: more than %d MiB for a %d MiB part", what, mib(v), bound>>20, size>>20)
		}
	}
	// age's DecryptReader allocates a fresh 64 KiB buffer per chunk it opens (garbage, collected at
	// once): what reading allocates in all follows the stored size, what it holds does not.
	if readAlloc > uint64(p.Bytes)+bound {
		t.Errorf("read allocated %.1f MiB for %.1f MiB stored", mib(readAlloc), mib(uint64(p.Bytes)))
	}
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }
