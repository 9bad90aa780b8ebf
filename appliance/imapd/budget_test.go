package imapd

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"sigillo/appliance/inflight"
)

func appendMessage(t *testing.T, e *env, data []byte) error {
	t.Helper()
	c := e.client(nil)
	app := c.Append("INBOX", int64(len(data)), nil)
	if _, err := app.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := app.Wait()
	return err
}

// TestAppendGoesThroughTheInflightBudget: an APPEND waits for room in the
// budget, gets NO [UNAVAILABLE] when none comes, and holds nothing of the
// budget or the spool afterwards.
func TestAppendGoesThroughTheInflightBudget(t *testing.T) {
	b := inflight.New(64<<10, 200*time.Millisecond)
	e := newEnv(t, func(s *Server) { s.Budget = b })
	msg := []byte("Subject: appended\r\n\r\n" + strings.Repeat("line of text\r\n", 1000))

	held, err := b.Acquire(context.Background(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := appendMessage(t, e, msg); code(err) != imap.ResponseCodeUnavailable {
		t.Fatalf("APPEND with the budget full: %v, want NO [UNAVAILABLE]", err)
	}
	if n := len(e.messages("INBOX")); n != 0 {
		t.Fatalf("%d messages stored by a refused APPEND", n)
	}

	// Room made while it waits: it goes through.
	go func() {
		for b.Stats().Waiting == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		held.Release()
	}()
	if err := appendMessage(t, e, msg); err != nil {
		t.Fatalf("APPEND once room was made: %v", err)
	}
	msgs := e.messages("INBOX")
	if len(msgs) != 1 {
		t.Fatalf("%d messages in INBOX, want 1", len(msgs))
	}
	stored, err := e.store.Content(context.Background(), msgs[0].SHA256)
	if err != nil || !bytes.Equal(stored, msg) {
		t.Fatalf("stored %d bytes (%v), want the %d appended", len(stored), err, len(msg))
	}
	if s := b.Stats(); s.InUse != 0 || s.Waits != 2 || s.Refused != 1 {
		t.Fatalf("budget afterwards: %+v", s)
	}
	if entries, err := os.ReadDir(e.srv.Spool.Path()); err != nil || len(entries) != 0 {
		t.Fatalf("spool afterwards: %d files (%v)", len(entries), err)
	}
}
