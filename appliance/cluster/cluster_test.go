package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"sigillo/raftfsm"
	"sigillo/storage"
)

func hasDomain(t *testing.T, s *storage.Store, name string) bool {
	t.Helper()
	ds, err := s.Domains(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(ds, func(d storage.Domain) bool { return d.Name == name })
}

// A client writes through a follower: the command is committed by the
// leader, and the follower, which answered only after applying it, shows
// it at once. A refusal by the leader reaches the client as the same
// *storage.Error. Writes through both followers at once all land.
func TestAWriteOnAFollowerIsReadThereAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	f1, f2 := c.nodes[1], c.nodes[2]

	var retries atomic.Int64
	a, err := applyLikeAClient(ctx, f1.fwd, &storage.AddDomain{Name: "follower.test"}, &retries)
	if id, ok := a.Value.(int64); err != nil || (!ok && retries.Load() == 0) || (ok && id <= 0) {
		t.Fatalf("add a domain through n2: %+v, %v", a, err)
	}
	if !hasDomain(t, f1.store, "follower.test") {
		t.Fatal("n2 answered before it had applied its own write")
	}

	_, err = f2.fwd.Apply(ctx, &storage.AddDomain{Name: "follower.test"})
	var refusal *storage.Error
	if !errors.As(err, &refusal) || refusal.Code != storage.ErrExists || errors.Is(err, raftfsm.ErrUnavailable) {
		t.Fatalf("the same domain again through n3: %v (%T), want the leader's refusal %q", err, err, storage.ErrExists)
	}
	t.Logf("refusal through n3: code %s, %q", refusal.Code, refusal.Msg)

	// One write after the other: what a lone client waits.
	var took []time.Duration
	for i := range 30 {
		start := time.Now()
		if _, err := applyLikeAClient(ctx, f1.fwd, &storage.AddDomain{Name: fmt.Sprintf("seq%d.test", i)}, &retries); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("30 writes one after the other through n2: median %v, max %v", took[15].Round(time.Microsecond), took[29].Round(time.Microsecond))

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		tn := c.nodes[1+i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d.test", i)
			if _, err := applyLikeAClient(ctx, tn.fwd, &storage.AddDomain{Name: name}, &retries); err != nil {
				errs <- fmt.Errorf("%s through %s: %w", name, tn.id, err)
				return
			}
			if !hasDomain(t, tn.store, name) {
				errs <- fmt.Errorf("%s: %s answered before applying it", name, tn.id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ds, _ := c.nodes[0].store.Domains(ctx)
	if len(ds) != 71 {
		t.Fatalf("the leader has %d domains, want 71", len(ds))
	}
	t.Logf("71 writes, %d retried after a temporary failure", retries.Load())
}

// applyLikeAClient applies cmd through fwd and, as a client does, tries
// again after a temporary failure (raftfsm.ErrUnavailable: on a loaded
// machine the leader may lose its lease and be elected again); a retry
// that finds the domain made by the first try counts as done.
func applyLikeAClient(ctx context.Context, fwd *Forwarder, cmd storage.Command, retries *atomic.Int64) (storage.Applied, error) {
	for try := 0; ; try++ {
		a, err := fwd.Apply(ctx, cmd)
		switch {
		case try > 0 && storage.IsCode(err, storage.ErrExists):
			return a, nil
		case errors.Is(err, raftfsm.ErrUnavailable) && try < 5 && ctx.Err() == nil:
			retries.Add(1)
			time.Sleep(200 * time.Millisecond)
		default:
			return a, err
		}
	}
}

// A new node enrolls with a join token made on a follower, through the
// other follower: it gets a certificate for its key from the cluster CA
// and the secrets every node needs, and is not yet a member. A wrong,
// expired or revoked token is refused at once, and nobody without a node
// certificate gets anything else from the port.
func TestAJoiningNodeEnrollsWithATokenThroughAFollower(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	line, err := c.nodes[2].svc.NewToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := c.nodes[2].svc.Tokens(ctx)
	if err != nil || len(tokens) != 1 || tokens[0].Expired || tokens[0].Expires.Sub(tokens[0].Created) != 24*time.Hour {
		t.Fatalf("tokens on n3 right after making one there: %+v, %v", tokens, err)
	}
	_, secret, _ := testTokens{}.Parse(line)
	listed, _ := json.Marshal(tokens)
	stored, _ := c.nodes[0].store.KV(ctx, TokenPrefix+tokens[0].ID)
	if bytes.Contains(listed, secret) || bytes.Contains(stored, secret) {
		t.Fatal("the token's secret is listed or stored")
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	req := EnrollRequest{NodeID: "n4", Advertise: "127.0.0.1:7004", Token: line, PublicKey: pub}
	joiner := c.ca.client() // trusts the cluster CA, has no certificate
	resp, err := Enroll(ctx, joiner, []string{c.nodes[1].addr}, req)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(resp.Cert))
	if block == nil {
		t.Fatalf("no certificate in %q", resp.Cert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: c.ca.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil ||
		cert.Subject.CommonName != "n4" || !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("certificate for %s (verify: %v), want one for n4's key", cert.Subject.CommonName, err)
	}
	if resp.CA != string(c.ca.pem) || !bytes.Equal(resp.Secrets["acme-storage.key"], acmeKey) {
		t.Fatalf("CA or secrets wrong: CA %d bytes, secrets %v", len(resp.CA), mapsKeys(resp.Secrets))
	}
	if servers, _ := c.nodes[0].node.Servers(); len(servers) != 3 {
		t.Fatalf("enroll changed the configuration: %+v", servers)
	}

	expired, err := c.nodes[1].svc.NewToken(ctx, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := c.nodes[0].svc.NewToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revokedID, _, _ := testTokens{}.Parse(revoked)
	if err := c.nodes[0].svc.RevokeToken(ctx, revokedID); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].svc.RevokeToken(ctx, "nothere"); err == nil {
		t.Fatal("revoking an unknown token succeeded")
	}
	time.Sleep(5 * time.Millisecond)
	wrong := line[:len(line)-2] + "AA"
	for name, tok := range map[string]string{"wrong secret": wrong, "expired": expired, "revoked": revoked, "garbage": "hello"} {
		start := time.Now()
		r := req
		r.Token = tok
		_, err := Enroll(ctx, joiner, []string{c.nodes[2].addr, c.nodes[0].addr}, r)
		if !errors.Is(err, ErrTokenRejected) || time.Since(start) > 5*time.Second {
			t.Errorf("%s token: %v after %v, want ErrTokenRejected at once", name, err, time.Since(start))
		}
	}
	// What a joining node sees on the wire for a refused token.
	body, _ := json.Marshal(EnrollRequest{NodeID: "n4", Advertise: "127.0.0.1:7004", Token: revoked, PublicKey: pub})
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.nodes[1].addr+PathEnroll, bytes.NewReader(body))
	res, err := joiner.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	var refused rpcError
	json.NewDecoder(res.Body).Decode(&refused)
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || res.Header.Get("Content-Type") != "application/json" || refused.Code != codeForbidden {
		t.Fatalf("enroll with a revoked token: %d %s %+v", res.StatusCode, res.Header.Get("Content-Type"), refused)
	}
	if logs := c.logs.String(); strings.Contains(logs, line) || strings.Contains(logs, string(secret)) {
		t.Error("a token's secret is in the logs")
	}

	// A stranger (no node certificate) gets nothing but enroll.
	for _, path := range []string{PathStatus, PathAdd, PathApply, PathRemove} {
		method := http.MethodPost
		if path == PathStatus {
			method = http.MethodGet
		}
		r, _ := http.NewRequestWithContext(ctx, method, "https://"+c.nodes[0].addr+path, strings.NewReader(`{"node_id":"n4"}`))
		res, err := joiner.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s without a node certificate: %d %s", method, path, res.StatusCode, body)
		}
	}
}

func mapsKeys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Status lists the three nodes, one leader and two followers with their
// lag; a node whose RPC does not answer shows as unreachable; a node
// added twice stays once, a node cannot add another; removing a node
// through a follower leaves two.
func TestStatusAddTwiceAndRemove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	for i := range 5 {
		if _, err := c.nodes[i%3].fwd.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("s%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}

	if err := AddSelf(ctx, c.nodes[1].client, []string{c.nodes[2].addr, c.nodes[0].addr}, "n2", c.nodes[1].addr); err != nil {
		t.Fatalf("n2 adds itself again: %v", err)
	}
	if servers, _ := c.nodes[0].node.Servers(); len(servers) != 3 {
		t.Fatalf("after adding n2 twice: %+v", servers)
	}
	if err := AddSelf(ctx, c.nodes[2].client, []string{c.nodes[1].addr}, "n2", "127.0.0.1:9"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("n3 adds n2 elsewhere: %v, want ErrForbidden", err)
	}

	nodes, err := c.nodes[1].svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	report, _ := json.Marshal(Report{Nodes: nodes})
	t.Logf("status: %s", report)
	roles := map[string]int{}
	var leaderApplied uint64
	for _, n := range nodes {
		roles[n.Role]++
		if n.Role == RoleLeader {
			leaderApplied = n.AppliedIndex
		}
		if !n.Ready || n.Version != "test-1" || n.AppliedIndex == 0 {
			t.Errorf("node %+v", n)
		}
	}
	if len(nodes) != 3 || roles[RoleLeader] != 1 || roles[RoleFollower] != 2 || nodes[0].ID != "n1" || nodes[0].Role != RoleLeader {
		t.Fatalf("status: %+v", nodes)
	}
	for _, n := range nodes {
		if n.Lag != leaderApplied-min(leaderApplied, n.AppliedIndex) {
			t.Errorf("%s: lag %d, leader applied %d, node %d", n.ID, n.Lag, leaderApplied, n.AppliedIndex)
		}
	}
	var decoded struct {
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal(report, &decoded); err != nil || len(decoded.Nodes) != 3 {
		t.Fatalf("report: %v", err)
	}
	for _, k := range []string{"id", "address", "role", "applied_index", "ready", "lag", "last_contact_ms", "version"} {
		if _, ok := decoded.Nodes[1][k]; !ok {
			t.Errorf("the report has no %q", k)
		}
	}

	// n3 stops hearing from the leader; n1 and n2 commit without it.
	c.nodes[0].trans.Disconnect(raft.ServerAddress(c.nodes[2].addr))
	for i := range 3 {
		if _, err := c.nodes[1].fwd.Apply(ctx, &storage.AddDomain{Name: fmt.Sprintf("lag%d.test", i)}); err != nil {
			t.Fatal(err)
		}
	}
	nodes, err = c.nodes[0].svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nodes[2].Lag < 3 || nodes[1].Lag != 0 || nodes[0].Lag != 0 {
		t.Fatalf("n3 cut off for three commands: %+v", nodes)
	}
	t.Logf("n3 cut off: lag %d (leader applied %d)", nodes[2].Lag, nodes[0].AppliedIndex)
	c.nodes[0].trans.Connect(raft.ServerAddress(c.nodes[2].addr), c.nodes[2].trans)
	if err := c.nodes[2].node.WaitApplied(ctx, nodes[0].AppliedIndex); err != nil {
		t.Fatalf("n3 does not catch up: %v", err)
	}

	c.nodes[2].srv.Close()
	start := time.Now()
	nodes, err = c.nodes[0].svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := nodes[2]; n.ID != "n3" || n.Role != RoleUnreachable || n.Ready || n.Reason == "" || time.Since(start) > 3*time.Second {
		t.Fatalf("n3 with its RPC closed: %+v after %v", n, time.Since(start))
	}

	if err := c.nodes[1].svc.Remove(ctx, "n9"); !errors.Is(err, raftfsm.ErrNoSuchServer) {
		t.Fatalf("remove n9: %v, want ErrNoSuchServer", err)
	}
	if err := c.nodes[1].svc.Remove(ctx, "n3"); err != nil {
		t.Fatalf("remove n3 through n2: %v", err)
	}
	nodes, err = c.nodes[1].svc.Status(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].ID != "n1" || nodes[1].ID != "n2" {
		t.Fatalf("after removing n3: %+v, %v", nodes, err)
	}
}

// A forwarded command whose answer is lost after the leader applied it is
// not sent again: the client gets a temporary error, and its retry meets
// the command already done. A follower sent a command directly names the
// leader; with the leader's RPC gone, writes on a follower fail as
// temporary.
func TestAForwardedWriteIsNeverSentTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	leader, f := c.nodes[0], c.nodes[1]

	leader.abortApply.Store(true)
	_, err := f.fwd.Apply(ctx, &storage.AddDomain{Name: "once.test"})
	if !errors.Is(err, raftfsm.ErrUnavailable) {
		t.Fatalf("answer lost: %v, want ErrUnavailable", err)
	}
	t.Logf("answer lost: %v", err)
	leader.abortApply.Store(false)
	if !hasDomain(t, leader.store, "once.test") {
		t.Fatal("the leader did not apply the command")
	}
	if _, err := f.fwd.Apply(ctx, &storage.AddDomain{Name: "once.test"}); !storage.IsCode(err, storage.ErrExists) {
		t.Fatalf("the client's retry: %v, want exists", err)
	}

	data, _ := storage.Encode(&storage.AddDomain{Name: "direct.test"})
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.nodes[2].addr+PathApply, bytes.NewReader(data))
	res, err := f.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	var e rpcError
	json.NewDecoder(res.Body).Decode(&e)
	res.Body.Close()
	if res.StatusCode != http.StatusMisdirectedRequest || e.Code != codeNotLeader || e.LeaderAddr != leader.addr {
		t.Fatalf("apply on a follower: %d %+v", res.StatusCode, e)
	}

	leader.srv.Close()
	_, err = f.fwd.Apply(ctx, &storage.AddDomain{Name: "late.test"})
	if !errors.Is(err, raftfsm.ErrUnavailable) {
		t.Fatalf("leader's RPC closed: %v, want ErrUnavailable", err)
	}
	t.Logf("leader's RPC closed: %v", err)
}

// The leader removes itself: it steps down, the two others elect a leader
// between them, and a write on a follower finds the new leader.
func TestTheLeaderRemovesItself(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := startCluster(t, 3)
	if err := c.nodes[0].svc.Remove(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.nodes[1].fwd.Apply(ctx, &storage.AddDomain{Name: "after.test"}); err != nil {
		t.Fatalf("a write after the leader left: %v", err)
	}
	t.Logf("a write through n2 went through %v after n1 left", time.Since(start).Round(time.Millisecond))
	if !hasDomain(t, c.nodes[1].store, "after.test") {
		t.Fatal("n2 does not show its write")
	}
	nodes, err := c.nodes[2].svc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, n := range nodes {
		roles[n.ID] = n.Role
	}
	if len(nodes) != 2 || roles["n1"] != "" || (roles["n2"] == RoleLeader) == (roles["n3"] == RoleLeader) {
		t.Fatalf("after n1 left: %+v", nodes)
	}
}
