package pec

import (
	"context"
	"time"

	"sigillo/appliance/pecbreve"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// bustaIn is a busta di trasporto on its way into a mailbox of ours.
type bustaIn struct {
	data     []byte    // the busta as it is stored (without Return-Path:)
	sender   string    // reverse-path: where receipts go
	id       string    // PEC identificativo
	orig     *original // the original's header (postacert.eml), with msgID the client's
	original []byte    // postacert.eml
	dc       Daticert  // the busta's certification data
}

// deliveryPoint stores a busta in the mailbox of rcpt, unmodified, and
// emits the ricevuta di avvenuta consegna (completa to To: recipients,
// breve when asked, sintetica to Cc: recipients or when asked), or the
// avviso di mancata consegna when the mailbox does not exist or is full
// (RFC 6109 §3.3). Receipts go to the busta's reverse-path.
func (g *Gestore) deliveryPoint(ctx context.Context, p *plan, ds domains, b *bustaIn, rcpt string, at time.Time) error {
	mb, err := g.Store.MailboxByAddress(ctx, rcpt)
	var errore, esteso string
	switch {
	case storage.IsCode(err, storage.ErrNotFound):
		errore, esteso = "no-dest", "5.1.1 - "+g.Provider+" - indirizzo non valido / unknown recipient"
	case err != nil:
		return unavailable("looking up "+rcpt, err)
	case mb.QuotaBytes > 0 && mb.UsedBytes+int64(len(b.data))+int64(len(b.sender))+20 > mb.QuotaBytes:
		errore, esteso = "altro", "5.2.2 - "+g.Provider+" - casella piena / mailbox full"
	}
	td := textData{at: at, subject: b.orig.subject, sender: b.dc.Mittente, recipient: rcpt, id: b.id,
		recipients: b.dc.Destinatari, errText: esteso}
	dc := b.dc
	dc.Gestore, dc.Time, dc.Consegna, dc.Ricezione = g.Provider, at, rcpt, nil
	toPEC := elsewhere(ds, b.sender)
	related := relatedIDs(b.orig.msgID)

	if errore != "" {
		dc.Tipo, dc.Errore, dc.ErroreEsteso, dc.Ricevuta = "errore-consegna", errore, esteso, ""
		msg, err := message{
			header: g.receiptHeader(at, b.sender, "AVVISO DI MANCATA CONSEGNA: ", b.orig, "errore-consegna"),
			text:   textMancataConsegna(td), daticert: dc.XML(),
		}.build(g.Signer)
		if err != nil {
			return unavailable("signing the avviso di mancata consegna", err)
		}
		if err := g.send(ctx, p, ds, g.Service, []string{b.sender}, msg, at, toPEC); err != nil {
			return err
		}
		p.log(peclog.Entry{Time: at, Event: peclog.EventMancataConsegna, MsgID: b.id, RelatedIDs: related,
			Sender: b.dc.Mittente, Recipients: []string{rcpt}, Subject: b.orig.subject, Gestore: g.Provider, Detail: errore + ": " + esteso})
		return nil
	}

	local := append([]byte("Return-Path: <"+b.sender+">\r\n"), b.data...)
	p.batch.Deliveries = append(p.batch.Deliveries, &storage.Deliver{
		Targets: []storage.Target{{MailboxID: mb.ID}}, InternalDate: at.Unix(), Data: local})

	tipo := b.dc.Ricevuta
	if tipo == "" {
		tipo = "completa"
	}
	if tipo != "sintetica" && b.orig.inCc(rcpt) {
		tipo = "sintetica"
	}
	var attached []byte
	switch tipo {
	case "completa":
		attached = b.original
	case "breve":
		attached = pecbreve.Transform(b.original)
	}
	td.tipo = tipo
	dc.Tipo, dc.Errore, dc.ErroreEsteso, dc.Ricevuta = "avvenuta-consegna", "", "", tipo
	msg, err := message{
		header: g.receiptHeader(at, b.sender, "CONSEGNA: ", b.orig, "avvenuta-consegna"),
		text:   textConsegna(td), daticert: dc.XML(), original: attached, origName: "postacert.eml",
	}.build(g.Signer)
	if err != nil {
		return unavailable("signing the ricevuta di avvenuta consegna", err)
	}
	if err := g.send(ctx, p, ds, g.Service, []string{b.sender}, msg, at, toPEC); err != nil {
		return err
	}
	p.log(peclog.Entry{Time: at, Event: peclog.EventConsegna, MsgID: b.id, RelatedIDs: related,
		Sender: b.dc.Mittente, Recipients: []string{rcpt}, Subject: b.orig.subject, Gestore: g.Provider, Detail: "ricevuta " + tipo})
	return nil
}

// elsewhere reports whether addr is not hosted here. The sender of a busta
// is always a PEC mailbox (ours, or of the gestore whose signature the
// reception point verified), so receipts for one elsewhere travel between
// gestori, over TLS only.
func elsewhere(ds domains, addr string) bool {
	_, hosted := ds.hosted[domainOf(storage.NormalizeAddress(addr))]
	return !hosted
}

func relatedIDs(msgID string) []string {
	if msgID == "" {
		return nil
	}
	return []string{msgID}
}
