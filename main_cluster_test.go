package main

// Cluster scenarios: three `sigillo serve` processes on 127.0.0.1 form a
// raft cluster over mutual TLS, and clients use any of them.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

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
		fmt.Sprintf("IMAPS=%d", ms[2].ports["imaps"]), "CA="+ms[0].ca)
	if err != nil {
		t.Fatalf("a mailbox made on node 2 does not log in on node 3: %v\n%s", err, out)
	}
	t.Log(strings.TrimSpace(out))
	// The secrets every node needs came with the join, not by hand: the
	// ACME storage key is the same file on all three; the local CA (in the
	// store) signs every node's certificate (the clients above trusted
	// node 1's exported root on node 3).
	key1, err := os.ReadFile(filepath.Join(ms[0].dir, "data", "acme-storage.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[1:] {
		if k, err := os.ReadFile(filepath.Join(m.dir, "data", "acme-storage.key")); err != nil || string(k) != string(key1) {
			t.Errorf("%s's ACME storage key differs from %s's (%v)", m.id, ms[0].id, err)
		}
		if ca := m.cli("", "ca", "export"); ca != ms[0].cli("", "ca", "export") {
			t.Errorf("%s exports another local CA", m.id)
		}
	}
	// What one node lists, every node lists.
	for _, m := range ms {
		if got := m.cli("", "mailbox", "list"); !strings.Contains(got, "alice@cluster.test") {
			t.Errorf("%s does not list the mailbox: %s", m.id, got)
		}
	}

	// A cluster-wide setting changed on node 1 reaches SMTP on node 3
	// without a restart: a new session gets the new size limit.
	ms[0].cli("", "settings", "set", "max_message_bytes", "2000")
	deadline := time.Now().Add(5 * time.Second)
	for {
		reply := smtpSizeProbe(t, ms[2].ports["smtp"], 3000)
		if strings.HasPrefix(reply, "552") {
			t.Logf("node 3 after `settings set max_message_bytes 2000` on node 1: MAIL SIZE=3000 → %s", reply)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 3 still answers MAIL SIZE=3000 with %q 5 s after max_message_bytes was set to 2000", reply)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// smtpSizeProbe opens an SMTP session on port, says EHLO and MAIL FROM
// with SIZE=size, and returns the reply to MAIL.
func smtpSizeProbe(t *testing.T, port, size int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	reply := func() string {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("SMTP probe: %v", err)
			}
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimSpace(line)
			}
		}
	}
	reply()
	fmt.Fprintf(c, "EHLO probe.remote.test\r\n")
	reply()
	fmt.Fprintf(c, "MAIL FROM:<someone@remote.test> SIZE=%d\r\n", size)
	out := reply()
	fmt.Fprintf(c, "QUIT\r\n")
	return out
}

// load sends count messages through every member's submission port (a
// message that fails is sent again, the same bytes, on the next node) in
// the background; wait returns the Message-IDs that got 250.
type load struct {
	done  chan struct{}
	out   string
	err   error
	acked string
}

func startLoad(t *testing.T, ms []*member, count int, env ...string) *load {
	var ports []string
	for _, m := range ms {
		ports = append(ports, fmt.Sprint(m.ports["submissions"]))
	}
	l := &load{done: make(chan struct{}), acked: filepath.Join(t.TempDir(), "acked")}
	go func() {
		defer close(l.done)
		env = append([]string{"USER=alice@cluster.test", "PASSWORD=" + password("alice@cluster.test"),
			"RCPT=alice@cluster.test", "SENDERS=6", fmt.Sprintf("COUNT=%d", count), "OUT=" + l.acked,
			"SUBMISSIONS_PORTS=" + strings.Join(ports, ",")}, env...)
		l.out, l.err = clusterPython(t, ms[0], "load", env...)
	}()
	return l
}

func (l *load) wait(t *testing.T) []string {
	t.Helper()
	<-l.done
	t.Log(strings.TrimSpace(l.out))
	if l.err != nil {
		t.Fatalf("load: %v", l.err)
	}
	return readLines(t, l.acked)
}

// everyNodeHasEachOnce checks, on every member once it has caught up, that
// each acknowledged message is in alice's INBOX exactly once, and nothing
// twice.
func everyNodeHasEachOnce(t *testing.T, ms []*member, ackedIDs []string) {
	t.Helper()
	for _, m := range ms {
		waitCluster(t, m, m.id+" caught up", func(st manage.ClusterStatus) bool {
			for _, n := range st.Nodes {
				if !n.Ready || n.Lag != 0 {
					return false
				}
			}
			return len(st.Nodes) == len(ms)
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

// anyAlive is a member whose process runs.
func anyAlive(t *testing.T, ms []*member, except *member) *member {
	t.Helper()
	for _, m := range ms {
		if m != except && m.alive() {
			return m
		}
	}
	t.Fatal("no member runs")
	return nil
}

func TestKillingTheLeaderUnderLoadLosesNoAcknowledgedMessage(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	l := startLoad(t, ms, 300)
	for kill := 1; kill <= 3; kill++ {
		select {
		case <-l.done:
		case <-time.After(time.Second):
		}
		leader := leaderOf(t, ms, anyAlive(t, ms, nil))
		leader.stop(syscall.SIGKILL)
		t.Logf("kill %d: leader %s killed", kill, leader.id)
		time.Sleep(2 * time.Second)
		leader.start()
	}
	everyNodeHasEachOnce(t, ms, l.wait(t))
}

// A leader paused (SIGSTOP) for 10 s: the others elect a new one within
// the election timeout and go on taking mail; the paused node, continued,
// steps down; nothing it acknowledges is lost or doubled.
func TestAPausedLeaderStepsDownAndAcknowledgesNothingItCouldNotCommit(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	l := startLoad(t, ms, 200)
	time.Sleep(time.Second)
	old := leaderOf(t, ms, ms[0])
	other := anyAlive(t, ms, old)
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	st := waitCluster(t, other, "a new leader among the others", func(st manage.ClusterStatus) bool {
		for _, n := range st.Nodes {
			if n.Role == "leader" && n.ID != old.id {
				return true
			}
		}
		return false
	})
	t.Logf("new leader elected %v after the pause: %+v", time.Since(paused).Round(100*time.Millisecond), st.Nodes)
	if d := time.Since(paused); d > 5*time.Second {
		t.Errorf("a new leader took %v", d)
	}
	time.Sleep(time.Until(paused.Add(10 * time.Second)))
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitCluster(t, old, old.id+" steps down and follows", func(st manage.ClusterStatus) bool {
		for _, n := range st.Nodes {
			if n.ID == old.id {
				return n.Role == "follower" && n.Ready
			}
		}
		return false
	})
	everyNodeHasEachOnce(t, ms, l.wait(t))
}

// A follower stopped while the others take mail, long enough that the
// leader's log no longer reaches back to it (snapshots every second,
// small trailing log): it is sent a snapshot, then serves the same mail.
func TestAStoppedFollowerCatchesUpFromASnapshot(t *testing.T) {
	ms := startCluster(t, 3, withConfig("[raft]\nsnapshot_bytes = 1048576\nsnapshot_interval = \"1s\"\n"))
	ms[0].provision("cluster.test", "alice@cluster.test")
	leader := leaderOf(t, ms, ms[0])
	var follower *member
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	follower.stop(syscall.SIGTERM)
	// 4 KB messages: the trailing log (a quarter of snapshot_bytes) holds
	// about 64 of them, and the follower misses 400.
	l := startLoad(t, []*member{leader, anyAlive(t, ms, leader)}, 400, "PAD=4000")
	acked := l.wait(t)
	time.Sleep(3 * time.Second) // a snapshot after the last message
	follower.start()
	everyNodeHasEachOnce(t, ms, acked)
	follower.mu.Lock()
	out := follower.output.String()
	follower.mu.Unlock()
	i := strings.Index(out, "snapshot installed")
	if i < 0 {
		t.Fatalf("%s caught up without a snapshot from the leader; the test did not test that", follower.id)
	}
	line, _, _ := strings.Cut(out[i:], "\n")
	t.Logf("%s: %s", follower.id, line)
}

// withConfig adds tables to every member's configuration.
func withConfig(tables string) func(*member) {
	return func(m *member) {
		m.extra += tables
		m.saveConfig()
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

// A client IDLE on one node sees, within a second, mail delivered through
// another.
func TestIdleOnAFollowerSeesMailDeliveredThroughAnotherNode(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	leader := leaderOf(t, ms, ms[0])
	var watcher, sender *member
	for _, m := range ms {
		switch {
		case m == leader:
		case watcher == nil:
			watcher = m
		default:
			sender = m
		}
	}
	exists := make(chan uint32, 16)
	c, err := imapclient.DialTLS(fmt.Sprintf("127.0.0.1:%d", watcher.ports["imaps"]), &imapclient.Options{
		TLSConfig: watcher.tlsClient(t, watcher.name),
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@cluster.test", password("alice@cluster.test")).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", sender.ports["submissions"]), sender.tlsClient(t, sender.name))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := smtp.NewClient(conn, sender.name)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Auth(smtp.PlainAuth("", "alice@cluster.test", password("alice@cluster.test"), sender.name)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		body := fmt.Sprintf("From: alice@cluster.test\r\nTo: alice@cluster.test\r\nSubject: idle %d\r\nMessage-ID: <idle-%d@cluster.test>\r\n\r\nx\r\n", i, i)
		if err := sendOne(sc, "alice@cluster.test", "alice@cluster.test", []byte(body)); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		select {
		case n := <-exists:
			t.Logf("message %d sent through follower %s; IDLE on follower %s said %d EXISTS %v after the 250",
				i, sender.id, watcher.id, n, time.Since(acked).Round(time.Millisecond))
			if n != uint32(i) {
				t.Errorf("EXISTS %d, want %d", n, i)
			}
		case <-time.After(time.Second):
			t.Fatalf("IDLE on %s heard nothing within 1 s of the 250 from %s", watcher.id, sender.id)
		}
	}
}

// A node left alone (the two others killed) excludes itself within a few
// seconds: 421 to new SMTP sessions, 503 on /readyz with the reason, the
// reason in `cluster status`; it comes back by itself when they return.
func TestANodeWithoutALeaderExcludesItselfAndComesBack(t *testing.T) {
	ms := startCluster(t, 3)
	alone := ms[2]
	ms[0].stop(syscall.SIGKILL)
	ms[1].stop(syscall.SIGKILL)
	curl := need(t, "curl")
	readyz := func() string {
		out, _ := exec.Command(curl, "-sS", "--cacert", alone.ca, "-w", " %{http_code}",
			fmt.Sprintf("https://127.0.0.1:%d/readyz", alone.ports["https"])).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	greeting := func() string {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", alone.ports["submissions"]), alone.tlsClient(t, alone.name))
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line)
	}
	start := time.Now()
	for !strings.HasSuffix(readyz(), " 503") {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("/readyz still %q 15 s after the others died", readyz())
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("not ready %v after the two others were killed: /readyz %s", time.Since(start).Round(100*time.Millisecond), readyz())
	if g := greeting(); !strings.HasPrefix(g, "421 4.3.0") {
		t.Errorf("SMTP greeting of a node without a leader: %q, want 421 4.3.0", g)
	} else {
		t.Logf("SMTP greeting: %s", g)
	}
	st, err := alone.status(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.ID == alone.id {
			if n.Ready || n.Reason == "" {
				t.Errorf("cluster status on %s: %+v, want not ready with a reason", alone.id, n)
			}
			t.Logf("cluster status: %s ready=%v reason=%q", n.ID, n.Ready, n.Reason)
		}
	}
	if out, err := alone.try("", "domain", "add", "late.test"); err == nil {
		t.Errorf("a write without a leader succeeded: %s", out)
	} else {
		t.Logf("a write without a leader: %v", err)
	}

	ms[0].start()
	ms[1].start()
	waitCluster(t, alone, "every node ready again", func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == 3 && leaders(st) == 1 && allReady(st)
	})
	if r := readyz(); !strings.HasSuffix(r, " 200") {
		t.Errorf("/readyz after the others came back: %s", r)
	}
	if g := greeting(); !strings.HasPrefix(g, "220 ") {
		t.Errorf("SMTP greeting after the others came back: %q", g)
	}
}

// A node joins only with a valid token: a revoked one is refused with a
// clear error and the node does not start; `cluster remove` takes a
// node out.
func TestAJoinTokenIsNeededAndRevocableAndANodeCanBeRemoved(t *testing.T) {
	ms := startCluster(t, 1)
	first := ms[0]
	token := strings.TrimSpace(first.cli("", "cluster", "token", "--ttl", "1h"))
	id := strings.Split(token, ".")[1]
	if list := first.cli("", "cluster", "token", "--list"); !strings.Contains(list, id) || strings.Contains(list, strings.Split(token, ".")[2]) {
		t.Fatalf("token list %q: want the id %s and no secret", list, id)
	}
	first.cli("", "cluster", "token", "--revoke", id)
	tokenFile := filepath.Join(t.TempDir(), "join.token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	raftPort := freePort(t)
	table := fmt.Sprintf("[cluster]\nnode_id = \"n2\"\nraft_addr = \"127.0.0.1:%d\"\njoin = [\"127.0.0.1:%d\"]\ntoken_file = %q\n",
		raftPort, first.raftPort, tokenFile)
	second := &member{id: "n2", raftPort: raftPort, instance: newInstance(t, "mx2.cluster.test", table)}
	if err := second.startOnce(); err == nil {
		t.Fatal("a node with a revoked token started")
	}
	second.mu.Lock()
	out := second.output.String()
	second.output.Reset()
	second.mu.Unlock()
	if !strings.Contains(out, "join token rejected") {
		t.Fatalf("a revoked token: the node said %q, want \"join token rejected\"", out)
	}
	t.Logf("revoked token: %s", lastLine(out))

	os.WriteFile(tokenFile, []byte(first.cli("", "cluster", "token")), 0o600)
	second.start()
	waitCluster(t, first, "two nodes ready", func(st manage.ClusterStatus) bool { return len(st.Nodes) == 2 && allReady(st) })
	first.cli("", "cluster", "remove", "n2")
	st := waitCluster(t, first, "n2 removed", func(st manage.ClusterStatus) bool { return len(st.Nodes) == 1 })
	t.Logf("after remove: %+v", st.Nodes)
	if out, err := first.try("", "cluster", "remove", "n9"); err == nil {
		t.Errorf("removing an unknown node: %s", out)
	} else {
		t.Logf("removing an unknown node: %v", err)
	}
}

// Two of three nodes lost for good: the survivor cannot take writes; the
// operator stops it, runs `cluster recover`, and starts it: it leads alone
// with all its data and takes writes again.
func TestClusterRecoverBringsBackTheLastSurvivor(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	survivor := ms[2]
	waitCluster(t, survivor, "the survivor has the mailbox", func(manage.ClusterStatus) bool {
		out, err := survivor.try("", "mailbox", "list")
		return err == nil && strings.Contains(out, "alice@cluster.test")
	})
	ms[0].stop(syscall.SIGKILL)
	ms[1].stop(syscall.SIGKILL)
	if out, err := survivor.try("", "domain", "add", "lost.test"); err == nil {
		t.Fatalf("a write without a quorum succeeded: %s", out)
	}
	survivor.stop(syscall.SIGTERM)
	if out, err := survivor.try("no\n", "cluster", "recover"); err == nil || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("recover without confirmation: %v %s", err, out)
	}
	out := survivor.cli("RECOVER\n", "cluster", "recover")
	t.Logf("cluster recover: %s", strings.TrimSpace(out))
	survivor.start()
	st := waitCluster(t, survivor, "the survivor leads alone", func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == 1 && leaders(st) == 1 && allReady(st)
	})
	t.Logf("after recover: %+v", st.Nodes)
	survivor.cli("", "domain", "add", "after.test")
	if got := survivor.cli("", "mailbox", "list"); !strings.Contains(got, "alice@cluster.test") {
		t.Errorf("the recovered node lost the mailbox: %s", got)
	}
}
