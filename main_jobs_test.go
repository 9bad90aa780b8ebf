package main

// Leader jobs and node identity: the list of leader-only jobs a node
// starts and stops, its ID chosen once, and a data directory from before
// node IDs that keeps starting as the leader of its mail.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func (in *instance) logged() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.output.String()
}

func (in *instance) nodeID(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(in.dir, "data", "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func logLines(out, substr string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, substr) {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestANodeGetsItsOwnIDAndRunsTheLeaderJobsWhileItLeads(t *testing.T) {
	b := newInstance(t, "mail.b.test", "")
	b.start()
	b.provision("b.test", "bob@b.test")
	a := newInstance(t, "mail.a.test", fmt.Sprintf("[routes]\n\"b.test\" = \"127.0.0.1:%d\"\n", b.ports["smtp"]))
	a.start()
	id := a.nodeID(t)
	if !regexp.MustCompile(`^n-[a-z2-7]{8}$`).MatchString(id) || id == b.nodeID(t) {
		t.Fatalf("node ids %q and %q: want two different random ids", id, b.nodeID(t))
	}
	if !strings.Contains(a.logged(), "node_id="+id) {
		t.Errorf("the start does not log node_id=%s", id)
	}
	started := logLines(a.logged(), "leader jobs started: queue")
	if len(started) != 1 {
		t.Fatalf("leader jobs started %d times at start:\n%s", len(started), a.logged())
	}
	t.Logf("%s gained leadership: %s", id, started[0])

	// A queued message goes out at once: the committed command wakes the
	// queue (else it would wait for the queue's next look, a minute).
	a.provision("a.test", "alice@a.test")
	t0 := time.Now()
	a.python(t, "send", "USER=alice@a.test", "PASSWORD="+password("alice@a.test"),
		"FROM=alice@a.test", "TO=bob@b.test", "SUBJECT=at once")
	b.python(t, "remote", "USER=bob@b.test", "PASSWORD="+password("bob@b.test"), "SUBJECT=at once", "WAIT=30")
	if took := time.Since(t0); took > 20*time.Second {
		t.Errorf("the message took %v to arrive", took)
	} else {
		t.Logf("sent and delivered to the next hop in %v", took.Round(time.Millisecond))
	}

	a.stop(syscall.SIGTERM)
	stopped := logLines(a.logged(), "leader jobs stopped: queue")
	if len(stopped) != 1 {
		t.Fatalf("leader jobs stopped %d times at shutdown:\n%s", len(stopped), a.logged())
	}
	t.Logf("%s stopped: %s", id, stopped[0])

	a.start()
	if again := a.nodeID(t); again != id {
		t.Fatalf("node id after a restart: %q, was %q", again, id)
	}
}

func TestADataDirectoryFromBeforeNodeIDsKeepsItsMailAndLeads(t *testing.T) {
	// A data directory whose raft log names its server "node1", as every
	// one made before node IDs does.
	a := newInstance(t, "mail.a.test", "[cluster]\nnode_id = \"node1\"\n")
	a.start()
	a.provision("a.test", "alice@a.test")
	user := []string{"USER=alice@a.test", "PASSWORD=" + password("alice@a.test")}
	a.python(t, "send", append(user, "FROM=alice@a.test", "TO=alice@a.test", "SUBJECT=before the upgrade")...)
	before := state(t, a, user)
	a.stop(syscall.SIGTERM)

	// The upgrade: no node-id file, no [cluster] table.
	if err := os.Remove(filepath.Join(a.dir, "data", "node-id")); err != nil {
		t.Fatal(err)
	}
	a.extra = ""
	a.saveConfig()
	a.start()
	if id := a.nodeID(t); id != "node1" {
		t.Fatalf("an old data directory got node id %q, want node1 (its raft log's)", id)
	}
	if after := state(t, a, user); after != before {
		t.Fatalf("mail changed across the upgrade\nbefore: %s\nafter:  %s", before, after)
	}
	// Still the leader: it takes new mail.
	a.python(t, "send", append(user, "FROM=alice@a.test", "TO=alice@a.test", "SUBJECT=after the upgrade")...)
	t.Logf("after the upgrade: node1, %s, and new mail accepted", before)
	a.stop(syscall.SIGTERM)

	// A data directory cannot be renamed: one clear error, at once.
	a.extra = "[cluster]\nnode_id = \"mx9\"\n"
	a.saveConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "serve", "--config", a.config).CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), `node_id is "mx9"`) || !strings.Contains(string(out), `"node1"`) {
		t.Fatalf("serve with another node_id: %v\n%s", err, out)
	}
	t.Logf("serve with node_id = mx9: %v: %s", err, lastLine(string(out)))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestAGestoreLeadsItsPECJobsToo(t *testing.T) {
	module, pins := softhsmTokens(t, t.TempDir(), "sigillo")
	a := newInstance(t, "mail.a.test", pecGestoreConfig(module, "sigillo", pins["sigillo"], "Example PEC S.p.A.", "posta-certificata@mail.a.test"))
	a.cli("", "gestore", "init")
	a.start()
	const list = "queue, pec-timers, legal-log"
	started := logLines(a.logged(), "leader jobs started: "+list)
	if len(started) != 1 {
		t.Fatalf("a gestore's leader jobs:\n%s", strings.Join(logLines(a.logged(), "leader jobs"), "\n"))
	}
	t.Logf("leadership gained: %s", started[0])
	a.stop(syscall.SIGTERM)
	stopped := logLines(a.logged(), "leader jobs stopped: "+list)
	if len(stopped) != 1 {
		t.Fatalf("a gestore's leader jobs at shutdown:\n%s", strings.Join(logLines(a.logged(), "leader jobs"), "\n"))
	}
	t.Logf("leadership lost (shutdown): %s", stopped[0])
}
