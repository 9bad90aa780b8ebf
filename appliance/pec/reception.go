package pec

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"sigillo/appliance/pecdir"
	"sigillo/appliance/pecverify"
	"sigillo/appliance/signer"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// Receive is the reception point (RFC 6109 §2.2.2, PEC.md §4.2) for
// recipients in PEC domains of ours: mail from another server, or from a
// user of an ordinary domain. A busta di trasporto whose signature exists,
// comes from a provider of the directory that manages the From domain, and
// verifies with a chain valid at signing time, is taken in charge (presa in
// carico to the sending gestore's mailReceipt, one for the transaction) and
// passed to the delivery point; a receipt so verified is delivered as it
// is; anything else is wrapped in a busta di anomalia. Signed PEC traffic
// from another gestore must come over TLS.
func (g *Gestore) Receive(ctx context.Context, tx Transaction) (*Outcome, error) {
	at := g.now()
	dir, roots, err := g.directory(ctx)
	if err != nil {
		return nil, err
	}
	ds, err := g.domains(ctx)
	if err != nil {
		return nil, err
	}
	o := readOriginal(tx.Data)
	p := &plan{}

	v := signer.VerifyMIME(tx.Data, roots, at)
	reason := ""
	var provider string
	var mailReceipt string
	switch {
	case !v.Signed:
		reason = "il messaggio non è firmato da un gestore PEC / the message is not signed by a PEC provider"
	case !v.Valid && signer.VerifyMIME(tx.Data, nil, at).Valid:
		// The signature holds, but its chain leads to no trusted gestore.
		reason = fmt.Sprintf("la firma digitale del messaggio non risulta attendibile / the signature is not trusted (%v)", v.Err)
	case !v.Valid:
		reason = fmt.Sprintf("la firma digitale del messaggio non risulta valida / the message's signature is not valid (%v)", v.Err)
	case len(o.from) != 1:
		reason = "campo From non valido / invalid From field"
	default:
		if g.ours(v.Signer) {
			provider, mailReceipt = g.Provider, g.Service
			break
		}
		prov, err := dir.Match(v.Signer, o.from[0].Address)
		if err != nil {
			reason = fmt.Sprintf("la firma digitale del messaggio non risulta attendibile / the signature is not trusted (%v)", err)
			break
		}
		provider, mailReceipt = prov.Name, prov.MailReceipt
	}
	if reason == "" && tx.Inbound && !tx.TLS {
		return &Outcome{Summary: "PEC message from " + provider + " without TLS refused",
			Reply: &Reply{Code: 530, Enhanced: [3]int{5, 7, 0}, Text: "Must issue a STARTTLS command first: PEC traffic between gestori travels over TLS"}}, nil
	}
	if reason == "" {
		trasporto := strings.ToLower(headerValue(o, "X-Trasporto"))
		ricevuta := strings.ToLower(headerValue(o, "X-Ricevuta"))
		switch {
		case trasporto == "posta-certificata":
			out, why, err := g.takeInCharge(ctx, p, ds, tx, o, v.Content, provider, mailReceipt, at)
			if err != nil || why == "" {
				return out, err
			}
			reason = why
		case ricevuta != "":
			out, why, err := g.receipt(ctx, p, ds, tx, v, dir, ricevuta, provider, at)
			if err != nil || why == "" {
				return out, err
			}
			reason = why
		default:
			reason = "il messaggio firmato non è una busta né una ricevuta PEC / the signed message is neither a PEC envelope nor a receipt"
		}
	}
	if tx.Virus != "" {
		// Infected mail that is not a busta from a gestore is refused,
		// as for any other domain.
		return &Outcome{Summary: "virus in a message that is not a busta: " + tx.Virus,
			Reply: &Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message refused: virus found (" + tx.Virus + ")"}}, nil
	}
	return g.anomalia(ctx, p, ds, dir, tx, o, reason, at)
}

// ours reports whether cert is this gestore's own certificate.
func (g *Gestore) ours(cert *x509.Certificate) bool {
	return cert != nil && len(g.Chain) > 0 && cert.Equal(g.Chain[0])
}

func headerValue(o *original, name string) string {
	for _, f := range o.fields {
		if strings.EqualFold(f.name, name) {
			return f.value()
		}
	}
	return ""
}

// takeInCharge handles a verified busta di trasporto. It returns a non-empty
// reason when the busta is not formally correct (a busta di anomalia then).
func (g *Gestore) takeInCharge(ctx context.Context, p *plan, ds domains, tx Transaction, o *original, signed []byte,
	provider, mailReceipt string, at time.Time) (*Outcome, string, error) {
	dcRaw, postacert := signedParts(signed)
	if dcRaw == nil || postacert == nil {
		return nil, "busta di trasporto senza daticert.xml o postacert.eml / envelope without daticert.xml or postacert.eml", nil
	}
	in, err := pecverify.ParseDaticert(dcRaw)
	if err != nil || in.Tipo != "posta-certificata" || in.Identificativo == "" {
		return nil, fmt.Sprintf("daticert.xml della busta non corretto / malformed envelope daticert.xml (%v)", err), nil
	}
	if msgid := strings.Trim(headerValue(o, "Message-ID"), "<> "); !strings.EqualFold(msgid, in.Identificativo) {
		return nil, "il Message-ID della busta non coincide con l'identificativo / the envelope's Message-ID is not its identificativo", nil
	}
	// The routing data of a busta are those of the original (RFC 6109
	// §3.1.5): the reverse-path is the certified sender, where the
	// receipts go, and each forward-path one of its certified recipients
	// (PEC.md §7: every ricezione and consegna is a recipient of the
	// busta). Otherwise a busta someone got hold of could be replayed to
	// have us send signed receipts, with its content, to anyone.
	if _, _, ok := storage.SplitAddress(in.Mittente); !ok {
		return nil, "daticert.xml della busta senza mittente / envelope daticert.xml without a sender", nil
	}
	if tx.Sender != "" && storage.NormalizeAddress(tx.Sender) != storage.NormalizeAddress(in.Mittente) {
		return nil, fmt.Sprintf("il mittente SMTP %s non è quello della busta, %s / the reverse-path is not the envelope's sender", tx.Sender, in.Mittente), nil
	}
	listed := map[string]bool{}
	for _, d := range in.Destinatari {
		listed[storage.NormalizeAddress(d.Address)] = true
	}
	for _, r := range tx.Recipients {
		if !listed[storage.NormalizeAddress(r)] {
			return nil, fmt.Sprintf("il destinatario %s non è tra quelli della busta / %s is not among the envelope's recipients", r, r), nil
		}
	}
	// A busta sent again (the sending gestore did not see our 250) is
	// acknowledged, not delivered nor receipted a second time.
	var fresh []string
	for _, r := range tx.Recipients {
		seen, err := g.Store.AlreadyReceived(ctx, in.Identificativo, r)
		if err != nil {
			return nil, "", unavailable("looking up received bustas", err)
		}
		if !seen {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return &Outcome{ID: in.Identificativo, Summary: "busta already taken in charge for every recipient: acknowledged again"}, "", nil
	}
	tx.Recipients = fresh
	for _, r := range fresh {
		p.batch.Track = append(p.batch.Track, storage.Track{Op: storage.TrackReceived, MsgID: in.Identificativo, Recipient: r, At: at.Unix()})
	}
	orig := readOriginal(postacert)
	orig.msgID = in.MsgID
	if t := strings.ToLower(in.Ricevuta); t == "breve" || t == "sintetica" || t == "completa" {
		orig.tipo = t
	}
	sender := tx.Sender
	if sender == "" {
		sender = in.Mittente
	}
	dc := Daticert{Mittente: in.Mittente, Risposte: in.Risposte, Oggetto: in.Oggetto, ID: in.Identificativo,
		MsgID: in.MsgID, Ricevuta: orig.tipo}
	for _, d := range in.Destinatari {
		dc.Destinatari = append(dc.Destinatari, Destinatario{Address: d.Address, Certificato: d.Tipo != "esterno"})
	}
	related := relatedIDs(in.MsgID)

	// The presa in carico, one for this transaction, listing its recipients.
	if !strings.EqualFold(mailReceipt, g.Service) {
		pc := dc
		pc.Tipo, pc.Gestore, pc.Time, pc.Ricevuta, pc.Ricezione = "presa-in-carico", g.Provider, at, "", tx.Recipients
		td := textData{at: at, subject: orig.subject, sender: in.Mittente, recipients: dc.Destinatari, id: in.Identificativo}
		msg, err := message{
			header: g.receiptHeader(at, mailReceipt, "PRESA IN CARICO: ", orig, "presa-in-carico"),
			text:   textPresaInCarico(td), daticert: pc.XML(),
		}.build(g.Signer)
		if err != nil {
			return nil, "", unavailable("signing the presa in carico", err)
		}
		if err := g.send(ctx, p, ds, g.Service, []string{mailReceipt}, msg, at, true); err != nil {
			return nil, "", err
		}
		p.log(peclog.Entry{Time: at, Event: peclog.EventPresaInCarico, MsgID: in.Identificativo, RelatedIDs: related,
			Sender: in.Mittente, Recipients: tx.Recipients, Subject: orig.subject, Gestore: provider, Detail: "emessa / issued"})
	}
	b := &bustaIn{data: tx.Data, sender: sender, id: in.Identificativo, orig: orig, original: postacert, dc: dc}
	if tx.Virus != "" {
		// Taken in charge, but not delivered: rilevazione virus.
		if err := g.virusRilevazione(ctx, p, ds, tx, b, mailReceipt, provider, at); err != nil {
			return nil, "", err
		}
		return &Outcome{Batch: &p.batch, Queued: p.queued, ID: in.Identificativo,
			Summary: fmt.Sprintf("busta from %s carries a virus (%s): rilevazione virus for %d recipients", provider, tx.Virus, len(tx.Recipients))}, "", nil
	}
	for _, r := range tx.Recipients {
		if err := g.deliveryPoint(ctx, p, ds, b, r, at); err != nil {
			return nil, "", err
		}
	}
	return &Outcome{Batch: &p.batch, Queued: p.queued, ID: in.Identificativo,
		Summary: fmt.Sprintf("busta from %s taken in charge for %d recipients", provider, len(tx.Recipients))}, "", nil
}

// receipt delivers a verified receipt as it is, and records what it says
// about a busta we sent. Only the receipts that travel between gestori are
// taken; the others (an accettazione, a busta labelled as a receipt...) are
// not correct PEC messages here and get a busta di anomalia. A receipt
// changes the tracking of a recipient, or has us warn our user, only when
// it is signed by the gestore of that recipient's domain: another gestore
// cannot silence the 12 h and 24 h notices of a busta it did not receive,
// nor have us certify that it was not delivered.
func (g *Gestore) receipt(ctx context.Context, p *plan, ds domains, tx Transaction, v signer.Verification, dir *pecdir.Directory,
	kind, provider string, at time.Time) (*Outcome, string, error) {
	switch kind {
	case "presa-in-carico", "avvenuta-consegna", "errore-consegna", "rilevazione-virus":
	default:
		return nil, fmt.Sprintf("X-Ricevuta %q non è una ricevuta tra gestori / not a receipt between gestori", kind), nil
	}
	if kind == "presa-in-carico" || kind == "rilevazione-virus" {
		// Server-to-server notices never reach users (RFC 6109 §2.1.1.1.1):
		// only our service mailbox takes them.
		for _, r := range tx.Recipients {
			if !strings.EqualFold(r, g.Service) {
				return nil, fmt.Sprintf("%s indirizzata a %s, non alla casella di servizio / %s addressed to a user, not to the service mailbox", kind, r, kind), nil
			}
		}
	}
	if tx.Virus != "" {
		return &Outcome{Summary: "virus in a receipt: " + tx.Virus,
			Reply: &Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message refused: virus found (" + tx.Virus + ")"}}, "", nil
	}
	dcRaw, _ := signedParts(v.Content)
	if dcRaw == nil {
		return nil, "ricevuta senza daticert.xml / receipt without daticert.xml", nil
	}
	in, err := pecverify.ParseDaticert(dcRaw)
	if err != nil || in.Tipo != kind || in.Identificativo == "" {
		return nil, fmt.Sprintf("daticert.xml della ricevuta non corretto / malformed receipt daticert.xml (%v)", err), nil
	}
	// concerns: the receipt's signer is the gestore of rcpt.
	concerns := func(rcpt string) bool {
		if _, _, ok := storage.SplitAddress(rcpt); !ok {
			return false
		}
		if g.ours(v.Signer) {
			_, hosted := ds.hosted[domainOf(storage.NormalizeAddress(rcpt))]
			return hosted
		}
		_, err := dir.Match(v.Signer, rcpt)
		return err == nil
	}
	track := func(op storage.TrackOp, rcpt string) {
		if !concerns(rcpt) {
			g.logger().Warn("pec: a receipt about a recipient its gestore does not manage; tracking unchanged",
				"kind", kind, "id", in.Identificativo, "recipient", rcpt, "gestore", provider)
			return
		}
		p.batch.Track = append(p.batch.Track, storage.Track{Op: op, MsgID: in.Identificativo, Recipient: rcpt, At: at.Unix()})
	}
	var event peclog.Event
	switch kind {
	case "presa-in-carico":
		event = peclog.EventPresaInCarico
		for _, r := range in.Ricezione {
			track(storage.TrackPresa, r)
		}
	case "avvenuta-consegna":
		event = peclog.EventConsegna
		track(storage.TrackConsegna, in.Consegna)
	case "errore-consegna":
		event = peclog.EventMancataConsegna
		track(storage.TrackConsegna, in.Consegna)
	case "rilevazione-virus":
		event = peclog.EventRilevazioneVirus
		rd := receiptData{id: in.Identificativo, msgID: in.MsgID, mittente: in.Mittente, risposte: in.Risposte,
			oggetto: in.Oggetto, consegna: in.Consegna, esteso: in.ErroreEsteso}
		for _, d := range in.Destinatari {
			rd.destinatari = append(rd.destinatari, Destinatario{Address: d.Address, Certificato: d.Tipo != "esterno"})
		}
		if rd.esteso == "" {
			rd.esteso = "virus"
		}
		if concerns(rd.consegna) {
			if err := g.virusMancataConsegna(ctx, p, ds, rd, at); err != nil {
				return nil, "", err
			}
		} else {
			g.logger().Warn("pec: a rilevazione virus about a recipient its gestore does not manage; no avviso",
				"id", in.Identificativo, "recipient", rd.consegna, "gestore", provider)
		}
	}
	var delivered []string
	for _, r := range tx.Recipients {
		if _, err := g.Store.MailboxByAddress(ctx, r); storage.IsCode(err, storage.ErrNotFound) {
			g.logger().Warn("pec: receipt for an unknown mailbox; dropped", "to", r, "kind", kind, "id", in.Identificativo)
			continue
		} else if err != nil {
			return nil, "", unavailable("looking up "+r, err)
		}
		delivered = append(delivered, r)
	}
	if len(delivered) == 0 {
		return &Outcome{Summary: "receipt for unknown mailboxes",
			Reply: &Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "Recipient address rejected: User unknown"}}, "", nil
	}
	if err := g.send(ctx, p, ds, tx.Sender, delivered, tx.Data, at, false); err != nil {
		return nil, "", err
	}
	rcpts := in.Ricezione
	if in.Consegna != "" {
		rcpts = []string{in.Consegna}
	}
	p.log(peclog.Entry{Time: at, Event: event, MsgID: in.Identificativo, RelatedIDs: relatedIDs(in.MsgID),
		Sender: in.Mittente, Recipients: rcpts, Subject: in.Oggetto, Gestore: provider, Detail: "ricevuta da / received from " + provider})
	return &Outcome{Batch: &p.batch, Queued: p.queued, ID: in.Identificativo,
		Summary: fmt.Sprintf("%s from %s delivered", kind, provider)}, "", nil
}

// anomalia wraps a message that is not a correct, trusted PEC message in a
// busta di anomalia (RFC 6109 §3.2.2): signed by us, the original as the
// only other part, no daticert, routing data unchanged.
func (g *Gestore) anomalia(ctx context.Context, p *plan, ds domains, dir *pecdir.Directory, tx Transaction, o *original, reason string, at time.Time) (*Outcome, error) {
	var delivered []string
	for _, r := range tx.Recipients {
		if _, err := g.Store.MailboxByAddress(ctx, r); storage.IsCode(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, unavailable("looking up "+r, err)
		}
		delivered = append(delivered, r)
	}
	if len(delivered) == 0 {
		return &Outcome{Summary: "mail for unknown mailboxes",
			Reply: &Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "Recipient address rejected: User unknown"}}, nil
	}
	sender := tx.Sender
	if len(o.from) == 1 {
		sender = o.from[0].Address
	}
	var rcpts []Destinatario
	for _, r := range tx.Recipients {
		rcpts = append(rcpts, Destinatario{Address: r, Certificato: certified(r, ds, dir)})
	}
	var h []field
	msgID := false
	for _, f := range o.fields {
		switch strings.ToLower(f.name) {
		case "received", "to", "cc", "reply-to":
			h = append(h, field{name: f.name, raw: f.raw})
		case "message-id":
			// The original's, if it has a usable one (RFC 6109 §3.2.2).
			if !msgID && o.msgID != "" {
				h = append(h, field{name: f.name, raw: f.raw})
				msgID = true
			}
		}
	}
	if !msgID {
		// Nothing to keep, but a message needs one.
		h = append(h, field{name: "Message-ID", value: "<" + newID(at, g.serviceDomain()) + ">"})
	}
	if o.replyTo == "" && sender != "" {
		h = append(h, field{name: "Reply-To", value: sender})
	}
	h = append(h,
		field{name: "Date", value: rfc5322Date(at)},
		field{name: "Subject", value: subjectField("ANOMALIA MESSAGGIO: ", o.subjectRaw, o.subject)},
		field{name: "From", value: quoteDisplay("Per conto di: "+sender) + " <" + g.Service + ">"},
		field{name: "X-Trasporto", value: "errore"},
	)
	td := textData{at: at, subject: o.subject, sender: sender, recipients: rcpts, errText: reason}
	msg, err := message{header: h, text: textAnomalia(td), original: tx.Data, origName: "postacert.eml"}.build(g.Signer)
	if err != nil {
		return nil, unavailable("signing the busta di anomalia", err)
	}
	if err := g.send(ctx, p, ds, tx.Sender, delivered, msg, at, false); err != nil {
		return nil, err
	}
	p.log(peclog.Entry{Time: at, Event: peclog.EventBustaAnomalia, MsgID: strings.Trim(o.msgID, "<>"),
		Sender: sender, Recipients: delivered, Subject: o.subject, Detail: reason})
	return &Outcome{Batch: &p.batch, Queued: p.queued, Summary: "busta di anomalia: " + reason}, nil
}

// signedParts finds daticert.xml (decoded) and postacert.eml among the
// parts of the signed multipart/mixed of a PEC message.
func signedParts(entity []byte) (daticert, postacert []byte) {
	h, body, err := signer.ParseHeader(entity)
	if err != nil {
		return nil, nil
	}
	mt, params := signer.MediaType(h)
	if !strings.HasPrefix(mt, "multipart/") {
		return nil, nil
	}
	budget := 1000
	parts, _ := signer.SplitMultipart(body, params["boundary"], &budget)
	for _, part := range parts {
		ph, pbody, err := signer.ParseHeader(part)
		if err != nil {
			continue
		}
		pmt, pparams := signer.MediaType(ph)
		_, dparams := signer.ParseParams(ph.Get("content-disposition"))
		name := strings.ToLower(dparams["filename"])
		if name == "" {
			name = strings.ToLower(pparams["name"])
		}
		switch {
		case name == "daticert.xml" && daticert == nil:
			if b, err := signer.DecodeBody(ph.Get("content-transfer-encoding"), pbody, 1<<20); err == nil {
				daticert = b
			}
		case (name == "postacert.eml" || pmt == "message/rfc822") && postacert == nil:
			postacert = pbody
		}
	}
	return daticert, postacert
}
