package storage

import (
	"context"
	"fmt"
	"testing"
)

func TestCountsAreWhatWasAdded(t *testing.T) {
	s, a := newStore(t)
	a.must(&AddDomain{Name: "example.test", At: 1})
	id := a.must(&AddMailbox{Address: "alice@example.test", PasswordHash: "h", At: 1}).(int64)
	a.must(&AddMailbox{Address: "bob@example.test", PasswordHash: "h", At: 1})
	for i := 0; i < 3; i++ {
		a.must(&Deliver{Targets: []Target{{MailboxID: id}}, Data: []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)), InternalDate: 5})
	}
	got, err := s.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "map[domains:1 mailboxes:2 messages:3]" {
		t.Fatalf("counts: %v", got)
	}
}
