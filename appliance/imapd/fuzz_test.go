package imapd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// commandSeeds are command lines (without tag) FuzzCommandLine starts
// from: the searches and names of the tester, and the commonest
// commands.
var commandSeeds = []string{
	"SEARCH OR BODY a OR BODY b BODY c",
	"SEARCH ((((ALL))))",
	"SEARCH NOT NOT NOT ALL",
	"SEARCH CHARSET UTF-8 TEXT caffè",
	"UID SEARCH RETURN (MIN MAX COUNT) UID 1:* SINCE 1-Jan-2024 BODY x",
	"SEARCH OR (FROM a SUBJECT b) (HEADER X-Y z LARGER 10) 1,2:*",
	"CREATE a&AA0-b",
	"CREATE Work/Sub (USE (\\Archive))",
	"RENAME INBOX Old",
	"SELECT INBOX",
	"STATUS INBOX (MESSAGES UNSEEN SIZE)",
	"LIST \"\" \"%\" RETURN (STATUS (MESSAGES))",
	"FETCH 1:* (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (A B)] BINARY.PEEK[1]<0.10>)",
	"STORE 1 +FLAGS.SILENT (\\Seen $Label)",
	"UID COPY 1 Archive",
}

// FuzzCommandLine: whatever line a logged-in client sends, the answer is
// never NO [SERVERBUG] and the server neither panics nor hangs.
func FuzzCommandLine(f *testing.F) {
	for _, s := range commandSeeds {
		f.Add(s)
	}
	e := newEnv(f)
	e.deliver("INBOX", []byte("Subject: hi\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: text/plain\r\n\r\nhello world\r\n--X--\r\n"))
	var c *tls.Conn
	var r *bufio.Reader
	n := 0
	f.Fuzz(func(t *testing.T, line string) {
		line = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, line)
		if len(line) > 8192 {
			line = line[:8192]
		}
		if c == nil {
			var err error
			if c, err = tls.Dial("tcp", e.tls, e.pki.ClientConfig("localhost")); err != nil {
				t.Fatal(err)
			}
			r = bufio.NewReader(c)
			fmt.Fprintf(c, "l LOGIN %q %q\r\ns SELECT INBOX\r\n", e.user, e.pass)
			for {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				l, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				if strings.HasPrefix(l, "s ") {
					break
				}
			}
		}
		n++
		tag := fmt.Sprintf("f%d", n)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "%s %s\r\n", tag, line)
		for {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			l, err := r.ReadString('\n')
			if strings.Contains(l, "SERVERBUG") {
				t.Fatalf("%q: %q", line, l)
			}
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatalf("%q: no answer within 10 s", line)
			}
			if err != nil || strings.HasPrefix(l, "+") || strings.HasPrefix(l, "* BYE") {
				// Closed, or waiting for a literal or DONE: start over.
				c.Close()
				c = nil
				return
			}
			if strings.HasPrefix(l, tag+" ") {
				return
			}
		}
	})
	if c != nil {
		c.Close()
	}
}

// TestWriteCommandCorpus writes the seeds to testdata/fuzz/FuzzCommandLine
// when IMAPD_WRITE_CORPUS=1.
func TestWriteCommandCorpus(t *testing.T) {
	if os.Getenv("IMAPD_WRITE_CORPUS") != "1" {
		t.Skip("set IMAPD_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzCommandLine")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzCommandLine")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range commandSeeds {
		body := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
