package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imapLimits runs a scenario of testdata/imaplimits.py (Python's imaplib)
// against in, as user.
func imapLimits(t *testing.T, in *instance, scenario, user string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, need(t, "python3"), "testdata/imaplimits.py", scenario)
	cmd.Env = append(append(append(os.Environ(), in.env()...), "USER="+user, "PASSWORD="+password(user)), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("scenario %s:\n%s", scenario, out)
	if err != nil {
		t.Fatalf("scenario %s: %v", scenario, err)
	}
	return string(out)
}

// TestAnAttackersSearchesAndMailboxNamesGetProperAnswers: what the issue's
// tester sent (5,000 OR terms, 1,000 nested parentheses, CR, NUL and 1 MB
// mailbox names) gets NO [LIMIT], BAD or NO [CANNOT] at once, never
// SERVERBUG, while BODY finds words in base64 and quoted-printable parts.
func TestAnAttackersSearchesAndMailboxNamesGetProperAnswers(t *testing.T) {
	in := newInstance(t, "mail.limits.test", "")
	in.start()
	user := "alice@limits.test"
	in.provision("limits.test", user)
	imapLimits(t, in, "fill", user, "MESSAGES=200")
	imapLimits(t, in, "limits", user, "MESSAGES=200")
	imapLimits(t, in, "names", user)
	in.mu.Lock()
	logs := in.output.String()
	in.mu.Unlock()
	if strings.Contains(logs, "SERVERBUG") || strings.Contains(logs, "Internal server error") {
		t.Errorf("the server answered or logged a server bug")
	}
}

// TestAStoreFromBeforeTheSearchIndexIsIndexedAfterAnUpgrade: a data
// directory written by a version without the full-text index (schema 8)
// is migrated at start; the messages already there are indexed in the
// background, which the log says, and BODY finds them as before.
func TestAStoreFromBeforeTheSearchIndexIsIndexedAfterAnUpgrade(t *testing.T) {
	in := newInstance(t, "mail.upgrade.test", "")
	in.start()
	user := "bob@upgrade.test"
	in.provision("upgrade.test", user)
	imapLimits(t, in, "fill", user, "MESSAGES=40")
	in.stop(syscall.SIGTERM)
	// What the previous version left: no index, no dedupe table, schema 8 (Python's sqlite3
	// edits the stopped server's database).
	db := filepath.Join(in.dir, "data", "sigillo.db")
	if _, err := os.Stat(db); err != nil {
		matches, _ := filepath.Glob(filepath.Join(in.dir, "data", "*.db*"))
		t.Fatalf("database file: %v (have %v)", err, matches)
	}
	downgrade := `import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for q in ["DROP TABLE delivered", "DROP TABLE blob_fts", "DROP TABLE blob_text", "DROP TABLE blob_text_pending", "DROP INDEX messages_sha", "DELETE FROM meta WHERE key='text_indexed'", "PRAGMA user_version = 8"]:
    c.execute(q)
c.commit()
print(c.execute("SELECT count(*) FROM messages").fetchone()[0], "messages left without an index")
`
	out, err := exec.Command(need(t, "python3"), "-c", downgrade, db).CombinedOutput()
	t.Logf("downgrade: %s", out)
	if err != nil {
		t.Fatal(err)
	}
	in.start()
	imapLimits(t, in, "limits", user, "MESSAGES=40")
	deadline := time.Now().Add(30 * time.Second)
	for {
		in.mu.Lock()
		logs := in.output.String()
		in.mu.Unlock()
		if strings.Contains(logs, "indexed the text of stored messages for search") {
			if !strings.Contains(logs, "contents=40") {
				t.Errorf("the indexer did not say how many contents it indexed")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sign of the indexer after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	imapLimits(t, in, "limits", user, "MESSAGES=40")
}
