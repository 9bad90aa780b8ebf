package pec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"sigillo/storage"
	"sigillo/storage/peclog"
)

// Submit is the access point (RFC 6109 §3.1, PEC.md §4.1): a user of a PEC
// domain hands over a message, already authenticated with the reverse-path
// as their own address (smtpd checks that). The formal checks decide
// between the ricevuta di accettazione, with the busta di trasporto to every
// recipient, and the avviso di non accettazione (and a 550 to the client).
//
// A submission with tx.Dedupe that was accepted before from the same sender
// is acknowledged (an Outcome without Batch nor Reply) and nothing else:
// the accepted one is recorded in the same batch as its receipts (a
// storage.TrackReceived under submissionKey, in the table of the bustas
// taken in charge, kept ForgetAfter), so that a retry racing it is refused
// by the store (ErrConflict, a 4xx to the client) and its next attempt
// finds it here.
func (g *Gestore) Submit(ctx context.Context, tx Transaction) (*Outcome, error) {
	at := g.now()
	key := submissionKey(tx.Dedupe)
	if key != "" {
		seen, err := g.Store.AlreadyReceived(ctx, key, tx.Sender)
		if err != nil {
			return nil, unavailable("looking up accepted submissions", err)
		}
		if seen {
			return &Outcome{Summary: "submission already accepted (Message-ID " + tx.Dedupe.MessageID + "): acknowledged again"}, nil
		}
	}
	o := readOriginal(tx.Data)
	dir, _, err := g.directory(ctx)
	if err != nil {
		return nil, err
	}
	ds, err := g.domains(ctx)
	if err != nil {
		return nil, err
	}
	id := newID(at, g.serviceDomain())
	rcpts := make([]Destinatario, 0, len(tx.Recipients))
	for _, r := range tx.Recipients {
		rcpts = append(rcpts, Destinatario{Address: r, Certificato: certified(r, ds, dir)})
	}
	td := textData{at: at, subject: o.subject, sender: tx.Sender, recipients: rcpts, id: id}
	dc := Daticert{Mittente: tx.Sender, Destinatari: rcpts, Risposte: risposte(o, tx.Sender), Oggetto: o.subject,
		Gestore: g.Provider, Time: at, ID: id, MsgID: o.msgID}
	related := []string{}
	if o.msgID != "" {
		related = append(related, o.msgID)
	}
	p := &plan{}

	// The formal checks (RFC 6109 §3.1.1).
	if reason := g.formalCheck(o, tx); reason != "" {
		td.errText = reason
		dc.Tipo, dc.Errore, dc.ErroreEsteso = "non-accettazione", "altro", reason
		msg, err := message{
			header: g.receiptHeader(at, tx.Sender, "AVVISO DI NON ACCETTAZIONE: ", o, "non-accettazione"),
			text:   textNonAccettazione(td), daticert: dc.XML(),
		}.build(g.Signer)
		if err != nil {
			return nil, unavailable("signing the avviso di non accettazione", err)
		}
		if err := g.send(ctx, p, ds, g.Service, []string{tx.Sender}, msg, at, false); err != nil {
			return nil, err
		}
		p.log(peclog.Entry{Time: at, Event: peclog.EventNonAccettazione, MsgID: id, RelatedIDs: related,
			Sender: tx.Sender, Recipients: tx.Recipients, Subject: o.subject, Gestore: g.Provider, Detail: reason})
		return &Outcome{Batch: &p.batch, Queued: p.queued, ID: id, Summary: "non-accettazione: " + reason,
			Reply: &Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message not accepted (PEC): " + reason + "; avviso di non accettazione sent"}}, nil
	}

	// The scanner's verdict (smtpd scans before handing over): a virus is
	// refused with the avviso di non accettazione per virus.
	if tx.Virus != "" {
		return g.virusNonAccettazione(ctx, p, ds, tx, o, td, dc, related, at)
	}

	// The ricevuta di accettazione, to the sender.
	dc.Tipo = "accettazione"
	acc, err := message{
		header: g.receiptHeader(at, tx.Sender, "ACCETTAZIONE: ", o, "accettazione"),
		text:   textAccettazione(td), daticert: dc.XML(),
	}.build(g.Signer)
	if err != nil {
		return nil, unavailable("signing the ricevuta di accettazione", err)
	}
	if err := g.send(ctx, p, ds, g.Service, []string{tx.Sender}, acc, at, false); err != nil {
		return nil, err
	}
	p.log(peclog.Entry{Time: at, Event: peclog.EventAccettazione, MsgID: id, RelatedIDs: related,
		Sender: tx.Sender, Recipients: tx.Recipients, Subject: o.subject, Gestore: g.Provider})
	if key != "" {
		p.batch.Track = append(p.batch.Track, storage.Track{Op: storage.TrackReceived, MsgID: key, Recipient: tx.Sender, At: at.Unix()})
	}

	// The busta di trasporto, the same for every recipient.
	postacert := withMessageID(tx.Data, id, o.msgID)
	dc.Tipo, dc.Ricevuta = "posta-certificata", o.tipo
	busta, err := message{
		header: g.bustaHeader(at, tx.Sender, o, id),
		text:   textBusta(td), daticert: dc.XML(), original: postacert, origName: "postacert.eml",
	}.build(g.Signer)
	if err != nil {
		return nil, unavailable("signing the busta di trasporto", err)
	}
	p.log(peclog.Entry{Time: at, Event: peclog.EventBustaTrasporto, MsgID: id, RelatedIDs: related,
		Sender: tx.Sender, Recipients: tx.Recipients, Subject: o.subject, Gestore: g.Provider,
		Detail: "ricevuta " + o.tipo})

	b := &bustaIn{data: busta, sender: tx.Sender, id: id, orig: o, original: postacert, dc: dc}
	var remotePEC, remoteOther []string
	detail := trackDetail(rcpts, dc.Risposte)
	for _, r := range rcpts {
		norm := storage.NormalizeAddress(r.Address)
		pecDomain, hosted := ds.hosted[domainOf(norm)]
		switch {
		case hosted && pecDomain:
			// Our own delivery point: no presa in carico between us and us.
			if err := g.deliveryPoint(ctx, p, ds, b, r.Address, at); err != nil {
				return nil, err
			}
		case hosted:
			// An ordinary mailbox hosted here gets the busta like any
			// ordinary recipient, and no receipt comes back.
			if err := g.send(ctx, p, ds, tx.Sender, []string{r.Address}, busta, at, false); err != nil {
				return nil, err
			}
		case r.Certificato:
			remotePEC = append(remotePEC, r.Address)
			p.batch.Track = append(p.batch.Track, storage.Track{Op: storage.TrackSent, MsgID: id, Recipient: r.Address,
				At: at.Unix(), Sender: tx.Sender, Subject: o.subject, OrigMsgID: o.msgID, Detail: detail})
		default:
			remoteOther = append(remoteOther, r.Address)
		}
	}
	if len(remotePEC) > 0 {
		if err := g.send(ctx, p, ds, tx.Sender, remotePEC, busta, at, true); err != nil {
			return nil, err
		}
	}
	if len(remoteOther) > 0 {
		if err := g.send(ctx, p, ds, tx.Sender, remoteOther, busta, at, false); err != nil {
			return nil, err
		}
	}
	return &Outcome{Batch: &p.batch, Queued: p.queued, ID: id,
		Summary: fmt.Sprintf("accettazione: %d recipients, %d to other gestori, %d ordinary remote", len(rcpts), len(remotePEC), len(remoteOther))}, nil
}

// submissionKey is what records an accepted submission among the bustas
// taken in charge (storage.TrackReceived, with the sender as recipient):
// the SHA-256 of the client's Message-ID and content hash, behind a prefix
// that no identificativo (always local@domain) has. "" when d is nil or
// has no Message-ID.
func submissionKey(d *storage.Dedupe) string {
	if d == nil || d.SHA256 == "" {
		return ""
	}
	id := storage.NormalizeMessageID(d.MessageID)
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id + "\x00" + d.SHA256))
	return "submission:" + hex.EncodeToString(sum[:])
}

// formalCheck returns why a submission fails the checks of RFC 6109 §3.1.1,
// or "" when it passes them.
func (g *Gestore) formalCheck(o *original, tx Transaction) string {
	switch {
	case o.fromErr != nil:
		return fmt.Sprintf("campo From non valido / invalid From field (%v)", o.fromErr)
	case len(o.from) != 1:
		return "il campo From deve contenere un solo indirizzo / the From field must hold exactly one address"
	case !strings.EqualFold(o.from[0].Address, tx.Sender):
		return fmt.Sprintf("il mittente %s non coincide con il campo From %s / the sender does not match the From field", tx.Sender, o.from[0].Address)
	case o.toErr != nil || len(o.to) == 0:
		return "campo To assente o non valido / missing or invalid To field"
	case o.ccErr != nil:
		return fmt.Sprintf("campo Cc non valido / invalid Cc field (%v)", o.ccErr)
	case o.bcc != "":
		return "il campo Bcc non deve contenere indirizzi / the Bcc field must be empty"
	}
	listed := map[string]bool{}
	for _, a := range append(append([]string{}, addrList(o.to)...), addrList(o.cc)...) {
		listed[storage.NormalizeAddress(a)] = true
	}
	for _, r := range tx.Recipients {
		if !listed[storage.NormalizeAddress(r)] {
			return fmt.Sprintf("il destinatario %s non è nei campi To o Cc / recipient %s is not in the To or Cc fields", r, r)
		}
	}
	if g.MaxBytes > 0 && int64(len(tx.Data))*int64(len(tx.Recipients)) > g.MaxBytes {
		return fmt.Sprintf("dimensione per numero di destinatari (%d × %d byte) oltre il limite di %d byte / size times recipients over the limit",
			len(tx.Recipients), len(tx.Data), g.MaxBytes)
	}
	return ""
}

func risposte(o *original, sender string) string {
	if o.replyTo != "" {
		return o.replyTo
	}
	return sender
}

// receiptHeader is the header of a receipt or notice to one user.
func (g *Gestore) receiptHeader(at time.Time, to, prefix string, o *original, ricevuta string) []field {
	return g.noticeHeader(at, to, subjectField(prefix, o.subjectRaw, o.subject), o.msgID, ricevuta)
}

func (g *Gestore) noticeHeader(at time.Time, to, subject, msgID, ricevuta string) []field {
	h := []field{
		{name: "Date", value: rfc5322Date(at)},
		{name: "From", value: g.Service},
		{name: "To", value: to},
		{name: "Subject", value: subject},
		{name: "Message-ID", value: "<" + newID(at, g.serviceDomain()) + ">"},
	}
	if msgID != "" {
		h = append(h, field{name: "X-Riferimento-Message-ID", value: msgID})
	}
	return append(h, field{name: "X-Ricevuta", value: ricevuta})
}

// bustaHeader is the header of a busta di trasporto (RFC 6109 §3.1.5):
// Received:, To:, Cc:, Reply-To: inherited, the rest set by the gestore.
// A Return-Path: in a submission is not inherited: only the final delivery
// writes one (RFC 5321 §4.4), and the user's would contradict the
// reverse-path the busta travels with.
func (g *Gestore) bustaHeader(at time.Time, sender string, o *original, id string) []field {
	var h []field
	for _, f := range o.fields {
		switch strings.ToLower(f.name) {
		case "received", "to", "cc", "reply-to":
			h = append(h, field{name: f.name, raw: f.raw})
		}
	}
	if o.replyTo == "" {
		h = append(h, field{name: "Reply-To", value: sender})
	}
	h = append(h,
		field{name: "Date", value: rfc5322Date(at)},
		field{name: "Subject", value: subjectField("POSTA CERTIFICATA: ", o.subjectRaw, o.subject)},
		field{name: "From", value: quoteDisplay("Per conto di: "+sender) + " <" + g.Service + ">"},
		field{name: "Message-ID", value: "<" + id + ">"},
	)
	if o.msgID != "" {
		h = append(h, field{name: "X-Riferimento-Message-ID", value: o.msgID})
	}
	return append(h, field{name: "X-TipoRicevuta", value: o.tipo}, field{name: "X-Trasporto", value: "posta-certificata"})
}
