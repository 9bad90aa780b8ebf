package memlimit

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"sigillo/appliance/apptest"
)

// fakeRoot writes files (path → content) under a temporary root.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const meminfo = "MemTotal:       24683584 kB\nMemFree:        21027752 kB\n"

func TestTheMachinesMemoryIsTheLowerOfMemTotalAndTheCgroupLimit(t *testing.T) {
	for _, c := range []struct {
		name   string
		files  map[string]string
		bytes  int64
		source string
	}{
		{"no cgroup", map[string]string{"proc/meminfo": meminfo}, 24683584 << 10, "/proc/meminfo MemTotal"},
		{"cgroup v2 inside a container", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "536870912\n",
		}, 512 << 20, "cgroup v2 memory.max"},
		{"cgroup v2 on a host", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/system.slice/sigillo.service\n",
			"sys/fs/cgroup/system.slice/sigillo.service/memory.max": "1073741824\n",
		}, 1 << 30, "cgroup v2 memory.max"},
		{"cgroup v2 without a limit", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "max\n",
		}, 24683584 << 10, "/proc/meminfo MemTotal"},
		{"cgroup v1 with a limit", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "4:memory:/docker/abc\n1:cpu:/\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456\n",
		}, 256 << 20, "cgroup v1 memory.limit_in_bytes"},
		{"cgroup v1 unlimited", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "4:memory:/x\n",
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n",
		}, 24683584 << 10, "/proc/meminfo MemTotal"},
		{"a limit above the machine", map[string]string{
			"proc/meminfo": meminfo, "proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "99999999999999\n",
		}, 24683584 << 10, "/proc/meminfo MemTotal"},
		{"nothing readable", map[string]string{"proc/meminfo": "garbage\n", "sys/fs/cgroup/memory.max": "-5"}, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := detect(fakeRoot(t, c.files))
			if m.Bytes != c.bytes || m.Source != c.source {
				t.Fatalf("detect = %+v, want %d bytes from %q", m, c.bytes, c.source)
			}
		})
	}
	if m := Detect(); m.Bytes <= 0 {
		t.Errorf("this machine's memory: %+v", m)
	}
}

func TestTheDefaultBudget(t *testing.T) {
	const maxMsg = 30 << 20
	for _, c := range []struct {
		machine, want int64
	}{
		{24 << 30, MaxDefaultBudget}, // a large machine: capped
		{4 << 30, 64 << 20},          // 1/64
		{1 << 30, maxMsg},            // 16 MiB would not fit one message
		{0, maxMsg},                  // unknown: as for 1 GiB
	} {
		if got := DefaultBudget(Machine{Bytes: c.machine}, maxMsg); got != c.want {
			t.Errorf("DefaultBudget(%d MiB) = %d MiB, want %d MiB", c.machine>>20, got>>20, c.want>>20)
		}
	}
	if got := DefaultBudget(Machine{Bytes: 24 << 30}, 200<<20); got != 200<<20 {
		t.Errorf("with 200 MiB messages the default is %d MiB, want 200", got>>20)
	}
}

func TestSetLimitFollowsTheBudgetUnlessGOMEMLIMITIsSet(t *testing.T) {
	defer debug.SetMemoryLimit(math.MaxInt64)
	limit, fromEnv := SetLimit(100<<20, func(string) string { return "" })
	if fromEnv || limit != Limit(100<<20) || debug.SetMemoryLimit(-1) != limit {
		t.Fatalf("SetLimit = %d, %v; runtime limit %d", limit, fromEnv, debug.SetMemoryLimit(-1))
	}
	if limit < Copies*(100<<20) {
		t.Fatalf("limit %d MiB is below the budget's copies", limit>>20)
	}
	debug.SetMemoryLimit(777 << 20) // as GOMEMLIMIT=777MiB would have
	limit, fromEnv = SetLimit(100<<20, func(k string) string {
		if k == "GOMEMLIMIT" {
			return "777MiB"
		}
		return ""
	})
	if !fromEnv || limit != 777<<20 || debug.SetMemoryLimit(-1) != 777<<20 {
		t.Fatalf("with GOMEMLIMIT set: %d, %v", limit, fromEnv)
	}
}

type fakeBudget struct {
	mu    sync.Mutex
	peaks []int64 // successive peaks reported, then 0
}

func (f *fakeBudget) TakePeak() (int64, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.peaks) == 0 {
		return 0, 0
	}
	p := f.peaks[0]
	f.peaks = f.peaks[1:]
	return 0, p
}

func TestGiveBackReturnsMemoryOnceABurstIsOver(t *testing.T) {
	var logs apptest.LogBuffer
	logger := logs.Logger(slog.LevelDebug)
	w := &fakeBudget{peaks: []int64{1 << 20, 50 << 20}} // a small peak, then a burst
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		GiveBack(ctx, w, 10<<20, time.Hour, logger)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "burst over") {
		if time.Now().After(deadline) {
			t.Fatal("no memory given back after a 50 MiB burst")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "peak_in_flight=52428800") {
		t.Errorf("log: %s", logs.String())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("GiveBack did not return when its context ended")
	}
	if n := strings.Count(logs.String(), "burst over"); n != 1 {
		t.Errorf("memory given back %d times, want once", n)
	}
}
