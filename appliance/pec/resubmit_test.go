package pec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

// clientAttempt is one SMTP attempt at submitting msg: the server's own
// Received: field (new every time) in front of what the client sent, and
// the duplicate check's identity of the latter.
func clientAttempt(from, to, msg, queueID string) Transaction {
	sum := sha256.Sum256([]byte(msg))
	return Transaction{Sender: from, Recipients: []string{to},
		Data:   []byte("Received: from client by mx.a.test with ESMTPSA id " + queueID + "\r\n" + msg),
		Dedupe: &storage.Dedupe{MessageID: "<c1@client>", SHA256: hex.EncodeToString(sum[:])}}
}

// A user's client sends a PEC message again because it never saw the 250
// (the reply lost in a leader's failover): the retry is acknowledged, and
// no second accettazione, busta or consegna is made. Two attempts racing
// each other through different nodes: the store takes the first and
// refuses the second whole.
func TestASubmissionSentAgainAfterALost250IsAcceptedOnce(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	msg := userMessage("alice@a.test", "bob@a.test", "", "Diffida", "", "Testo.\r\n")
	counts := func() (int, int, int) {
		alice := a.inbox("alice@a.test")
		return len(bySubject(alice, "ACCETTAZIONE: Diffida")), len(bySubject(alice, "CONSEGNA: Diffida")), len(a.inbox("bob@a.test"))
	}

	first := a.run(true, clientAttempt("alice@a.test", "bob@a.test", msg, "Q1"))
	if first.Batch == nil || first.ID == "" || first.Reply != nil {
		t.Fatalf("first attempt: %+v", first)
	}
	again := a.run(true, clientAttempt("alice@a.test", "bob@a.test", msg, "Q2"))
	if again.Batch != nil || again.Reply != nil {
		t.Fatalf("the retry was not just acknowledged: %+v", again)
	}
	if acc, cons, buste := counts(); acc != 1 || cons != 1 || buste != 1 {
		t.Fatalf("after a retry: %d accettazioni, %d consegne, %d buste; want one each", acc, cons, buste)
	}
	t.Logf("retry: %s", again.Summary)

	// Two attempts of a new message, both checked before either is
	// stored (two nodes, the first one's entry not applied yet).
	msg2 := userMessage("alice@a.test", "bob@a.test", "", "Diffida", "", "Secondo testo.\r\n")
	x, err := a.g.Submit(context.Background(), clientAttempt("alice@a.test", "bob@a.test", msg2, "Q3"))
	must(t, err)
	y, err := a.g.Submit(context.Background(), clientAttempt("alice@a.test", "bob@a.test", msg2, "Q4"))
	must(t, err)
	a.apply(x.Batch)
	if _, err := a.prop.Apply(context.Background(), y.Batch); !storage.IsCode(err, storage.ErrConflict) {
		t.Fatalf("the racing attempt: %v, want ErrConflict", err)
	}
	// The same Message-ID with other content is another message (and so
	// it was above): accepted.
	if acc, cons, buste := counts(); acc != 2 || cons != 2 || buste != 2 {
		t.Fatalf("after the race: %d accettazioni, %d consegne, %d buste; want two each", acc, cons, buste)
	}

	// Without the client's identity (no Message-ID) there is no check.
	plain := clientAttempt("alice@a.test", "bob@a.test", msg, "Q5")
	plain.Dedupe = nil
	if out := a.run(true, plain); out.Batch == nil {
		t.Fatalf("a submission without Dedupe was taken for a retry: %+v", out)
	}
}
