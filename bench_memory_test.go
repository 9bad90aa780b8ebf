package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkInboundMemory is issue 10's memory attack at full size, with the
// default configuration (max_inflight_bytes sized from this machine's
// memory): 20 unauthenticated connections to the inbound port each send a
// 28 MB message to a local user and hold before the final dot, then all
// finish at once. It prints the server's peak RSS (VmHWM) and its RSS a
// minute later, and checks over IMAP that every message that got 250 is
// stored byte for byte. BENCH_MEM_MESSAGES, BENCH_MEM_SIZE (bytes) and
// BENCH_MEM_AFTER (a duration) change the figures.
func BenchmarkInboundMemory(b *testing.B) {
	count := envInt("BENCH_MEM_MESSAGES", 20)
	size := envInt("BENCH_MEM_SIZE", 28_000_000)
	after := 60 * time.Second
	if v := os.Getenv("BENCH_MEM_AFTER"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		after = d
	}
	// The connections all come from 127.0.0.1: the limit on sockets not
	// logged in would close some of them before the budget is measured.
	in := newInstance(b, "mail.memory.test", "", "max_message_bytes = 31457280\nmax_unauthenticated_per_host = 50")
	in.start()
	in.provision("memory.test", "victim@memory.test")
	pid := in.cmd.Process.Pid
	fmt.Printf("inbound memory: %d messages of %d bytes; server RSS before: %d MiB\n", count, size, procStatus(pid, "VmRSS")>>10)

	addr := fmt.Sprintf("127.0.0.1:%d", in.ports["smtp"])
	ready := make(chan struct{}, count)
	release := make(chan struct{})
	results := make([]heldMessage, count)
	var wg sync.WaitGroup
	for i := range count {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = sendHeld(addr, fmt.Sprintf("sender%d@example.org", i), "victim@memory.test", uint64(i+1), size, ready, release)
		}()
	}
	for range count {
		<-ready
	}
	fmt.Printf("all %d clients hold before the final dot; server RSS %d MiB, peak so far %d MiB\n",
		count, procStatus(pid, "VmRSS")>>10, procStatus(pid, "VmHWM")>>10)
	start := time.Now()
	close(release)
	wg.Wait()
	took := time.Since(start)
	codes := map[string]int{}
	for _, m := range results {
		if m.Err != nil {
			codes["error"]++
			fmt.Printf("  %s: %v (%s)\n", m.Subject, m.Err, m.Reply)
			continue
		}
		codes[m.Reply[:3]]++
		if !strings.HasPrefix(m.Reply, "250") {
			fmt.Printf("  %s: %s\n", m.Subject, m.Reply)
		}
	}
	peak := procStatus(pid, "VmHWM")
	fmt.Printf("replies after the final dots (%.1f s): %v\n", took.Seconds(), codes)
	fmt.Printf("server peak RSS (VmHWM): %d MiB\n", peak>>10)
	b.ReportMetric(float64(peak>>10), "MiB_peak_RSS")

	for t := time.Duration(0); t < after; t += 10 * time.Second {
		time.Sleep(min(10*time.Second, after-t))
		fmt.Printf("  +%v RSS %d MiB (%s; files: %s)\n", t+min(10*time.Second, after-t), procStatus(pid, "VmRSS")>>10, rssNow(in), fileRSS(pid))
	}
	rss := procStatus(pid, "VmRSS")
	fmt.Printf("server RSS %v after the burst: %d MiB\n", after, rss>>10)
	b.ReportMetric(float64(rss>>10), "MiB_RSS_after")

	stored := verifyStored(b, in, "victim@memory.test", results)
	fmt.Printf("every 250 stored intact: %d of %d checked over IMAP (SHA-256 of the body)\n", stored, codes["250"])
	in.stop(syscall.SIGTERM) // SIGILLO_MEMPROFILE, if set, is written now
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}
