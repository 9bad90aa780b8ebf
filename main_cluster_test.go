package main

// Cluster scenarios: three `sigillo serve` processes on 127.0.0.1 form a
// raft cluster over mutual TLS, and clients use any of them.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance/manage"
)

// member is one node of a test cluster.
type member struct {
	*instance
	id       string
	raftPort int
}

// startCluster starts n nodes: the first bootstraps the cluster, the others
// join through it with a token from `sigillo cluster token`. Each setup
// function sees each member before it starts (to set its env, say).
func startCluster(t testing.TB, n int, setup ...func(*member)) []*member {
	t.Helper()
	var ms []*member
	for i := 1; i <= n; i++ {
		m := &member{id: fmt.Sprintf("n%d", i), raftPort: freePort(t)}
		table := fmt.Sprintf("[cluster]\nnode_id = %q\nraft_addr = \"127.0.0.1:%d\"\n", m.id, m.raftPort)
		if i > 1 {
			tokenFile := filepath.Join(t.TempDir(), "join.token")
			token := strings.TrimSpace(ms[0].cli("", "cluster", "token"))
			if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			table += fmt.Sprintf("join = [\"127.0.0.1:%d\"]\ntoken_file = %q\n", ms[0].raftPort, tokenFile)
		}
		m.instance = newInstance(t, fmt.Sprintf("mx%d.cluster.test", i), table)
		for _, f := range setup {
			f(m)
		}
		m.start()
		ms = append(ms, m)
	}
	waitCluster(t, ms[0], "every node ready, one leader", func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == n && leaders(st) == 1 && allReady(st)
	})
	return ms
}

func (m *member) status(t testing.TB) (manage.ClusterStatus, error) {
	out, err := m.try("", "cluster", "status", "--json")
	var st manage.ClusterStatus
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("cluster status --json: %v: %s", err, out)
	}
	return st, nil
}

// waitCluster waits up to 30 s until m's `cluster status` satisfies ok.
func waitCluster(t testing.TB, m *member, what string, ok func(manage.ClusterStatus) bool) manage.ClusterStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var st manage.ClusterStatus
	var err error
	for time.Now().Before(deadline) {
		if st, err = m.status(t); err == nil && ok(st) {
			return st
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within 30 s: last status %+v, %v", what, st, err)
	return st
}

func leaders(st manage.ClusterStatus) int {
	n := 0
	for _, node := range st.Nodes {
		if node.Role == "leader" {
			n++
		}
	}
	return n
}

func allReady(st manage.ClusterStatus) bool {
	for _, node := range st.Nodes {
		if !node.Ready {
			return false
		}
	}
	return true
}

// leaderOf is the member that leads, by `cluster status` on from.
func leaderOf(t testing.TB, ms []*member, from *member) *member {
	t.Helper()
	st := waitCluster(t, from, "a leader", func(st manage.ClusterStatus) bool { return leaders(st) == 1 })
	for _, node := range st.Nodes {
		if node.Role == "leader" {
			for _, m := range ms {
				if m.id == node.ID {
					return m
				}
			}
		}
	}
	t.Fatalf("leader not among the members: %+v", st)
	return nil
}

// clusterPython runs a scenario of testdata/cluster.py.
func clusterPython(t *testing.T, m *member, scenario string, env ...string) (string, error) {
	py := need(t, "python3")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/cluster.py", scenario)
	cmd.Env = append(os.Environ(), "CA="+m.ca, "HOST=127.0.0.1")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestThreeNodesServeOneMailService(t *testing.T) {
	ms := startCluster(t, 3)
	st, _ := ms[0].status(t)
	for _, node := range st.Nodes {
		t.Logf("node %s %s %s applied %d ready %v", node.ID, node.Address, node.Role, node.AppliedIndex, node.Ready)
	}

	// Provisioned through node 2 (a follower or the leader: either way
	// through the leader), used on node 3.
	ms[1].provision("cluster.test", "alice@cluster.test")
	out, err := clusterPython(t, ms[2], "login", "USER=alice@cluster.test", "PASSWORD="+password("alice@cluster.test"),
		fmt.Sprintf("IMAPS=%d", ms[2].ports["imaps"]))
	if err != nil {
		t.Fatalf("a mailbox made on node 2 does not log in on node 3: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
	// What one node lists, every node lists.
	for _, m := range ms {
		if got := m.cli("", "mailbox", "list"); !strings.Contains(got, "alice@cluster.test") {
			t.Errorf("%s does not list the mailbox: %s", m.id, got)
		}
	}
}

func TestKillingTheLeaderUnderLoadLosesNoAcknowledgedMessage(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	var ports []string
	for _, m := range ms {
		ports = append(ports, fmt.Sprint(m.ports["submissions"]))
	}
	acked := filepath.Join(t.TempDir(), "acked")
	const count = 300
	done := make(chan struct{})
	var loadOut string
	var loadErr error
	go func() {
		defer close(done)
		loadOut, loadErr = clusterPython(t, ms[0], "load", "USER=alice@cluster.test", "PASSWORD="+password("alice@cluster.test"),
			"RCPT=alice@cluster.test", "SENDERS=6", fmt.Sprintf("COUNT=%d", count), "OUT="+acked,
			"SUBMISSIONS_PORTS="+strings.Join(ports, ","))
	}()

	kills := 0
	for kills < 3 {
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		var from *member
		for _, m := range ms {
			if m.alive() {
				from = m
				break
			}
		}
		l := leaderOf(t, ms, from)
		l.stop(syscall.SIGKILL)
		kills++
		t.Logf("kill %d: leader %s killed", kills, l.id)
		time.Sleep(2 * time.Second)
		l.start()
	}
	<-done
	t.Log(strings.TrimSpace(loadOut))
	if loadErr != nil {
		t.Fatalf("load: %v", loadErr)
	}
	ackedIDs := readLines(t, acked)
	for _, m := range ms {
		// Each node must have applied everything: wait for ready, no lag.
		waitCluster(t, m, m.id+" caught up", func(st manage.ClusterStatus) bool {
			for _, n := range st.Nodes {
				if !n.Ready || n.Lag != 0 {
					return false
				}
			}
			return len(st.Nodes) == 3
		})
		out, err := clusterPython(t, m, "count", "USER=alice@cluster.test", "PASSWORD="+password("alice@cluster.test"),
			fmt.Sprintf("IMAPS=%d", m.ports["imaps"]))
		if err != nil {
			t.Fatalf("count on %s: %v\n%s", m.id, err, out)
		}
		var copies map[string]int
		if err := json.Unmarshal([]byte(out), &copies); err != nil {
			t.Fatalf("count on %s: %v: %s", m.id, err, out)
		}
		missing, twice := 0, 0
		for _, id := range ackedIDs {
			if copies[id] == 0 {
				missing++
				t.Errorf("%s: %s got 250 but is not in the mailbox", m.id, id)
			}
		}
		for id, n := range copies {
			if n > 1 {
				twice++
				t.Errorf("%s: %s is in the mailbox %d times", m.id, id, n)
			}
		}
		t.Logf("%s: %d acknowledged, %d in the INBOX, %d missing, %d stored twice", m.id, len(ackedIDs), len(copies), missing, twice)
	}
}

// alive says whether the member's process runs.
func (m *member) alive() bool {
	if m.exited == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}
