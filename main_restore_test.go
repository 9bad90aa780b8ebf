package main

// Restore scenario: a running cluster's database is backed up (snapshot
// while it serves, then the raft log after it), restored into a new data
// directory, and `sigillo serve` on it is a one-node cluster serving the
// same mail, which another node joins with a token.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/smtp"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"sigillo/appliance/apptest"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/restore"
	"sigillo/appliance/manage"
	"sigillo/appliance/tlsmgr/certstore"
)

// submit sends one message per Message-ID from user to itself through
// in's submissions port.
func submit(t *testing.T, in *instance, user string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", in.ports["submissions"]), in.tlsClient(t, in.name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClient(conn, in.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Auth(smtp.PlainAuth("", user, password(user), in.name)); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail(user); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(user); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\n\r\nbody of %s\r\n", user, user, id, id, id)
		if err := w.Close(); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		c.Quit()
	}
}

// inbox is the Message-IDs in user's INBOX on m, read with imaplib.
func inbox(t *testing.T, m *member, user string) []string {
	t.Helper()
	out, err := clusterPython(t, m, "count", "USER="+user, "PASSWORD="+password(user), fmt.Sprintf("IMAPS=%d", m.ports["imaps"]))
	if err != nil {
		t.Fatalf("count on %s: %v\n%s", m.id, err, out)
	}
	var copies map[string]int
	if err := json.Unmarshal([]byte(out), &copies); err != nil {
		t.Fatalf("count on %s: %v: %s", m.id, err, out)
	}
	var ids []string
	for id, n := range copies {
		for range n {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func ids(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("<%s-%d@restore.test>", prefix, i))
	}
	return out
}

func sorted(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	sort.Strings(out)
	return out
}

func TestARestoredBackupServesAsAClusterOthersJoin(t *testing.T) {
	ctx := context.Background()
	const user = "alice@restore.test"

	// The cluster that is backed up: one node, with raft_addr.
	old := startCluster(t, 1)[0]
	old.provision("restore.test", user)
	before, after := ids("before", 5), ids("after", 3)
	submit(t, old.instance, user, before...)

	// The backup: the snapshot taken while it serves (encrypted, with the
	// ACME storage key in secrets.tar), then the log after it shipped
	// once the node is stopped.
	key, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	oldData := filepath.Join(old.dir, "data")
	// The ACME storage key, as the node makes it when ACME is configured
	// or a node joins.
	acmeKey, err := certstore.LoadOrCreateKey(filepath.Join(oldData, "acme-storage.key"))
	if err != nil {
		t.Fatal(err)
	}
	var secrets bytes.Buffer
	tw := tar.NewWriter(&secrets)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(filepath.Join(oldData, "acme-storage.key"), "/"),
		Size: int64(len(acmeKey)), Mode: 0o600})
	tw.Write(acmeKey)
	tw.Close()
	st := apptest.DirStore{Root: t.TempDir()}
	snap := apptest.BackupSnapshot(t, st, filepath.Join(oldData, "sigillo.db"), time.Now(),
		archive.Options{Recipients: []age.Recipient{key.Recipient()}},
		archive.Source{Name: "secrets.tar", Kind: "secrets", Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(secrets.Bytes())), nil
		}})
	submit(t, old.instance, user, after...)
	old.stop(syscall.SIGTERM)
	_, last, _ := apptest.RaftLog(t, filepath.Join(oldData, "raft"))
	logSet := apptest.ShipLog(t, st, filepath.Join(oldData, "raft"), snap.Index+1, last)
	t.Logf("backup: snapshot %s %v, log set %s", snap.ID, snap.Counts, logSet.ID)

	// Restored into the data directory of a new node, r1, which then
	// serves it: the same mail, over IMAP.
	r1 := &member{id: "r1", raftPort: freePort(t)}
	r1.instance = newInstance(t, "mx1.restore.test", fmt.Sprintf("[cluster]\nnode_id = \"r1\"\nraft_addr = \"127.0.0.1:%d\"\n", r1.raftPort))
	rep, err := restore.Restore(ctx, restore.Options{From: st, Identities: []age.Identity{key}, DataDir: filepath.Join(r1.dir, "data"),
		NodeID: "r1", RaftAddr: fmt.Sprintf("127.0.0.1:%d", r1.raftPort), Logger: apptest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored: snapshot %s at %d, %d log entries (%d commands) to %d (%s), counts %v, secrets %v", rep.Snapshot, rep.Index,
		rep.LogEntries, rep.Commands, rep.FinalIndex, rep.LogEnd, rep.Counts, rep.Secrets)
	if rep.FinalIndex != last || rep.Counts["messages"] != 8 {
		t.Fatalf("restored to %d with %v; want %d and 8 messages", rep.FinalIndex, rep.Counts, last)
	}
	r1.start()
	st1 := waitCluster(t, r1, "r1 leads a one-node cluster", func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == 1 && leaders(st) == 1 && allReady(st)
	})
	t.Logf("r1: %+v", st1.Nodes[0])
	if got, want := inbox(t, r1, user), sorted(before, after); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("r1's INBOX: %v, want %v", got, want)
	}
	if k, err := os.ReadFile(filepath.Join(r1.dir, "data", "acme-storage.key")); err != nil || !bytes.Equal(k, acmeKey) {
		t.Fatalf("the ACME storage key was not restored (%v)", err)
	}

	// A write after the restore survives a restart: the new log goes on
	// after the restored index, so nothing of it is taken as applied.
	late := ids("late", 2)
	submit(t, r1.instance, user, late...)
	r1.stop(syscall.SIGTERM)
	r1.start()
	if got, want := inbox(t, r1, user), sorted(before, after, late); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after a restart r1's INBOX: %v, want %v", got, want)
	}

	// A second node joins the restored one with a token, and has it all.
	r2 := &member{id: "r2", raftPort: freePort(t)}
	tokenFile := filepath.Join(t.TempDir(), "join.token")
	token := strings.TrimSpace(r1.cli("", "cluster", "token"))
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r2.instance = newInstance(t, "mx2.restore.test", fmt.Sprintf("[cluster]\nnode_id = \"r2\"\nraft_addr = \"127.0.0.1:%d\"\njoin = [\"127.0.0.1:%d\"]\ntoken_file = %q\n",
		r2.raftPort, r1.raftPort, tokenFile))
	r2.start()
	waitCluster(t, r1, "r1 and r2 ready", func(st manage.ClusterStatus) bool {
		return len(st.Nodes) == 2 && leaders(st) == 1 && allReady(st)
	})
	if got, want := inbox(t, r2, user), sorted(before, after, late); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("r2's INBOX: %v, want %v", got, want)
	}
	if k, err := os.ReadFile(filepath.Join(r2.dir, "data", "acme-storage.key")); err != nil || !bytes.Equal(k, acmeKey) {
		t.Fatalf("r2 did not get the restored ACME storage key with its join (%v)", err)
	}
	t.Logf("r2 joined the restored cluster and serves the %d messages", len(before)+len(after)+len(late))
}
