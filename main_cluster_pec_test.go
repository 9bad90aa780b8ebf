package main

// The cluster as a PEC gestore: three nodes, one gestore identity, the
// leader killed while users submit certified mail through every node.

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigillo/appliance/manage"
)

// peccount is what `cluster.py peccount` prints for one mailbox: for each
// kind of PEC message (the X-Ricevuta value, or "posta-certificata" for a
// busta), how many copies refer to each client Message-ID.
type peccount map[string]map[string]int

func (m *member) peccount(t *testing.T, user string) peccount {
	t.Helper()
	out, err := clusterPython(t, m, "peccount", "USER="+user, "PASSWORD="+password(user),
		fmt.Sprintf("IMAPS=%d", m.ports["imaps"]))
	if err != nil {
		t.Fatalf("peccount %s on %s: %v\n%s", user, m.id, err, out)
	}
	var c peccount
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("peccount %s on %s: %v: %s", user, m.id, err, out)
	}
	return c
}

// exactlyOnce checks that each acknowledged Message-ID has one message of
// kind in c, and that no Message-ID has two; it returns how many there are.
func exactlyOnce(t *testing.T, where, kind string, c peccount, acked []string) int {
	t.Helper()
	got := c[kind]
	for _, id := range acked {
		if got[id] == 0 {
			t.Errorf("%s: %s got 250 but has no %s", where, id, kind)
		}
	}
	n := 0
	for id, copies := range got {
		n += copies
		if copies > 1 {
			t.Errorf("%s: %d %s for %s", where, copies, kind, id)
		}
	}
	return n
}

// Three nodes share one gestore key (one SoftHSM2 token, the same [signer]
// on each: in production a network HSM, or the same token on every
// machine). alice submits certified mail to bob through all three nodes
// while the leader is killed three times; afterwards, on every node, each
// message that got 250 has exactly one ricevuta di accettazione and one
// ricevuta di avvenuta consegna in alice's INBOX and one busta di trasporto
// in bob's, none twice (a retry after a 250 lost in the failover is not a
// second submission), and the legal log verifies.
func TestKillingTheLeaderUnderPECLoadKeepsEveryReceiptAndTheLegalLog(t *testing.T) {
	need(t, "python3")
	module, pins := softhsmTokens(t, t.TempDir(), "cluster-gestore")
	signer := pecGestoreConfig(module, "cluster-gestore", pins["cluster-gestore"], "Gestore Cluster S.p.A.", "posta-certificata@pec.test")

	// The key and its certificate are made once, in the token, before any
	// node runs: the certificate is a token object next to the key (the
	// signer's KeyLabel), not a file of a data directory, so every node
	// that opens the token has both and nothing is copied by hand. Any
	// configuration with this [signer] and [pec] will do; this one is
	// only for the command line.
	newInstance(t, "init.cluster.test", signer).cli("", "gestore", "init")

	ms := startCluster(t, 3, withConfig(signer))
	certs := map[string]bool{}
	for _, m := range ms {
		certs[m.cli("", "gestore", "cert")] = true
	}
	if len(certs) != 1 {
		t.Fatalf("the three nodes show %d gestore certificates, want one", len(certs))
	}
	ms[0].cli("", "domain", "add", "pec.test", "--pec")
	for _, u := range []string{"alice@pec.test", "bob@pec.test", "posta-certificata@pec.test"} {
		ms[0].cli(password(u)+"\n", "mailbox", "add", u, "--password-stdin")
	}

	start := time.Now()
	l := startLoad(t, ms, 150, "USER=alice@pec.test", "PASSWORD="+password("alice@pec.test"), "RCPT=bob@pec.test")
	kills := 0
	for kill := 1; kill <= 3; kill++ {
		select {
		case <-l.done:
		case <-time.After(time.Second):
		}
		leader := leaderOf(t, ms, anyAlive(t, ms, nil))
		leader.stop(syscall.SIGKILL)
		kills++
		t.Logf("kill %d: leader %s killed", kill, leader.id)
		time.Sleep(2 * time.Second)
		leader.start()
	}
	acked := l.wait(t)
	retried := 0 // attempts the access point took for a retry of an accepted submission
	for _, m := range ms {
		m.mu.Lock()
		retried += strings.Count(m.output.String(), "submission already accepted")
		m.mu.Unlock()
	}
	t.Logf("%d PEC submissions got 250 in %v, %d leaders killed; %d attempts were retries of a submission already accepted (a 250 lost)",
		len(acked), time.Since(start).Round(100*time.Millisecond), kills, retried)

	for _, m := range ms {
		waitCluster(t, m, m.id+" caught up", func(st manage.ClusterStatus) bool {
			for _, n := range st.Nodes {
				if !n.Ready || n.Lag != 0 {
					return false
				}
			}
			return len(st.Nodes) == len(ms)
		})
		// The avvenuta consegna is made in the same transaction as the
		// accettazione and the busta (local delivery): once the node has
		// caught up, everything is there.
		alice, bob := m.peccount(t, "alice@pec.test"), m.peccount(t, "bob@pec.test")
		acc := exactlyOnce(t, m.id+": alice", "accettazione", alice, acked)
		cons := exactlyOnce(t, m.id+": alice", "avvenuta-consegna", alice, acked)
		buste := exactlyOnce(t, m.id+": bob", "posta-certificata", bob, acked)
		for _, c := range []struct {
			user string
			pc   peccount
			want []string
		}{{"alice", alice, []string{"accettazione", "avvenuta-consegna"}}, {"bob", bob, []string{"posta-certificata"}}} {
			for kind, ids := range c.pc {
				if !contains(c.want, kind) {
					t.Errorf("%s: %s has %d unexpected %q messages", m.id, c.user, len(ids), kind)
				}
			}
		}
		out, err := m.try("", "log", "verify")
		if err != nil || !strings.Contains(out, "log OK") {
			t.Errorf("%s: log verify: %v\n%s", m.id, err, out)
		}
		t.Logf("%s: %d acknowledged; alice %d accettazioni, %d avvenute consegne; bob %d buste; log verify: %s",
			m.id, len(acked), acc, cons, buste, strings.TrimSpace(out))
	}
}
