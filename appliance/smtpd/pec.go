package smtpd

import (
	"context"
	"errors"
	"time"

	"github.com/emersion/go-smtp"

	"sigillo/appliance/pec"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// pecCopies is how many times a PEC transaction holds its message in
// memory at most, for the in-flight budget.
const pecCopies = 6

// pecData hands the transaction to the PEC gestore when it concerns it: a
// PEC user's submission (the access point) or recipients in PEC domains of
// ours (the reception point; the other recipients are stored in the same
// command). handled is false when the gestore has nothing to do with it.
//
// The gestore works on the message in memory, copying it several times
// (the postacert, the signed busta, a consegna completa): the transaction
// holds pecCopies times its size of the in-flight budget meanwhile.
//
// dd identifies the message as the client sent it, for the access point's
// duplicate check (pec.Transaction.Dedupe).
func (s *session) pecData(id string, now time.Time, overTLS bool, prefix string, msg *spool.File, virus string, dd *storage.Dedupe) (reply error, handled bool) {
	var pecRcpts, others []recipient
	for _, rc := range s.rcpts {
		if rc.pec || s.pecSender {
			pecRcpts = append(pecRcpts, rc)
		} else {
			others = append(others, rc)
		}
	}
	if len(pecRcpts) == 0 {
		return nil, false
	}
	if virus != "" && len(others) > 0 {
		// Infected, for PEC and other recipients at once: refused whole.
		return replyf(554, smtp.EnhancedCode{5, 7, 1}, "Message refused: virus found (%s)", virus), true
	}
	held, err := s.reserve(id, pecCopies*(int64(len(prefix))+msg.Size()))
	if err != nil {
		return err, true
	}
	defer held.Release()
	data, err := msg.ReadAll([]byte(prefix))
	if err != nil {
		s.log.Error("PEC message not read back from the spool", "id", id, "err", err)
		return errTempFailure, true
	}
	tx := pec.Transaction{Sender: s.from, Data: data, Inbound: s.mode == Inbound, TLS: overTLS, Virus: virus}
	if s.pecSender {
		tx.Dedupe = dd
	}
	for _, rc := range pecRcpts {
		tx.Recipients = append(tx.Recipients, rc.addr)
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, applyTimeout)
	defer cancel()
	var out *pec.Outcome
	if s.pecSender {
		out, err = s.srv.PEC.Submit(ctx, tx)
	} else {
		out, err = s.srv.PEC.Receive(ctx, tx)
	}
	if err != nil {
		s.log.Error("PEC processing failed; the client will retry", "id", id, "from", s.from, "err", err)
		return errTempFailure, true
	}
	batch := out.Batch
	queued := out.Queued
	if out.Reply != nil {
		// The gestore refused (or answered for) its recipients: the whole
		// transaction gets that answer, so that none of its recipients is
		// lost behind a 250 (the client sends again, or bounces).
		others = nil
	}
	if len(others) > 0 {
		// The recipients outside PEC domains get the message as usual, in
		// the same command (quota was checked at RCPT).
		if batch == nil {
			batch = &storage.Batch{}
		}
		d := &storage.Deliver{InternalDate: now.Unix()}
		var remote []string
		for _, rc := range others {
			if rc.mailbox != 0 {
				d.Targets = append(d.Targets, storage.Target{MailboxID: rc.mailbox})
			} else {
				remote = append(remote, rc.addr)
			}
		}
		d.Data = data
		if len(d.Targets) > 0 {
			d.Data = append([]byte("Return-Path: <"+s.from+">\r\n"), data...)
		}
		if len(remote) > 0 {
			d.Outbound = &storage.Outbound{ID: id, Sender: s.from, Recipients: remote, NextAttempt: now.Unix()}
			queued = true
		}
		batch.Deliveries = append(batch.Deliveries, d)
	}
	if batch != nil {
		if _, err := s.srv.Proposer.Apply(ctx, batch); err != nil {
			s.log.Error("PEC message not stored", "id", id, "pec_id", out.ID, "from", s.from, "err", err)
			var refusal *storage.Error
			if errors.As(err, &refusal) && refusal.Code == storage.ErrInvalid {
				return replyf(554, smtp.EnhancedCode{5, 3, 0}, "Message refused: %s", refusal.Msg), true
			}
			return errTempFailure, true
		}
		if queued && s.srv.Enqueued != nil {
			s.srv.Enqueued()
		}
	}
	s.log.Info("PEC message processed", "id", id, "pec_id", out.ID, "from", s.from, "recipients", len(tx.Recipients),
		"others", len(others), "outcome", out.Summary, "size", len(data), "tls", overTLS)
	if r := out.Reply; r != nil {
		return replyf(r.Code, smtp.EnhancedCode{r.Enhanced[0], r.Enhanced[1], r.Enhanced[2]}, "%s", r.Text), true
	}
	text := "Ok: queued as " + id
	if out.ID != "" {
		text += " (PEC " + out.ID + ")"
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: text}, true
}
