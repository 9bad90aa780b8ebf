package target

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The scenarios every target passes, whatever it stores on: what the
// backup job and restore do with it.

type listed struct {
	Name string
	Size int64
}

func list(t *testing.T, st Store, prefix string) []listed {
	t.Helper()
	var out []listed
	err := st.List(context.Background(), prefix, func(name string, size int64) error {
		out = append(out, listed{name, size})
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return out
}

func put(t *testing.T, st Store, name, text string) {
	t.Helper()
	n, err := st.Put(context.Background(), name, strings.NewReader(text))
	if err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
	if n != int64(len(text)) {
		t.Fatalf("put %s: %d bytes, want %d", name, n, len(text))
	}
}

func get(t *testing.T, st Store, name string) string {
	t.Helper()
	rc, err := st.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

// testPutGetListDelete: a snapshot set is written, listed in lexical
// order (including the names where walking a directory tree would not
// give it), read back, overwritten, and deleted.
func testPutGetListDelete(t *testing.T, st Store) {
	ctx := context.Background()
	objects := map[string]string{
		"snapshots/20261202T212300Z-48213/sigillo.db":            "database bytes",
		"snapshots/20261202T212300Z-48213/manifest.json":         `{"format":1}`,
		"snapshots/20261202T212300Z-48213/sigillo.toml":          "",
		"snapshots/20261202T212300Z-48213.x/manifest.json":       "a sibling whose name sorts after the directory's",
		"snapshots/20261202T212300Z-48213-a":                     "a file whose name sorts before the directory's children",
		"logs/00000000000000048214-00000000000000048990/entries": "entries",
		"README": "top level",
	}
	for name, text := range objects {
		put(t, st, name, text)
	}
	want := []listed{
		{"README", 9},
		{"logs/00000000000000048214-00000000000000048990/entries", 7},
		{"snapshots/20261202T212300Z-48213-a", 55},
		{"snapshots/20261202T212300Z-48213.x/manifest.json", 48},
		{"snapshots/20261202T212300Z-48213/manifest.json", 12},
		{"snapshots/20261202T212300Z-48213/sigillo.db", 14},
		{"snapshots/20261202T212300Z-48213/sigillo.toml", 0},
	}
	for i := range want {
		want[i].Size = int64(len(objects[want[i].Name]))
	}
	if got := list(t, st, ""); !reflect.DeepEqual(got, want) {
		t.Fatalf("list all:\n got %v\nwant %v", got, want)
	}
	if got := list(t, st, "snapshots/20261202T212300Z-48213/"); !reflect.DeepEqual(got, want[4:]) {
		t.Fatalf("list one set:\n got %v\nwant %v", got, want[4:])
	}
	if got := list(t, st, "snapshots/2026"); !reflect.DeepEqual(got, want[2:]) {
		t.Fatalf("list by partial prefix:\n got %v\nwant %v", got, want[2:])
	}
	for _, p := range []string{"nothing/", "snapshots/none/", "README/", "snapshots/20261202T212300Z-48213/sigillo.db/x"} {
		if got := list(t, st, p); len(got) != 0 {
			t.Fatalf("list %q: %v, want nothing", p, got)
		}
	}
	// List stops at fn's first error and returns it.
	stop := errors.New("enough")
	calls := 0
	err := st.List(ctx, "", func(string, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("list with a failing fn: %v after %d calls", err, calls)
	}

	for name, text := range objects {
		if got := get(t, st, name); got != text {
			t.Fatalf("get %s: %q, want %q", name, got, text)
		}
	}
	put(t, st, "README", "overwritten")
	if got := get(t, st, "README"); got != "overwritten" {
		t.Fatalf("after overwrite: %q", got)
	}

	_, err = st.Get(ctx, "snapshots/absent/manifest.json")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("get absent: %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), st.String()) || !strings.Contains(err.Error(), "snapshots/absent/manifest.json") {
		t.Fatalf("get absent: %q does not name the target and the object", err)
	}

	for name := range objects {
		if err := st.Delete(ctx, name); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	if err := st.Delete(ctx, "README"); err != nil {
		t.Fatalf("delete again: %v", err)
	}
	if got := list(t, st, ""); len(got) != 0 {
		t.Fatalf("after deleting everything: %v", got)
	}
	if _, err := st.Get(ctx, "README"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("get deleted: %v", err)
	}
}

// testBadNames: names that could escape the target or mean two things are
// refused by every method, before any I/O.
func testBadNames(t *testing.T, st Store) {
	ctx := context.Background()
	for _, name := range []string{"", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", `a\b`, ".hidden", "a/.tmp", "a\x00b"} {
		if _, err := st.Put(ctx, name, strings.NewReader("x")); err == nil {
			t.Errorf("put %q accepted", name)
		}
		if _, err := st.Get(ctx, name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("get %q: %v, want a refusal", name, err)
		}
		if err := st.Delete(ctx, name); err == nil {
			t.Errorf("delete %q accepted", name)
		}
	}
	for _, prefix := range []string{"/abs", "../", "a/../b/", `a\`} {
		if err := st.List(ctx, prefix, func(string, int64) error { return nil }); err == nil {
			t.Errorf("list %q accepted", prefix)
		}
	}
}

// stream is n bytes that are not compressible and not held anywhere: the
// test never has the whole object in memory either.
type stream struct {
	rng  *rand.ChaCha8
	left int64
	// after is called once when at most cut bytes are left (cut < 0: never).
	cut   int64
	after func()
}

func newStream(seed byte, n int64) *stream {
	return &stream{rng: rand.NewChaCha8([32]byte{seed}), left: n, cut: -1}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, _ := s.rng.Read(p)
	s.left -= int64(n)
	if s.after != nil && s.left <= s.cut {
		s.after()
		s.after = nil
	}
	return n, nil
}

func sha(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// testLargeStreamed: a 40 MB object (three parts on S3) goes up from a
// stream and comes back with the same SHA-256, and the Put does not hold
// it in memory.
func testLargeStreamed(t *testing.T, st Store) {
	const size = 40 << 20
	wantSum, _, _ := sha(newStream(7, size))
	ctx := context.Background()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	n, err := st.Put(ctx, "snapshots/big/sigillo.db", newStream(7, size))
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("put 40 MB: %v", err)
	}
	if n != size {
		t.Fatalf("put 40 MB: %d bytes", n)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%s: put 40 MB in %v (%.1f MB/s), %.1f MB allocated", st, elapsed.Round(time.Millisecond), float64(size)/1e6/elapsed.Seconds(), float64(allocated)/1e6)
	// One part buffer and what HTTP needs, never the object.
	if allocated > partSize+8<<20 {
		t.Errorf("put of 40 MB allocated %.1f MB: the object is held in memory", float64(allocated)/1e6)
	}
	if got := list(t, st, "snapshots/big/"); len(got) != 1 || got[0].Size != size {
		t.Fatalf("listed %v", got)
	}
	rc, err := st.Get(ctx, "snapshots/big/sigillo.db")
	if err != nil {
		t.Fatal(err)
	}
	sum, n, err := sha(rc)
	rc.Close()
	if err != nil || n != size || sum != wantSum {
		t.Fatalf("read back %d bytes, SHA-256 %s (err %v); wrote %d bytes, SHA-256 %s", n, sum, err, size, wantSum)
	}
	if err := st.Delete(ctx, "snapshots/big/sigillo.db"); err != nil {
		t.Fatal(err)
	}
}

// testInterrupted: a Put stopped half way, by its context or by a failing
// source, leaves nothing under the name, and an earlier object under that
// name is untouched.
func testInterrupted(t *testing.T, st Store) {
	const size = 40 << 20
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := newStream(1, size)
	src.cut, src.after = size-20<<20, cancel // cancel after 20 MB: one S3 part is up
	if _, err := st.Put(ctx, "snapshots/cut/sigillo.db", src); !errors.Is(err, context.Canceled) {
		t.Fatalf("put cancelled half way: %v, want context.Canceled", err)
	}
	if got := list(t, st, ""); len(got) != 0 {
		t.Fatalf("after a cancelled put: %v listed", got)
	}

	put(t, st, "snapshots/cut/manifest.json", "the good one")
	boom := errors.New("disk read error")
	src = newStream(2, size)
	_, err := st.Put(context.Background(), "snapshots/cut/manifest.json", io.MultiReader(io.LimitReader(src, 1<<20), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("put from a failing source: %v, want %v", err, boom)
	}
	if got := list(t, st, ""); len(got) != 1 || got[0].Name != "snapshots/cut/manifest.json" {
		t.Fatalf("after a failed overwrite: %v", got)
	}
	if got := get(t, st, "snapshots/cut/manifest.json"); got != "the good one" {
		t.Fatalf("after a failed overwrite: %q", got)
	}
	if err := st.Delete(context.Background(), "snapshots/cut/manifest.json"); err != nil {
		t.Fatal(err)
	}

	// A context already done: nothing is attempted.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := st.Put(done, "x", bytes.NewReader(nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a done context: %v", err)
	}
	if err := st.List(done, "", func(string, int64) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("list with a done context: %v", err)
	}
	if got := list(t, st, ""); len(got) != 0 {
		t.Fatalf("after puts with a done context: %v", got)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// runStoreScenarios runs every scenario on fresh stores from mk.
func runStoreScenarios(t *testing.T, mk func(t *testing.T) Store) {
	for _, sc := range []struct {
		name string
		fn   func(*testing.T, Store)
	}{
		{"PutGetListDelete", testPutGetListDelete},
		{"BadNames", testBadNames},
		{"LargeStreamed", testLargeStreamed},
		{"Interrupted", testInterrupted},
	} {
		t.Run(sc.name, func(t *testing.T) { sc.fn(t, mk(t)) })
	}
}
