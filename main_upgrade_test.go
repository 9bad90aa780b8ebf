package main

// Rolling upgrades with two builds of the binary: the one TestMain built
// (this version) and one built with the tag sigillo_upgradeprobe, which
// stands for the next version: it knows one more command, "upgrade-probe"
// (storage/upgradeprobe.go), proposed with the control request
// debug.upgrade-probe and read back on a node with debug.upgrade-probe-read.

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance/control"
	"sigillo/appliance/manage"
)

// nextVersion is what the next build reports in `cluster status`.
const nextVersion = "next"

// buildNext builds the next version in the background, while the cluster
// starts; the returned function waits for it and gives its path.
func buildNext(t *testing.T) func() string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sigillo-next")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var out []byte
	var err error
	start := time.Now()
	go func() {
		defer close(done)
		out, err = exec.CommandContext(ctx, "go", "build", "-tags", "sigillo_upgradeprobe",
			"-ldflags", "-X sigillo/appliance.Version="+nextVersion, "-o", path, ".").CombinedOutput()
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() string {
		t.Helper()
		<-done
		if err != nil {
			t.Fatalf("build the next version: %v\n%s", err, out)
		}
		t.Logf("next version built in %v", time.Since(start).Round(100*time.Millisecond))
		return path
	}
}

// probe is the answer of the next version's control requests.
type probe struct {
	Value string `json:"value"`
	Index uint64 `json:"index"`
}

// callProbe proposes the next version's command with value through m's
// control socket or, with value "", reads the value m's store holds.
func callProbe(m *member, value string) (probe, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := control.Request{Op: "debug.upgrade-probe-read"}
	if value != "" {
		req = control.Request{Op: "debug.upgrade-probe", Args: map[string]string{"value": value}}
	}
	var p probe
	err := control.Call(ctx, filepath.Join(m.dir, "data", "control.sock"), req, &p)
	return p, err
}

// waitProbe waits up to 10 s until m's store holds the probe's value.
func waitProbe(t *testing.T, m *member, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := callProbe(m, "")
		if err == nil && p.Value == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: probe %+v, %v; want %q", m.id, p, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func nodeIn(st manage.ClusterStatus, id string) manage.ClusterNode {
	for _, n := range st.Nodes {
		if n.ID == id {
			return n
		}
	}
	return manage.ClusterNode{}
}

// restartOn stops m, and starts it again on bin ("": this version) once
// the cluster has taken a write without it; it waits until every node is
// ready again and m reports version.
func restartOn(t *testing.T, ms []*member, m *member, bin, version, mailbox string) {
	t.Helper()
	m.stop(syscall.SIGTERM)
	other := anyAlive(t, ms, m)
	waitCluster(t, other, "a leader without "+m.id, func(st manage.ClusterStatus) bool {
		return leaders(st) == 1 && nodeIn(st, m.id).Role == "unreachable"
	})
	other.cli(password(mailbox)+"\n", "mailbox", "add", mailbox, "--password-stdin")
	m.bin = bin
	m.start()
	st := waitCluster(t, m, m.id+" back on "+version, func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == len(ms) && leaders(st) == 1 && allReady(st) && nodeIn(st, m.id).Version == version
	})
	t.Logf("%s restarted on %s: %s", m.id, version, statusLine(st))
}

func statusLine(st manage.ClusterStatus) string {
	var b strings.Builder
	for _, n := range st.Nodes {
		b.WriteString(n.ID + " " + n.Role + " " + n.Version)
		if !n.Ready {
			b.WriteString(" NOT READY (" + n.Reason + ")")
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// An upgrade one node at a time, followers first, keeps the cluster
// serving; a command only the next version knows can be used once every
// node runs it. Done the wrong way (a node left on this version while the
// leader runs the next), that node stops applying at the new command
// instead of applying it wrongly or skipping it, the others go on, and the
// node catches up once upgraded.
func TestARollingUpgradeFollowersFirst(t *testing.T) {
	next := buildNext(t)
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	nextBin := next()
	st, err := ms[0].status(t)
	if err != nil {
		t.Fatal(err)
	}
	oldVersion := nodeIn(st, ms[0].id).Version

	// The right way: the followers, one at a time, each back and ready
	// before the next; the cluster takes a mailbox while each is down.
	leader := leaderOf(t, ms, ms[0])
	var followers []*member
	for _, m := range ms {
		if m != leader {
			followers = append(followers, m)
		}
	}
	for i, f := range followers {
		restartOn(t, ms, f, nextBin, nextVersion, []string{"f1@cluster.test", "f2@cluster.test"}[i])
	}
	// The leader still runs this version: the new command, proposed
	// through an upgraded follower, is refused by it and never reaches the
	// log.
	if _, err := callProbe(followers[0], "too-early"); err == nil || !strings.Contains(err.Error(), "not known") {
		t.Fatalf("the new command with the leader on the old version: %v, want a refusal", err)
	} else {
		t.Logf("the new command before the leader is upgraded: %v", err)
	}
	if p, err := callProbe(followers[0], ""); manage.CodeOf(err) != manage.NotFound {
		t.Fatalf("after the refusal the probe reads %+v, %v", p, err)
	}
	// Then the leader: the others elect one of themselves meanwhile.
	restartOn(t, ms, leader, nextBin, nextVersion, "l@cluster.test")
	applied, err := callProbe(leader, "v1")
	if err != nil {
		t.Fatalf("the new command once every node is upgraded: %v", err)
	}
	for _, m := range ms {
		waitProbe(t, m, "v1")
	}
	t.Logf("the new command applied on every node (log index %d)", applied.Index)

	// The wrong way: a follower back on this version (a node forgotten,
	// or downgraded) while the leader runs the next one. It serves until
	// the new command is used.
	leader = leaderOf(t, ms, ms[0])
	var left, other *member
	for _, m := range ms {
		switch {
		case m == leader:
		case left == nil:
			left = m
		default:
			other = m
		}
	}
	restartOn(t, ms, left, "", oldVersion, "before@cluster.test")
	applied, err = callProbe(leader, "v2")
	if err != nil {
		t.Fatalf("the new command with a follower on the old version: %v", err)
	}
	st = waitCluster(t, leader, left.id+" halted", func(st manage.ClusterStatus) bool {
		n := nodeIn(st, left.id)
		return !n.Ready && strings.Contains(n.Reason, "halted") && strings.Contains(n.Reason, "upgrade")
	})
	t.Logf("with the new command committed: %s", statusLine(st))
	// The others keep serving: a mailbox through each, both have it.
	leader.cli(password("after1@cluster.test")+"\n", "mailbox", "add", "after1@cluster.test", "--password-stdin")
	other.cli(password("after2@cluster.test")+"\n", "mailbox", "add", "after2@cluster.test", "--password-stdin")
	waitProbe(t, other, "v2")
	for _, m := range []*member{leader, other} {
		if got := m.cli("", "mailbox", "list"); !strings.Contains(got, "after1@") || !strings.Contains(got, "after2@") {
			t.Fatalf("%s does not list the mailboxes made after the new command: %s", m.id, got)
		}
	}
	// Nothing from the new command on is applied on the node left behind.
	time.Sleep(time.Second)
	if n := nodeIn(waitCluster(t, left, left.id+" status", func(manage.ClusterStatus) bool { return true }), left.id); n.Ready || n.AppliedIndex >= applied.Index {
		t.Fatalf("%s went on past the new command (at %d): %+v", left.id, applied.Index, n)
	} else {
		t.Logf("%s stopped before the new command at %d: applied %d, %q", left.id, applied.Index, n.AppliedIndex, n.Reason)
	}
	if got := left.cli("", "mailbox", "list"); strings.Contains(got, "after1@") || strings.Contains(got, "after2@") || !strings.Contains(got, "before@") {
		t.Fatalf("%s lists: %s", left.id, got)
	}
	if _, err := callProbe(left, ""); err == nil || !strings.Contains(err.Error(), "unknown request") {
		t.Fatalf("this version read the probe: %v", err)
	}
	left.mu.Lock()
	logged := strings.Contains(left.output.String(), "stopped applying the raft log")
	left.mu.Unlock()
	if !logged {
		t.Errorf("%s did not log why it stopped applying", left.id)
	}

	// Upgraded, it applies the new command and everything after it.
	left.stop(syscall.SIGTERM)
	left.bin = nextBin
	left.start()
	st = waitCluster(t, left, left.id+" upgraded and ready", func(st manage.ClusterStatus) bool {
		return allReady(st) && leaders(st) == 1 && nodeIn(st, left.id).Version == nextVersion
	})
	t.Logf("%s upgraded: %s", left.id, statusLine(st))
	waitProbe(t, left, "v2")
	want := leader.cli("", "mailbox", "list")
	if got := left.cli("", "mailbox", "list"); got != want {
		t.Fatalf("%s lists\n%s\nthe leader\n%s", left.id, got, want)
	}
	t.Logf("every node lists the same %d mailboxes", strings.Count(want, "@cluster.test"))
}
