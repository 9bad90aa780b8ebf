package main

// Restart scenarios: one server per data directory, SIGTERM during a slow
// start, and a start after much mail that reads only the log since the
// last snapshot.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance"
)

// serveProcess is a `sigillo serve` watched line by line, for the
// scenarios that act before it is ready.
type serveProcess struct {
	cmd    *exec.Cmd
	start  time.Time
	mu     sync.Mutex
	lines  []string
	exited chan struct{}
	err    error
	took   time.Duration // from start to exit
}

func serveAt(t *testing.T, in *instance) *serveProcess {
	t.Helper()
	p := &serveProcess{cmd: exec.Command(binary, "serve", "--config", in.config), exited: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		p.took = time.Since(p.start)
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("serve output:\n%s", p.output())
		}
	})
	return p
}

func (p *serveProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits for a line containing s and returns it.
func (p *serveProcess) waitLine(t *testing.T, s string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l, s) {
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.exited:
			t.Fatalf("serve exited (%v) without saying %q", p.err, s)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not say %q within %v", s, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns how long the process took to end.
func (p *serveProcess) stop(t *testing.T) time.Duration {
	t.Helper()
	sent := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(appliance.Grace + 5*time.Second):
		t.Fatalf("serve still running %v after SIGTERM", appliance.Grace+5*time.Second)
	}
	return time.Since(sent)
}

func TestASecondServeOnTheSameDataDirectoryIsRefusedAtOnce(t *testing.T) {
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.provision("a.test", "alice@a.test")
	dataDir := filepath.Join(a.dir, "data")

	second := exec.Command(binary, "serve", "--config", a.config)
	start := time.Now()
	out, err := second.CombinedOutput()
	took := time.Since(start)
	t.Logf("second serve: %v after %v: %s", err, took.Round(time.Millisecond), out)
	if second.ProcessState == nil || second.ProcessState.ExitCode() != 1 {
		t.Fatalf("second serve on %s: %v, want exit status 1", dataDir, err)
	}
	if took > time.Second {
		t.Fatalf("the refusal took %v", took)
	}
	msg := strings.TrimSpace(string(out))
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, dataDir) || !strings.Contains(msg, fmt.Sprint(" ", a.cmd.Process.Pid, " ")) {
		t.Fatalf("the refusal should be one line naming %s and pid %d: %q", dataDir, a.cmd.Process.Pid, msg)
	}

	// The first goes on serving, and still holds the directory.
	if out := a.cli("", "domain", "list"); !strings.Contains(out, "a.test") {
		t.Fatalf("first server after the refusal: %q", out)
	}
	a.python(t, "send", "USER=alice@a.test", "PASSWORD="+password("alice@a.test"), "FROM=alice@a.test", "TO=alice@a.test", "SUBJECT=still here")

	// Stopped, it leaves the lock file behind, and that blocks nothing: the
	// log is read from the database file, and the next serve starts.
	a.stop(syscall.SIGTERM)
	if _, err := os.Stat(filepath.Join(dataDir, "lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.try("", "log", "search"); err != nil {
		t.Fatalf("log search with no server running: %v", err)
	}
	a.start()
}

func TestSIGTERMEndsAStartWaitingForTheRaftLogsLock(t *testing.T) {
	py := need(t, "python3")
	a := newInstance(t, "mail.a.test", "")
	a.start()
	a.stop(syscall.SIGTERM)

	// Another program (an older server, a tool) holds raft.db.
	holder := exec.Command(py, "-c", `import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)`, filepath.Join(a.dir, "data", "raft", "raft.db"))
	hout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	if line, _ := bufio.NewReader(hout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("lock holder: %q", line)
	}

	// Left alone, the start gives up with the reason.
	p := serveAt(t, a)
	<-p.exited
	if p.cmd.ProcessState.ExitCode() != 1 || !strings.Contains(p.output(), "locked by another process") || p.took > 8*time.Second {
		t.Fatalf("start with raft.db held elsewhere: %v after %v: %s", p.err, p.took, p.output())
	}
	t.Logf("gave up after %v: %s", p.took.Round(time.Millisecond), lastOf(p.output()))

	// SIGTERM while it waits ends it at once, as a stop, not a failure.
	p = serveAt(t, a)
	time.Sleep(time.Second)
	took := p.stop(t)
	if p.cmd.ProcessState.ExitCode() != 0 || took > 2*time.Second || !strings.Contains(p.output(), "stopped while starting") {
		t.Fatalf("SIGTERM while waiting for raft.db: %v after %v: %s", p.err, took, p.output())
	}
	t.Logf("SIGTERM while waiting for the lock: ended in %v", took.Round(time.Millisecond))
}

func lastOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// listensWithin starts serve and times it until its SMTP port accepts.
func listensWithin(t testing.TB, in *instance) time.Duration {
	t.Helper()
	start := time.Now()
	in.start()
	addr := fmt.Sprintf("127.0.0.1:%d", in.ports["smtp"])
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return time.Since(start)
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s not listening after 60 s", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	snapshotLine = regexp.MustCompile(`msg="snapshot taken, log truncated".* log_mib=([0-9.]+) .* log_first_index=(\d+)`)
	readingLine  = regexp.MustCompile(`msg="reading the raft log after the last snapshot".* entries=(\d+) mib=([0-9.]+) .* to_read_mib=([0-9.]+)`)
)

// A smaller version of the store (make bench has the full one):
// 25 MB of mail with snapshots every 4 MiB. The log is truncated behind
// each snapshot, so the restart goes through at most about 4 MiB of it, and
// reads none of the data the database already has, and listens within
// seconds; a lost database is rebuilt from the snapshot and the
// log, and SIGTERM in the middle of that ends the start cleanly.
func TestARestartAfterMuchMailReadsOnlyTheLogSinceTheLastSnapshot(t *testing.T) {
	need(t, "python3")
	a := newInstance(t, "mail.a.test", "[raft]\nsnapshot_bytes = 4194304\n")
	a.start()
	a.provision("a.test", "alice@a.test")
	user := []string{"USER=alice@a.test", "PASSWORD=" + password("alice@a.test")}
	snapshots := func() [][]string {
		a.mu.Lock()
		defer a.mu.Unlock()
		return snapshotLine.FindAllStringSubmatch(a.output.String(), -1)
	}
	// Four rounds of 7 messages (6.3 MB), each followed by a snapshot.
	for round := 0; round < 4; round++ {
		before := len(snapshots())
		sent := bigmail(t, a, "send", append(user, "COUNT=7", "SIZE=900000")...)
		t.Log(strings.TrimSpace(sent))
		deadline := time.Now().Add(20 * time.Second)
		for len(snapshots()) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no snapshot within 20 s of 6.3 MB more with a 4 MiB threshold")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	snaps := snapshots()
	lastSnap := snaps[len(snaps)-1]
	if first, _ := strconv.Atoi(lastSnap[2]); first < 20 {
		t.Fatalf("log not truncated: after the last snapshot it starts at index %d", first)
	}
	t.Logf("%d snapshots; the last: %s", len(snaps), lastSnap[0])
	// And a tail under the threshold, which the restart replays.
	bigmail(t, a, "send", append(user, "COUNT=3", "SIZE=900000")...)

	a.stop(syscall.SIGTERM)
	a.mu.Lock()
	a.output.Reset()
	a.mu.Unlock()
	took := listensWithin(t, a)
	a.mu.Lock()
	out := a.output.String()
	a.mu.Unlock()
	m := readingLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the restart did not say what it read of the log")
	}
	// The last snapshot may have come in the middle of the fourth round
	// (once 4 MiB were logged): what follows it is then the rest of that
	// round, under the threshold, plus the 2.6 MB tail; never the 25 MB.
	if mb, _ := strconv.ParseFloat(m[2], 64); mb < 2 || mb > 4+2.6+0.9 {
		t.Fatalf("the restart went through %s MiB of log after the last snapshot, want the 2.6 MB tail and at most the 4 MiB threshold more: %s", m[2], m[0])
	}
	// The database has all of it: only the entries' headers are read.
	if mb, _ := strconv.ParseFloat(m[3], 64); mb > 0.1 {
		t.Fatalf("the restart read %s MiB of data the database already had: %s", m[3], m[0])
	}
	t.Logf("restart read: %s", m[0])
	if took > 10*time.Second {
		t.Fatalf("listening %v after the restart", took)
	}
	t.Logf("listening %v after the restart", took.Round(time.Millisecond))

	// The database is lost: it is restored from the newest snapshot; a
	// SIGTERM meanwhile stops the start, and the next one completes it.
	a.stop(syscall.SIGTERM)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(a.dir, "data", "sigillo.db"+suffix))
	}
	p := serveAt(t, a)
	p.waitLine(t, "database is behind the newest snapshot: restoring it", 30*time.Second)
	stopTook := p.stop(t)
	if p.cmd.ProcessState.ExitCode() != 0 || !strings.Contains(p.output(), "stopped while starting") || stopTook > appliance.Grace {
		t.Fatalf("SIGTERM while restoring the database: %v after %v", p.err, stopTook)
	}
	t.Logf("SIGTERM while restoring the database: ended in %v", stopTook.Round(time.Millisecond))

	a.start()
	if got := bigmail(t, a, "count", user...); !strings.Contains(got, "COUNT 31") {
		t.Fatalf("after the rebuild: %s, want the 31 messages", got)
	}
}

// bigmail runs testdata/bigmail.py against the instance.
func bigmail(t testing.TB, in *instance, what string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, need(t, "python3"), "testdata/bigmail.py", what)
	cmd.Env = append(append(os.Environ(), in.env()...), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bigmail.py %s: %v\n%s", what, err, out)
	}
	return string(out)
}
