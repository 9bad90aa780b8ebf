// Package memlimit sizes Sigillo's memory use from the machine it runs on:
// how much memory the process may have (the machine's MemTotal, or its
// cgroup's limit when that is lower), the default in-flight message budget
// (max_inflight_bytes) and the Go runtime's soft memory limit that goes
// with it; and, once a burst of large messages is over, it hands the memory
// they used back to the operating system instead of waiting for the
// runtime's two-minute forced collection.
//
// It only measures and sets limits: bytes in flight are counted and
// waited for by package inflight.
package memlimit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Machine is how much memory the process may use, and where that figure
// came from.
type Machine struct {
	Bytes  int64  // 0 when nothing could be read
	Source string // "/proc/meminfo MemTotal", "cgroup v2 memory.max", ...
}

// Detect reads the machine's memory and the process's cgroup limit.
func Detect() Machine { return detect("/") }

// detect reads the files under root (a test's fake /proc and /sys).
func detect(root string) Machine {
	var m Machine
	if total := memTotal(filepath.Join(root, "proc/meminfo")); total > 0 {
		m = Machine{Bytes: total, Source: "/proc/meminfo MemTotal"}
	}
	for _, c := range cgroupLimits(root) {
		if c.Bytes > 0 && (m.Bytes == 0 || c.Bytes < m.Bytes) {
			m = c
		}
	}
	return m
}

func memTotal(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cgroupLimits reads the memory limit of the process's cgroup, v2
// (memory.max) and v1 (memory.limit_in_bytes), at the cgroup's path under
// the usual mount points and at their roots (where a container sees its
// own cgroup). "max" and v1's huge "unlimited" figure are no limit.
func cgroupLimits(root string) []Machine {
	var out []Machine
	v2, v1 := "/", "/"
	if data, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			// hierarchy-ID:controllers:path
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			if parts[0] == "0" && parts[1] == "" {
				v2 = parts[2]
			}
			for _, c := range strings.Split(parts[1], ",") {
				if c == "memory" {
					v1 = parts[2]
				}
			}
		}
	}
	seen := map[string]bool{}
	read := func(path, source string) {
		if seen[path] {
			return
		}
		seen[path] = true
		if n := limitFile(filepath.Join(root, path)); n > 0 {
			out = append(out, Machine{Bytes: n, Source: source})
		}
	}
	for _, dir := range []string{v2, "/"} {
		read(filepath.Join("sys/fs/cgroup", dir, "memory.max"), "cgroup v2 memory.max")
		read(filepath.Join("sys/fs/cgroup/unified", dir, "memory.max"), "cgroup v2 memory.max")
	}
	for _, dir := range []string{v1, "/"} {
		read(filepath.Join("sys/fs/cgroup/memory", dir, "memory.limit_in_bytes"), "cgroup v1 memory.limit_in_bytes")
	}
	return out
}

// unlimited is where a v1 limit stops meaning anything (v1 writes "no
// limit" as 2^63 rounded down to a page).
const unlimited = 1 << 60

func limitFile(path string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= unlimited {
		return 0
	}
	return n
}

// Bounds of the default budget.
const (
	// BudgetShare is the part of the machine's memory the default budget
	// takes: 1/64.
	BudgetShare = 64
	// MaxDefaultBudget caps the default: past it, writing the raft log
	// and the database is what limits large messages, not how many are
	// held at once.
	MaxDefaultBudget = 128 << 20
	// unknownMachine stands for a machine whose memory cannot be read.
	unknownMachine = 1 << 30
)

// DefaultBudget is max_inflight_bytes when the configuration leaves it
// out: 1/64 of the machine's memory, at most MaxDefaultBudget, and at least
// maxMessage, so that one message of the largest size always fits.
func DefaultBudget(m Machine, maxMessage int64) int64 {
	mem := m.Bytes
	if mem <= 0 {
		mem = unknownMachine
	}
	b := min(mem/BudgetShare, MaxDefaultBudget)
	return max(b, maxMessage)
}

// Copies is how many times a message's bytes are in memory at once, at
// worst, on its way into the store: the raft log entry, raft-boltdb's
// msgpack encoding of it, and bolt's page buffer while the log is written.
// (SQLite's copies, in its own allocator, are made one message at a time.)
const Copies = 3

// baseHeap is the memory the server needs besides messages in flight: its
// caches (IMAP headers up to 48 MiB), SQLite's page caches, TLS sessions.
const baseHeap = 128 << 20

// Limit is the Go runtime's soft memory limit that goes with a budget: the
// base, plus Copies times the budget, plus one more for the garbage the
// collector has not reached yet.
func Limit(budget int64) int64 {
	return baseHeap + (Copies+1)*budget
}

// SetLimit sets the runtime's soft memory limit to Limit(budget), unless
// the GOMEMLIMIT environment variable sets one (the runtime has applied it
// already). It returns the limit in force and whether it came from the
// environment.
func SetLimit(budget int64, getenv func(string) string) (limit int64, fromEnv bool) {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), true
	}
	limit = Limit(budget)
	debug.SetMemoryLimit(limit)
	return limit, false
}

// Watched is what GiveBack watches: the in-flight budget.
type Watched interface {
	// TakePeak returns the bytes in flight now and the most there were
	// since the previous call.
	TakePeak() (inUse, peak int64)
}

// GiveBack returns memory to the operating system after each burst: when
// at least threshold bytes were in flight since it last looked and none
// are now, it collects the garbage and returns the freed memory
// (debug.FreeOSMemory), at most once per interval. Without it, the heap
// grown by a burst stays resident until the runtime's forced collection,
// every two minutes, and its scavenger, slower still. It returns when ctx
// ends.
func GiveBack(ctx context.Context, w Watched, threshold int64, interval time.Duration, logger *slog.Logger) {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last time.Time
	var burst int64 // the largest peak not yet given back
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		inUse, peak := w.TakePeak()
		burst = max(burst, peak)
		if inUse > 0 || burst < threshold || time.Since(last) < interval {
			continue
		}
		start := time.Now()
		debug.FreeOSMemory()
		last = time.Now()
		logger.Debug("burst over: memory returned to the system", "peak_in_flight", burst,
			"took", last.Sub(start).Round(time.Millisecond))
		burst = 0
	}
}

// Describe is a log line's worth of the sizing.
func Describe(m Machine) string {
	if m.Bytes <= 0 {
		return fmt.Sprintf("unknown (taken as %d MiB)", unknownMachine>>20)
	}
	return fmt.Sprintf("%d MiB (%s)", m.Bytes>>20, m.Source)
}
