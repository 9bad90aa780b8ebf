package smtpd

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/inflight"
)

// budgetEnv is an env whose server has an in-flight budget of capacity
// bytes with the given wait.
func budgetEnv(t *testing.T, capacity int64, wait time.Duration) (*env, *inflight.Budget) {
	t.Helper()
	b := inflight.New(capacity, wait)
	return newEnv(t, 0, func(s *Server) { s.Budget = b }), b
}

// startMessage opens an inbound session and sends everything of a
// message of about size bytes but the final dot.
func startMessage(t *testing.T, e *env, subject string, size int) *raw {
	t.Helper()
	c := dialRaw(t, e.inbound)
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<someone@remote.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	c.cmd("DATA", "354")
	body := "Subject: " + subject + "\r\n\r\n" + strings.Repeat(strings.Repeat("z", 78)+"\r\n", size/80)
	if _, err := c.c.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	return c
}

// settled waits until nothing of the budget is in use and the spool
// directory is empty, as after every transaction.
func settled(t *testing.T, e *env, b *inflight.Budget) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := os.ReadDir(e.srv.Spool.Path())
		if err != nil {
			t.Fatal(err)
		}
		if b.InUse() == 0 && len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the transaction: %d bytes of the budget in use, %d spool files", b.InUse(), len(entries))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAMessageWaitsForRoomInTheBudgetThenIsStored(t *testing.T) {
	e, b := budgetEnv(t, 64<<10, time.Minute)
	held, err := b.Acquire(context.Background(), 60<<10) // others' messages in flight
	if err != nil {
		t.Fatal(err)
	}
	c := startMessage(t, e, "waits", 10<<10)
	c.send(".")
	reply := make(chan string, 1)
	go func() {
		line, _ := c.r.ReadString('\n')
		reply <- line
	}()
	select {
	case r := <-reply:
		t.Fatalf("answered %q while the budget was full", r)
	case <-time.After(300 * time.Millisecond):
	}
	if s := b.Stats(); s.Waiting != 1 {
		t.Fatalf("budget while the message waits: %+v", s)
	}
	held.Release()
	if r := <-reply; !strings.HasPrefix(r, "250 2.0.0") {
		t.Fatalf("after room was made: %q", r)
	}
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages, want 1", n)
	}
	settled(t, e, b)
}

func TestAFullBudgetGives452AndTheRetryGoesThrough(t *testing.T) {
	e, b := budgetEnv(t, 64<<10, 100*time.Millisecond)
	held, err := b.Acquire(context.Background(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	c := startMessage(t, e, "refused for now", 10<<10)
	c.cmd(".", "452 4.3.1")
	if n := len(e.inbox("bob@example.test")); n != 0 {
		t.Fatalf("bob has %d messages after a 452", n)
	}
	if s := b.Stats(); s.Refused != 1 || s.InUse != 64<<10 || s.Waiting != 0 {
		t.Fatalf("budget after the refusal: %+v", s)
	}
	held.Release()
	// The same session sends it again, as a client does after a 4xx.
	c.cmd("MAIL FROM:<someone@remote.test>", "250")
	c.cmd("RCPT TO:<bob@example.test>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: again\r\n\r\nbody\r\n.")
	c.expect("250")
	if n := len(e.inbox("bob@example.test")); n != 1 {
		t.Fatalf("bob has %d messages after the retry, want 1", n)
	}
	settled(t, e, b)
}

func TestEveryEndOfATransactionReleasesTheBudgetAndTheSpool(t *testing.T) {
	e, b := budgetEnv(t, 1<<20, time.Minute)

	t.Run("stored", func(t *testing.T) {
		c := startMessage(t, e, "stored", 20<<10)
		c.cmd(".", "250")
		settled(t, e, b)
	})
	t.Run("every recipient over quota", func(t *testing.T) {
		c := dialRaw(t, e.inbound)
		c.cmd("EHLO client.test", "250")
		c.cmd("MAIL FROM:<someone@remote.test>", "250")
		c.cmd("RCPT TO:<small@example.test>", "250")
		c.cmd("DATA", "354")
		c.send("Subject: big\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n.")
		c.expect("552")
		settled(t, e, b)
	})
	t.Run("raft unavailable", func(t *testing.T) {
		e.prop.FailWith(errors.New("raft: no leader"))
		defer e.prop.FailWith(nil)
		c := startMessage(t, e, "not stored", 20<<10)
		c.cmd(".", "451")
		settled(t, e, b)
	})
	t.Run("client gone in the middle of data", func(t *testing.T) {
		c := startMessage(t, e, "cut", 200<<10)
		for {
			entries, _ := os.ReadDir(e.srv.Spool.Path())
			if len(entries) > 0 {
				break // the server is receiving it
			}
			time.Sleep(5 * time.Millisecond)
		}
		c.c.Close()
		settled(t, e, b)
	})
	t.Run("client gone while its message waits for the budget", func(t *testing.T) {
		held, err := b.Acquire(context.Background(), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		c := startMessage(t, e, "orphan", 20<<10)
		c.send(".")
		for b.Stats().Waiting == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		c.c.Close()
		held.Release()
		settled(t, e, b)
	})
	t.Run("over max_message_bytes", func(t *testing.T) {
		b := inflight.New(1<<20, time.Minute)
		e := newEnv(t, 16<<10, func(s *Server) { s.Budget = b })
		c := startMessage(t, e, "too big", 40<<10)
		c.cmd(".", "552 5.3.4")
		settled(t, e, b)
	})
}
