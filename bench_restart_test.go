package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRestartAfter2GB is the restart at full size: 2 GB of
// mail (73 messages of 28 MB) received since the last start, with the
// shipped snapshot settings, then SIGTERM and `sigillo serve` timed until
// its SMTP port listens: with the page cache warm (a restart), and cold
// (the data directory's files dropped from it, as after a reboot).
func BenchmarkRestartAfter2GB(b *testing.B) {
	py := need(b, "python3")
	in := newInstance(b, "mail.bench.test", "")
	raiseMaxMessage(b, in, 31457280)
	in.start()
	in.cli("", "domain", "add", "bench.test")
	in.cli(password("big@bench.test")+"\n", "mailbox", "add", "big@bench.test", "--password-stdin", "--quota", "0")
	user := []string{"USER=big@bench.test", "PASSWORD=" + password("big@bench.test")}
	in.stop(syscall.SIGTERM)
	in.start()
	in.mu.Lock()
	in.output.Reset()
	in.mu.Unlock()

	b.ResetTimer()
	sent := bigmail(b, in, "send", append(user, "COUNT=73", "SIZE=28000000")...)
	b.Log(strings.TrimSpace(sent))
	// Let the policy finish a snapshot under way, as it would before an
	// operator's restart; the log after it is what the start replays.
	time.Sleep(3 * time.Second)
	in.mu.Lock()
	out := in.output.String()
	in.mu.Unlock()
	snaps := regexp.MustCompile(`msg="snapshot taken, log truncated".* took=([0-9.]+m?s) `).FindAllStringSubmatch(out, -1)
	var slowest time.Duration
	for _, s := range snaps {
		if d, err := time.ParseDuration(s[1]); err == nil && d > slowest {
			slowest = d
		}
	}
	if last := lastMatching(out, "snapshot taken"); last != "" {
		b.Logf("%d snapshots while receiving, slowest %v; the last: %s", len(snaps), slowest, last)
	}
	data := filepath.Join(in.dir, "data")
	b.Logf("on disk: %s", sizes(data, "sigillo.db", "raft/raft.db", "raft/snapshots"))

	for _, cold := range []bool{false, true} {
		stopStart := time.Now()
		in.stop(syscall.SIGTERM)
		stopped := time.Since(stopStart)
		if cold {
			evict(b, py, data)
		}
		in.mu.Lock()
		in.output.Reset()
		in.mu.Unlock()
		took := listensWithin(b, in)
		in.mu.Lock()
		out := in.output.String()
		in.mu.Unlock()
		read := "no log after the last snapshot"
		var logMiB, readMiB float64
		if m := regexp.MustCompile(`msg="reading the raft log after the last snapshot".* entries=(\d+) mib=([0-9.]+) .* to_read_mib=([0-9.]+)`).FindStringSubmatch(out); m != nil {
			read = fmt.Sprintf("went through %s entries, %s MiB of log after the last snapshot, read %s MiB of it whole", m[1], m[2], m[3])
			logMiB, _ = strconv.ParseFloat(m[2], 64)
			readMiB, _ = strconv.ParseFloat(m[3], 64)
		}
		which := "warm"
		if cold {
			which = "cold"
		}
		b.Logf("restart (%s page cache): stopped in %v, listening %v after start; %s", which, stopped.Round(time.Millisecond),
			took.Round(time.Millisecond), read)
		b.ReportMetric(took.Seconds(), "s_to_listen_"+which)
		if !cold {
			b.ReportMetric(logMiB, "MiB_log_after_snapshot")
			b.ReportMetric(readMiB, "MiB_log_read_whole")
		}
		if took > 10*time.Second {
			b.Errorf("listening %v after a restart with 2 GB received (%s cache): the issue asks for 10 s", took, which)
		}
	}
	b.ReportMetric(float64(len(snaps)), "snapshots")
	b.ReportMetric(slowest.Seconds(), "s_slowest_snapshot")
	if got := bigmail(b, in, "count", user...); !strings.Contains(got, "COUNT 73") {
		b.Fatalf("after the restarts: %s, want 73 messages", got)
	}
}

// raiseMaxMessage rewrites the instance's configuration for larger
// messages than the tests' 1 MiB.
func raiseMaxMessage(tb testing.TB, in *instance, n int) {
	tb.Helper()
	conf, err := os.ReadFile(in.config)
	if err != nil {
		tb.Fatal(err)
	}
	text := strings.Replace(string(conf), "max_message_bytes = 1048576", fmt.Sprint("max_message_bytes = ", n), 1)
	if err := os.WriteFile(in.config, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func lastMatching(text, with string) string {
	var out string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, with) {
			out = l
		}
	}
	return out
}

func sizes(dir string, names ...string) string {
	var parts []string
	for _, n := range names {
		var total int64
		filepath.Walk(filepath.Join(dir, n), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				total += fi.Size()
			}
			return nil
		})
		parts = append(parts, fmt.Sprintf("%s %d MiB", n, total>>20))
	}
	return strings.Join(parts, ", ")
}

// evict drops the data directory's files from the page cache (and only
// them), as a reboot would.
func evict(tb testing.TB, py, dir string) {
	tb.Helper()
	out, err := exec.Command(py, "-c", `import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        if os.path.isfile(p) and not os.path.islink(p):
            fd = os.open(p, os.O_RDONLY)
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)`, dir).CombinedOutput()
	if err != nil {
		tb.Fatalf("evict %s: %v: %s", dir, err, out)
	}
}
