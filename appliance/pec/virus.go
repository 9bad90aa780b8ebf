package pec

import (
	"context"
	"fmt"
	"slices"
	"time"

	"sigillo/storage"
	"sigillo/storage/peclog"
)

// The virus paths of the gestore (RFC 6109 §2.2.4, §3.1.3, §3.2.3, §3.2.4;
// PEC.md §3.3, §3.9, §3.10). The scan itself is the caller's (smtpd, with
// package scan): Transaction.Virus carries what it found.

// Where an infected message was found, as the virus store records it.
const (
	foundAtAccess    = "punto di accesso / access point"
	foundAtReception = "punto di ricezione / reception point"
)

// virusNonAccettazione: the access point found a virus in a submission.
// Nothing is sent; the user gets the avviso di non accettazione per virus
// (without the original) and the message goes to the virus store.
func (g *Gestore) virusNonAccettazione(ctx context.Context, p *plan, ds domains, tx Transaction, o *original,
	td textData, dc Daticert, related []string, at time.Time) (*Outcome, error) {
	esteso := "virus: " + tx.Virus
	td.errText = esteso
	dc.Tipo, dc.Errore, dc.ErroreEsteso = "non-accettazione", "virus", esteso
	h := g.receiptHeader(at, tx.Sender, "AVVISO DI NON ACCETTAZIONE PER VIRUS: ", o, "non-accettazione")
	h = append(h, field{name: "X-VerificaSicurezza", value: "errore"})
	msg, err := message{header: h, text: textNonAccettazioneVirus(td), daticert: dc.XML()}.build(g.Signer)
	if err != nil {
		return nil, unavailable("signing the avviso di non accettazione per virus", err)
	}
	if err := g.send(ctx, p, ds, g.Service, []string{tx.Sender}, msg, at, false); err != nil {
		return nil, err
	}
	p.batch.Deliveries = append(p.batch.Deliveries, &storage.Deliver{InternalDate: at.Unix(), Data: tx.Data,
		Quarantine: &storage.Quarantine{Virus: tx.Virus, Sender: tx.Sender, Recipients: tx.Recipients, Context: foundAtAccess, MsgID: dc.ID}})
	p.log(peclog.Entry{Time: at, Event: peclog.EventNonAccettazioneVirus, MsgID: dc.ID, RelatedIDs: related,
		Sender: tx.Sender, Recipients: tx.Recipients, Subject: o.subject, Gestore: g.Provider, Detail: esteso})
	return &Outcome{Batch: &p.batch, Queued: p.queued, ID: dc.ID, Summary: "non-accettazione per virus: " + tx.Virus,
		Reply: &Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message not accepted (PEC): virus found (" + tx.Virus + "); avviso di non accettazione per virus sent"}}, nil
}

// virusRilevazione: the reception point took in charge a busta that
// carries a virus. It is not delivered: it goes to the virus store, and the
// sending gestore's mailReceipt gets one rilevazione virus per recipient.
func (g *Gestore) virusRilevazione(ctx context.Context, p *plan, ds domains, tx Transaction, b *bustaIn,
	mailReceipt, provider string, at time.Time) error {
	esteso := "virus: " + tx.Virus
	for _, r := range tx.Recipients {
		dc := b.dc
		dc.Tipo, dc.Errore, dc.ErroreEsteso, dc.Ricevuta = "rilevazione-virus", "virus", esteso, ""
		dc.Gestore, dc.Time, dc.Consegna, dc.Ricezione = g.Provider, at, r, nil
		td := textData{at: at, subject: b.orig.subject, sender: b.dc.Mittente, recipient: r, id: b.id,
			recipients: b.dc.Destinatari, errText: esteso}
		h := g.noticeHeader(at, mailReceipt, subjectField("PROBLEMA DI SICUREZZA: ", b.orig.subjectRaw, b.orig.subject), b.orig.msgID, "rilevazione-virus")
		h = append(h, field{name: "X-Mittente", value: b.dc.Mittente})
		msg, err := message{header: h, text: textRilevazioneVirus(td), daticert: dc.XML()}.build(g.Signer)
		if err != nil {
			return unavailable("signing the rilevazione virus", err)
		}
		if err := g.send(ctx, p, ds, g.Service, []string{mailReceipt}, msg, at, !isOurs(mailReceipt, g)); err != nil {
			return err
		}
	}
	p.batch.Deliveries = append(p.batch.Deliveries, &storage.Deliver{InternalDate: at.Unix(), Data: tx.Data,
		Quarantine: &storage.Quarantine{Virus: tx.Virus, Sender: b.dc.Mittente, Recipients: tx.Recipients, Context: foundAtReception, MsgID: b.id}})
	p.log(peclog.Entry{Time: at, Event: peclog.EventRilevazioneVirus, MsgID: b.id, RelatedIDs: relatedIDs(b.orig.msgID),
		Sender: b.dc.Mittente, Recipients: tx.Recipients, Subject: b.orig.subject, Gestore: provider, Detail: esteso})
	return nil
}

func isOurs(addr string, g *Gestore) bool { return addr == g.Service }

// virusMancataConsegna: a rilevazione virus came back from the recipient's
// gestore; our user gets the avviso di mancata consegna per virus, built
// from its certification data, and tracking ends for that recipient.
//
// Only a busta we sent to that recipient, and still waiting for its
// consegna, gets it, and the avviso goes to whoever sent it: a gestore
// cannot have us certify to a user of ours the loss of a message the user
// did not send.
func (g *Gestore) virusMancataConsegna(ctx context.Context, p *plan, ds domains, in receiptData, at time.Time) error {
	if in.mittente == "" || in.consegna == "" {
		return nil
	}
	if _, hosted := ds.hosted[domainOf(storage.NormalizeAddress(in.mittente))]; !hosted {
		// Not our user's message: nothing of ours to warn about.
		return nil
	}
	trs, err := g.Store.TrackedMessage(ctx, in.id)
	if err != nil {
		return unavailable("reading the tracking of "+in.id, err)
	}
	i := slices.IndexFunc(trs, func(tr storage.Tracked) bool {
		return storage.NormalizeAddress(tr.Recipient) == storage.NormalizeAddress(in.consegna) && !tr.Consegna
	})
	if i < 0 {
		g.logger().Warn("pec: a rilevazione virus for no busta of ours waiting for its consegna; no avviso", "id", in.id, "recipient", in.consegna)
		return nil
	}
	in.mittente = trs[i].Sender
	dc := Daticert{Tipo: "errore-consegna", Errore: "virus", ErroreEsteso: in.esteso, Mittente: in.mittente,
		Destinatari: in.destinatari, Risposte: in.risposte, Oggetto: in.oggetto, Gestore: g.Provider, Time: at,
		ID: in.id, MsgID: in.msgID, Consegna: in.consegna}
	td := textData{at: at, subject: in.oggetto, sender: in.mittente, recipient: in.consegna, id: in.id,
		recipients: in.destinatari, errText: in.esteso}
	h := g.noticeHeader(at, in.mittente, "AVVISO DI MANCATA CONSEGNA PER VIRUS: "+encodeText(oneLine(in.oggetto)), in.msgID, "errore-consegna")
	h = append(h, field{name: "X-VerificaSicurezza", value: "errore"})
	msg, err := message{header: h, text: textMancataConsegnaVirus(td), daticert: dc.XML()}.build(g.Signer)
	if err != nil {
		return unavailable("signing the avviso di mancata consegna per virus", err)
	}
	if err := g.send(ctx, p, ds, g.Service, []string{in.mittente}, msg, at, false); err != nil {
		return err
	}
	p.batch.Track = append(p.batch.Track, storage.Track{Op: storage.TrackConsegna, MsgID: in.id, Recipient: in.consegna, At: at.Unix()})
	p.log(peclog.Entry{Time: at, Event: peclog.EventMancataConsegnaVirus, MsgID: in.id, RelatedIDs: relatedIDs(in.msgID),
		Sender: in.mittente, Recipients: []string{in.consegna}, Subject: in.oggetto, Gestore: g.Provider, Detail: in.esteso})
	return nil
}

// receiptData is what a received receipt certifies.
type receiptData struct {
	id, msgID, mittente, risposte, oggetto, consegna, esteso string
	destinatari                                              []Destinatario
}

func textNonAccettazioneVirus(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Avviso di non accettazione per virus\n\nErrore nell'accettazione del messaggio per presenza di virus\nIl giorno %s alle ore %s (%s) nel messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a:\n%s\nè stato rilevato un problema di sicurezza: %s\nIl messaggio non è stato accettato.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.errText, d.id)
	en := fmt.Sprintf("Non-acceptance notice due to virus\n\nError in message acceptance due to virus presence\nOn %s at %s (%s) in the message\n\"%s\" originating from \"%s\"\nand addressed to:\n%s\na security problem was detected: %s\nThe message was not accepted.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.errText, d.id)
	return it + separator + en
}

func textRilevazioneVirus(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Avviso di rilevazione virus\n\nIl giorno %s alle ore %s (%s) nel messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nè stato rilevato un problema di sicurezza: %s\nIl messaggio non è stato inoltrato al destinatario.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	en := fmt.Sprintf("Virus detection notice\n\nOn %s at %s (%s) in the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\na security problem was detected: %s\nThe message was not forwarded to the recipient.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	return it + separator + en
}

func textMancataConsegnaVirus(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Avviso di mancata consegna per virus\n\nIl giorno %s alle ore %s (%s) nel messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nè stato rilevato un problema di sicurezza: %s\nIl messaggio non è stato consegnato.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	en := fmt.Sprintf("Delivery error due to virus\n\nOn %s at %s (%s) in the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\na security problem was detected: %s\nThe message was not delivered.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	return it + separator + en
}
