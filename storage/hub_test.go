package storage

import (
	"testing"
)

func TestTheQueueIsToldOfCommittedItemsOnly(t *testing.T) {
	_, a := newStore(t)
	s := a.s
	queue, stop := s.WatchQueue()
	defer stop()
	told := func() bool {
		select {
		case <-queue:
			return true
		default:
			return false
		}
	}
	a.must(&AddDomain{Name: "example.test"})
	id := a.must(&AddMailbox{Address: "a@example.test", PasswordHash: "h"}).(int64)
	a.must(&Deliver{Targets: []Target{{MailboxID: id}}, Data: []byte("local only")})
	if told() {
		t.Fatal("a local delivery woke the queue")
	}
	a.must(&Deliver{Targets: []Target{{MailboxID: id}}, Outbound: &Outbound{ID: "Q1", Sender: "a@example.test", Recipients: []string{"x@far.test"}}, Data: []byte("out")})
	if !told() {
		t.Fatal("a committed outbound item did not wake the queue")
	}
	// Refused (the same id again): nothing was queued, nobody is woken.
	if _, err := a.do(&Deliver{Outbound: &Outbound{ID: "Q1", Sender: "a@example.test", Recipients: []string{"x@far.test"}}, Data: []byte("again")}); err == nil {
		t.Fatal("a second Q1 was accepted")
	}
	if told() {
		t.Fatal("a refused command woke the queue")
	}
	// A bounce that goes out (its sender is elsewhere) is a new item too.
	a.must(&QueueRetry{ID: "Q1", Recipients: []string{"x@far.test"}, NextAttempt: 99,
		Bounce: &Deliver{Outbound: &Outbound{ID: "B1", Recipients: []string{"sender@far.test"}}, Data: []byte("DSN")}})
	if !told() {
		t.Fatal("a queued bounce did not wake the queue")
	}
	// The mailbox's own watchers are not told of the queue.
	mb, stopMb := s.Watch(id)
	defer stopMb()
	a.must(&Deliver{Outbound: &Outbound{ID: "Q2", Sender: "a@example.test", Recipients: []string{"y@far.test"}}, Data: []byte("out 2")})
	select {
	case c := <-mb:
		t.Fatalf("mailbox watcher got %+v for a queue-only command", c)
	default:
	}
	if !told() {
		t.Fatal("Q2 did not wake the queue")
	}
}
