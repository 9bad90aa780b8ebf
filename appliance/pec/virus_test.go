package pec

import (
	"context"
	"strings"
	"testing"

	"sigillo/appliance/apptest"
)

const eicarName = "Test.EICAR-NDB.UNOFFICIAL"

func TestAVirusAtTheAccessPointIsNotAccepted(t *testing.T) {
	a := newSite(t, "a.test", "Gestore A S.p.A.", apptest.NewClock(t0))
	a.mailbox("alice@a.test", 0)
	a.mailbox("bob@a.test", 0)
	out := a.run(true, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@a.test"}, Virus: eicarName,
		Data: []byte(userMessage("alice@a.test", "bob@a.test", "", "Allegato", "", "virus here\r\n"))})
	if out.Reply == nil || out.Reply.Code != 554 || !strings.Contains(out.Reply.Text, eicarName) {
		t.Fatalf("reply %+v", out.Reply)
	}
	got := a.inbox("alice@a.test")
	if len(got) != 1 || subjectOf(got[0]) != "AVVISO DI NON ACCETTAZIONE PER VIRUS: Allegato" || headerOf(got[0], "X-VerificaSicurezza") != "errore" {
		t.Fatalf("alice: %v", subjects(got))
	}
	r := verified(t, got[0], a)
	if r.Kind != "non-accettazione" || r.Daticert.Errore != "virus" || has(got[0], "virus here") {
		t.Fatalf("avviso %+v", r.Daticert)
	}
	if n := len(a.inbox("bob@a.test")); n != 0 {
		t.Fatalf("bob got %d messages", n)
	}
	vs, err := a.store.VirusStore(context.Background(), 10)
	must(t, err)
	if len(vs) != 1 || vs[0].Virus != eicarName || vs[0].Sender != "alice@a.test" {
		t.Fatalf("virus store %+v", vs)
	}
}

func TestAnInfectedBustaIsReportedBackAndNotDelivered(t *testing.T) {
	a, b := twoSites(t)
	out, busta := sendToB(t, a, "Infetto")
	recv := b.run(false, Transaction{Sender: "alice@a.test", Recipients: []string{"bob@b.test"}, Data: busta, Inbound: true, TLS: true, Virus: eicarName})
	if recv.Reply != nil {
		t.Fatalf("an infected busta from a gestore is taken in charge, not refused: %+v", recv.Reply)
	}
	if n := len(b.inbox("bob@b.test")); n != 0 {
		t.Fatalf("bob got %d messages", n)
	}
	kinds := map[string]int{}
	for _, it := range b.queued() {
		m := b.content(it.SHA256)
		kind := headerOf(m, "X-Ricevuta")
		kinds[kind]++
		if it.Recipients[0] != "posta-certificata@a.test" {
			t.Errorf("%s sent to %v, not to A's mailReceipt", kind, it.Recipients)
		}
		if kind == "rilevazione-virus" {
			r := verified(t, m, b)
			if headerOf(m, "X-Mittente") != "alice@a.test" || r.Daticert.Errore != "virus" || r.Daticert.Consegna != "bob@b.test" ||
				!strings.HasPrefix(subjectOf(m), "PROBLEMA DI SICUREZZA: ") {
				t.Errorf("rilevazione virus: %q %+v", subjectOf(m), r.Daticert)
			}
		}
		a.run(false, Transaction{Sender: it.Sender, Recipients: it.Recipients, Data: m, Inbound: true, TLS: true})
	}
	if kinds["presa-in-carico"] != 1 || kinds["rilevazione-virus"] != 1 || len(kinds) != 2 {
		t.Fatalf("B sent %v", kinds)
	}
	vs, _ := b.store.VirusStore(context.Background(), 10)
	if len(vs) != 1 || vs[0].MsgID != out.ID {
		t.Fatalf("B's virus store %+v", vs)
	}
	// A warns alice: avviso di mancata consegna per virus; tracking ends.
	av := bySubject(a.inbox("alice@a.test"), "AVVISO DI MANCATA CONSEGNA PER VIRUS: Infetto")
	if len(av) != 1 || headerOf(av[0], "X-VerificaSicurezza") != "errore" {
		t.Fatalf("alice: %v", subjects(a.inbox("alice@a.test")))
	}
	if r := verified(t, av[0], a); r.Kind != "errore-consegna" || r.Daticert.Errore != "virus" || r.Identificativo != out.ID {
		t.Fatalf("avviso %+v", r)
	}
	tr, _ := a.store.TrackedMessage(context.Background(), out.ID)
	if len(tr) != 1 || !tr[0].Consegna {
		t.Fatalf("tracking %+v", tr)
	}
}

func TestInfectedOrdinaryMailIsRefused(t *testing.T) {
	_, b := twoSites(t)
	out, err := b.g.Receive(context.Background(), Transaction{Sender: "x@example.org", Recipients: []string{"bob@b.test"}, Inbound: true, Virus: eicarName,
		Data: []byte(userMessage("x@example.org", "bob@b.test", "", "Ciao", "", "virus\r\n"))})
	must(t, err)
	if out.Batch != nil || out.Reply == nil || out.Reply.Code != 554 {
		t.Fatalf("outcome %+v", out)
	}
}
