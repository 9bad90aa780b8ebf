package main

// The history check of the cluster, as Jepsen checks rqlite: IMAP clients
// on every node read and write the flags of six messages while the leader
// is killed and paused; every operation is recorded with the times it was
// sent and answered, and porcupine (a linearizability checker) judges the
// history against two models:
//
//   - a register per message (STORE FLAGS replaces the set, FETCH FLAGS
//     reads it): strict linearizability of reads and writes. Reads in
//     Sigillo are served from the local node's applied state, which may lag
//     the leader, so this model is reported (with porcupine's drawing) but
//     is not what the design promises.
//   - what the design promises: the writes are ordered once (the raft log),
//     each within its own call and answer; a read on a node sees a prefix
//     of that order that holds every write the node acknowledged before the
//     read (read-your-writes through the node) and is never shorter than a
//     prefix an earlier read on that node saw (monotonic reads). A failure
//     here fails the test.
//
// A write that failed or timed out may have been applied: if a read saw
// its value it is closed at that read's answer, else it is left out (no
// read could tell it happened). Monotonic reads are per node, across its
// restarts too (the node keeps its database: NoSnapshotRestoreOnStart).

import (
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"sigillo/appliance/manage"
)

// flagOp is the input of one operation on a register (a message's flags).
type flagOp struct {
	key   int    // register: 0 to 5
	node  int    // index of the node the client talks to
	write bool   // STORE FLAGS (replace) or FETCH FLAGS
	value string // written: the keyword set, canonical
	acked bool   // a write that got OK (else its outcome is unknown)
	// answer marks the instant the node answered OK to the write of
	// value: from then on the node has applied it (an operation of its
	// own, as a node applies the write between the commit, where the
	// write takes effect, and its answer).
	answer bool
}

// flagResult is the output of an operation: the set read, canonical.
type flagResult struct{ value string }

// opNote is an operation's metadata for the drawing.
type opNote struct {
	node string
	err  string
}

// historyRecorder collects operations from the clients.
type historyRecorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	ids   atomic.Int64 // porcupine client ids: one per connection
}

func (h *historyRecorder) now() int64 { return int64(time.Since(h.start)) }

func (h *historyRecorder) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// history is the recorded operations, ready for the checker (prepare).
func (h *historyRecorder) history() (ops []porcupine.Operation, dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return prepare(h.ops)
}

// prepare adds to each acknowledged write its answer, an operation at the
// instant after the OK, and closes the writes without an answer. Such a
// write may have been applied: if some read saw its value it was, before
// the first such read answered, so that answer closes it; if no read saw
// it, it changes nothing a read can tell and is left out (placing it after
// everything else would be as good). dropped counts those.
func prepare(raw []porcupine.Operation) (ops []porcupine.Operation, dropped int) {
	seen := map[string]int64{} // value: the earliest answer of a read of it
	for _, op := range raw {
		if in := op.Input.(flagOp); !in.write && !in.answer {
			v := op.Output.(flagResult).value
			if t, ok := seen[v]; !ok || op.Return < t {
				seen[v] = op.Return
			}
		}
	}
	for _, op := range raw {
		in := op.Input.(flagOp)
		switch {
		case in.write && in.acked:
			answer := op
			answer.Input = flagOp{key: in.key, node: in.node, value: in.value, answer: true}
			answer.Call, answer.Return = op.Return+1, op.Return+1
			ops = append(ops, answer)
		case in.write:
			t, ok := seen[in.value]
			if !ok {
				dropped++
				continue
			}
			op.Return = t
		}
		ops = append(ops, op)
	}
	return ops, dropped
}

// canonicalFlags is a flag set as one string: sorted, without \Recent.
func canonicalFlags(flags []imap.Flag) string {
	var out []string
	for _, f := range flags {
		if !strings.EqualFold(string(f), `\Recent`) {
			out = append(out, string(f))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// imapSession is one client connection to one node, with a deadline on
// every command.
type imapSession struct {
	conn net.Conn
	c    *imapclient.Client
	id   int
}

const historyOpTimeout = 5 * time.Second

func dialHistorySession(m *member, conf *tls.Config, id int) (*imapSession, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", m.ports["imaps"]), conf)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", m.id, err)
	}
	s := &imapSession{conn: conn, c: imapclient.New(conn, nil), id: id}
	s.deadline()
	if err := s.c.Login("alice@cluster.test", password("alice@cluster.test")).Wait(); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("login on %s: %w", m.id, err)
	}
	if _, err := s.c.Select("INBOX", nil).Wait(); err != nil {
		s.c.Close()
		return nil, fmt.Errorf("select on %s: %w", m.id, err)
	}
	return s, nil
}

func (s *imapSession) deadline() { s.conn.SetDeadline(time.Now().Add(historyOpTimeout)) }

func (s *imapSession) store(uid imap.UID, value string) error {
	s.deadline()
	return s.c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: []imap.Flag{imap.Flag(value)}}, nil).Close()
}

func (s *imapSession) fetchFlags(uid imap.UID) (string, error) {
	s.deadline()
	msgs, err := s.c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		return "", err
	}
	for _, m := range msgs {
		if m.UID == uid {
			return canonicalFlags(m.Flags), nil
		}
	}
	return "", fmt.Errorf("no FETCH answer for UID %d", uid)
}

// historyClient reads and writes the registers through one node until
// stop closes; a connection that fails is dropped and a new one (a new
// porcupine client) is made.
func historyClient(h *historyRecorder, m *member, node int, conf *tls.Config, uids []imap.UID, writes *atomic.Int64, stop <-chan struct{}, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 17))
	var s *imapSession
	defer func() {
		if s != nil {
			s.c.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if s == nil {
			var err error
			if s, err = dialHistorySession(m, conf, int(h.ids.Add(1)-1)); err != nil {
				s = nil
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		key := rng.IntN(len(uids))
		in := flagOp{key: key, node: node, write: rng.IntN(5) < 2} // 40% writes
		var err error
		var out flagResult
		call := h.now()
		if in.write {
			in.value = fmt.Sprintf("$v%d", writes.Add(1))
			err = s.store(uids[key], in.value)
		} else {
			out.value, err = s.fetchFlags(uids[key])
		}
		ret := h.now()
		note := opNote{node: m.id}
		switch {
		case err == nil:
			in.acked = in.write
		case in.write:
			ret = -1 // may have been applied, at any time after the call
			note.err = err.Error()
		default:
			// A read without an answer says nothing.
		}
		if err == nil || in.write {
			h.add(porcupine.Operation{ClientId: s.id, Input: in, Call: call, Output: out, Return: ret, Metadata: note})
		}
		if err != nil {
			s.c.Close()
			s = nil
		}
	}
}

// registerModel is a linearizable register per message: the strict model.
func registerModel() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey,
		Init:      func() interface{} { return "" },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			in := input.(flagOp)
			switch {
			case in.write:
				return true, in.value
			case in.answer:
				return true, state
			}
			return output.(flagResult).value == state.(string), state
		},
		DescribeOperation: describeFlagOp,
		DescribeState:     func(state interface{}) string { return fmt.Sprintf("{%s}", state) },
		DescribeOperationMetadata: func(info interface{}) string {
			n := info.(opNote)
			if n.err != "" {
				return n.node + ": " + n.err
			}
			return n.node
		},
	}
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	by := map[int][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(flagOp).key
		by[k] = append(by[k], op)
	}
	var out [][]porcupine.Operation
	for _, k := range slices.Sorted(maps.Keys(by)) {
		out = append(out, by[k])
	}
	return out
}

func describeFlagOp(input, output interface{}) string {
	in := input.(flagOp)
	if in.answer {
		return fmt.Sprintf("n%d has applied {%s}", in.node+1, in.value)
	}
	if in.write {
		if !in.acked {
			return fmt.Sprintf("n%d store {%s} ?", in.node+1, in.value)
		}
		return fmt.Sprintf("n%d store {%s}", in.node+1, in.value)
	}
	return fmt.Sprintf("n%d fetch → {%s}", in.node+1, output.(flagResult).value)
}

// logEntry is one write in the order the model builds: an immutable list
// from the newest back to the initial value (index 0).
type logEntry struct {
	value string
	index int
	prev  *logEntry
}

// logState is the promised model's state for one register: the writes in
// order, and per node the index of the shortest prefix its next read may
// see.
type logState struct {
	last *logEntry
	pos  [3]int
}

// replicaModel is what the design promises (see the file comment).
func replicaModel() porcupine.Model {
	m := registerModel()
	m.Init = func() interface{} { return logState{last: &logEntry{}} }
	m.Step = func(state, input, output interface{}) (bool, interface{}) {
		st, in := state.(logState), input.(flagOp)
		if in.write {
			st.last = &logEntry{value: in.value, index: st.last.index + 1, prev: st.last}
			return true, st
		}
		if in.answer {
			// The node has applied the write, and every one before it.
			// (The write is in the log: it returned before its answer.)
			for e := st.last; e != nil; e = e.prev {
				if e.value == in.value {
					st.pos[in.node] = max(st.pos[in.node], e.index)
					return true, st
				}
			}
			return false, st
		}
		want := output.(flagResult).value
		for e := st.last; e != nil && e.index >= st.pos[in.node]; e = e.prev {
			if e.value == want {
				st.pos[in.node] = e.index
				return true, st
			}
		}
		return false, st
	}
	// Only the writes from the shortest prefix a node may still read on
	// matter to what comes next: states that agree there are the same
	// (and porcupine's cache of visited states works).
	m.Equal = func(a, b interface{}) bool {
		x, y := a.(logState), b.(logState)
		if x.pos != y.pos || x.last.index != y.last.index {
			return false
		}
		floor := slices.Min(x.pos[:])
		for p, q := x.last, y.last; p != q && p.index >= floor; p, q = p.prev, q.prev {
			if p.value != q.value {
				return false
			}
		}
		return true
	}
	m.Hash = func(state interface{}) uint64 {
		st := state.(logState)
		h := fnv.New64a()
		fmt.Fprint(h, st.last.index, st.pos)
		floor := slices.Min(st.pos[:])
		for e := st.last; e != nil && e.index >= floor; e = e.prev {
			h.Write([]byte(e.value))
			h.Write([]byte{0})
		}
		return h.Sum64()
	}
	m.DescribeState = func(state interface{}) string {
		st := state.(logState)
		var tail []string
		for e := st.last; e != nil && len(tail) < 4; e = e.prev {
			tail = append(tail, fmt.Sprintf("%d:{%s}", e.index, e.value))
		}
		return fmt.Sprintf("log …%s; nodes read from %v", strings.Join(tail, " "), st.pos)
	}
	return m
}

func TestHistoryOfFlagsUnderKillsAndPausesIsLinearizable(t *testing.T) {
	ms := startCluster(t, 3)
	ms[0].provision("cluster.test", "alice@cluster.test")
	// Reads are local: the mailbox logs in on a node once it has applied
	// its creation.
	caughtUp(t, ms)
	conf := ms[0].tlsClient(t, "")

	// The registers: six messages with no flags, seen by every node. (More
	// registers, fewer writes at once on each: porcupine's search stays short.)
	first, err := dialHistorySession(ms[1], conf, 0)
	if err != nil {
		t.Fatal(err)
	}
	var uids []imap.UID
	for i := 0; i < 6; i++ {
		msg := fmt.Sprintf("From: alice@cluster.test\r\nSubject: register %d\r\n\r\nx\r\n", i)
		first.deadline()
		cmd := first.c.Append("INBOX", int64(len(msg)), nil)
		cmd.Write([]byte(msg))
		cmd.Close()
		data, err := cmd.Wait()
		if err != nil {
			t.Fatalf("append register %d: %v", i, err)
		}
		uids = append(uids, data.UID)
	}
	first.c.Close()
	caughtUp(t, ms)

	h := &historyRecorder{start: time.Now()}
	var writes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const clients = 5
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			historyClient(h, ms[w%3], w%3, conf, uids, &writes, stop, uint64(w))
		}()
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopClients)

	// The faults: kill the leader, pause the leader, kill the leader.
	at := func(d time.Duration) { time.Sleep(time.Until(h.start.Add(d))) }
	var nemesis []string
	at(3 * time.Second)
	l := leaderOf(t, ms, ms[0])
	l.stop(syscall.SIGKILL)
	nemesis = append(nemesis, fmt.Sprintf("%v: SIGKILL leader %s", time.Since(h.start).Round(time.Millisecond), l.id))
	at(5 * time.Second)
	l.start()
	nemesis = append(nemesis, fmt.Sprintf("%v: %s restarted", time.Since(h.start).Round(time.Millisecond), l.id))
	at(8 * time.Second)
	p := leaderOf(t, ms, ms[0])
	p.cmd.Process.Signal(syscall.SIGSTOP)
	nemesis = append(nemesis, fmt.Sprintf("%v: SIGSTOP leader %s", time.Since(h.start).Round(time.Millisecond), p.id))
	at(11 * time.Second)
	p.cmd.Process.Signal(syscall.SIGCONT)
	nemesis = append(nemesis, fmt.Sprintf("%v: SIGCONT %s", time.Since(h.start).Round(time.Millisecond), p.id))
	at(14 * time.Second)
	l = leaderOf(t, ms, ms[0])
	l.stop(syscall.SIGKILL)
	nemesis = append(nemesis, fmt.Sprintf("%v: SIGKILL leader %s", time.Since(h.start).Round(time.Millisecond), l.id))
	at(16 * time.Second)
	l.start()
	nemesis = append(nemesis, fmt.Sprintf("%v: %s restarted", time.Since(h.start).Round(time.Millisecond), l.id))
	at(20 * time.Second)
	stopClients()
	t.Logf("faults: %s", strings.Join(nemesis, "; "))

	// Once every node has caught up, one more read of each register on
	// each node: they must agree with the history too.
	caughtUp(t, ms)
	for i, m := range ms {
		s, err := dialHistorySession(m, conf, int(h.ids.Add(1)-1))
		if err != nil {
			t.Fatal(err)
		}
		for k, uid := range uids {
			call := h.now()
			v, err := s.fetchFlags(uid)
			if err != nil {
				t.Fatalf("final read on %s: %v", m.id, err)
			}
			h.add(porcupine.Operation{ClientId: s.id, Input: flagOp{key: k, node: i}, Call: call, Output: flagResult{v}, Return: h.now(), Metadata: opNote{node: m.id}})
		}
		s.c.Close()
	}

	ops, dropped := h.history()
	raw := h.ops
	reads, acked, unknown := 0, 0, dropped
	for _, op := range ops {
		switch in := op.Input.(flagOp); {
		case in.answer:
		case !in.write:
			reads++
		case in.acked:
			acked++
		default:
			unknown++
		}
	}
	t.Logf("history: %d operations by %d connections: %d reads, %d acknowledged writes, %d writes with unknown outcome (%d of them never read, left out)", len(raw), h.ids.Load(), reads, acked, unknown, dropped)
	if acked < 100 || reads < 100 {
		t.Fatalf("too little traffic for a meaningful check: %d reads, %d acknowledged writes", reads, acked)
	}

	dir := t.TempDir()
	check := func(name string, model porcupine.Model) porcupine.CheckResult {
		started := time.Now()
		res, info := porcupine.CheckOperationsVerbose(model, ops, 15*time.Second)
		t.Logf("%s: %s (checked in %v)", name, res, time.Since(started).Round(time.Millisecond))
		if res != porcupine.Ok {
			path := filepath.Join(dir, name+".html")
			if err := porcupine.VisualizePath(model, info, path); err != nil {
				t.Errorf("drawing the %s history: %v", name, err)
			} else {
				t.Logf("%s: porcupine's drawing of the history is %s", name, path)
			}
		}
		return res
	}
	// Strict: reported, not required (reads are local by design).
	if res := check("linearizable-register", registerModel()); res == porcupine.Illegal {
		t.Logf("FINDING: the history is not linearizable as one register per message: a read on a node " +
			"returned a value older than one already acknowledged elsewhere (reads are served from the local, " +
			"possibly lagging, replica; there is no linearizable read)")
		for _, line := range staleReads(ops, 5) {
			t.Log(line)
		}
	}
	// Promised: one write order, read-your-writes and monotonic reads per node.
	if res := check("promised", replicaModel()); res != porcupine.Ok {
		t.Errorf("the history breaks what the cluster promises (one order of writes, reads of a prefix "+
			"holding the node's own acknowledged writes, never going back): %s", res)
	}
}

// caughtUp waits until every node is ready and has no lag.
func caughtUp(t *testing.T, ms []*member) {
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
	}
}

// staleReads explains a strict failure in plain terms: reads that returned
// a value although a later write (one called after that value's write
// answered) had been acknowledged before the read was sent. It returns a
// count per node, the stalest, and up to limit more examples.
func staleReads(ops []porcupine.Operation, limit int) []string {
	writer := map[string]porcupine.Operation{}
	for _, op := range ops {
		if in := op.Input.(flagOp); in.write {
			writer[in.value] = op
		}
	}
	var examples []string
	var stalest string
	perNode := map[int]int{}
	var worst time.Duration
	for _, r := range ops {
		in := r.Input.(flagOp)
		if in.write || in.answer {
			continue
		}
		v := r.Output.(flagResult).value
		w0, written := writer[v]
		var missed *porcupine.Operation
		for i, w := range ops {
			win := w.Input.(flagOp)
			if !win.write || !win.acked || win.key != in.key || win.value == v || w.Return >= r.Call {
				continue
			}
			if written && w0.Return >= w.Call {
				continue // the two writes were concurrent: either may be last
			}
			if missed == nil || w.Return < missed.Return {
				missed = &ops[i]
			}
		}
		if missed == nil {
			continue
		}
		perNode[in.node]++
		lag := time.Duration(r.Call - missed.Return)
		line := fmt.Sprintf("  stale read at %v: n%d fetch of register %d → {%s}, but n%d had acknowledged {%s} %v before the fetch was sent",
			time.Duration(r.Call).Round(time.Millisecond), in.node+1, in.key, v, missed.Input.(flagOp).node+1, missed.Input.(flagOp).value, lag.Round(time.Microsecond))
		if lag > worst {
			worst, stalest = lag, line
		}
		if len(examples) < limit {
			examples = append(examples, line)
		}
	}
	summary := fmt.Sprintf("  stale reads by node: n1 %d, n2 %d, n3 %d; the stalest:", perNode[0], perNode[1], perNode[2])
	return append([]string{summary, stalest, "  the first:"}, examples...)
}

// TestHistoryModelsTellStaleFromBroken shows the two models are not
// vacuous: small histories (times in ms) that each must pass or fail.
func TestHistoryModelsTellStaleFromBroken(t *testing.T) {
	w := func(node int, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: flagOp{node: node, write: true, value: v, acked: ret >= 0}, Call: call, Return: ret, Output: flagResult{}}
	}
	r := func(node int, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: flagOp{node: node}, Call: call, Return: ret, Output: flagResult{v}}
	}
	for _, c := range []struct {
		name             string
		ops              []porcupine.Operation
		strict, promised bool
	}{
		{"a read after the write on another node", []porcupine.Operation{w(0, "$v1", 0, 10), r(1, "$v1", 20, 30)}, true, true},
		{"a stale read on another node", []porcupine.Operation{w(0, "$v1", 0, 10), r(1, "", 20, 30)}, false, true},
		{"read-your-writes broken", []porcupine.Operation{w(0, "$v1", 0, 10), r(0, "", 20, 30)}, false, false},
		{"a node going back", []porcupine.Operation{w(0, "$v1", 0, 10), r(1, "$v1", 20, 30), r(1, "", 40, 50)}, false, false},
		{"a node going back to an older write", []porcupine.Operation{w(0, "$v1", 0, 10), w(0, "$v2", 20, 30), r(1, "$v2", 40, 50), r(1, "$v1", 60, 70)}, false, false},
		{"two nodes seeing two writes in two orders", []porcupine.Operation{w(0, "$v1", 0, 100), w(1, "$v2", 0, 100), r(2, "$v1", 10, 20), r(2, "$v2", 30, 40), r(0, "$v2", 110, 120), r(0, "$v1", 130, 140)}, false, false},
		{"a node not yet answering its own write reads an older one", []porcupine.Operation{w(0, "$v1", 0, 10), w(1, "$v2", 5, 100), r(0, "$v2", 20, 30), r(1, "$v1", 40, 50)}, false, true},
		{"a node reading an older write after answering its own", []porcupine.Operation{w(0, "$v1", 0, 10), w(1, "$v2", 5, 100), r(0, "$v2", 20, 30), r(1, "$v1", 110, 120)}, false, false},
		{"a value never written", []porcupine.Operation{w(0, "$v1", 0, 10), r(1, "$v9", 20, 30)}, false, false},
		{"a write with no answer, seen later", []porcupine.Operation{w(0, "$v1", 0, 1000), w(0, "$v2", 10, -1), r(1, "$v2", 50, 60), r(1, "$v2", 70, 80)}, true, true},
		{"a write with no answer, not read-your-writes", []porcupine.Operation{w(0, "$v1", 0, 10), w(0, "$v2", 20, -1), r(0, "$v1", 50, 60)}, true, true},
	} {
		ops, _ := prepare(c.ops)
		if got := porcupine.CheckOperations(registerModel(), ops); got != c.strict {
			t.Errorf("%s: linearizable register %v, want %v", c.name, got, c.strict)
		}
		if got := porcupine.CheckOperations(replicaModel(), ops); got != c.promised {
			t.Errorf("%s: promised model %v, want %v", c.name, got, c.promised)
		}
	}
}
