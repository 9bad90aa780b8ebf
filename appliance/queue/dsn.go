package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"

	"sigillo/storage"
)

// NewID returns a fresh queue ID: 16 characters of base32 from 80 random
// bits, like Postfix's long queue IDs. It is chosen by the proposer, before
// a command is proposed, so every node stores the same one.
func NewID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; if it ever
		// does, a clash is still caught by the queue's primary key.
		panic(fmt.Sprintf("queue: random ID: %v", err))
	}
	return base32.StdEncoding.EncodeToString(b[:])
}

// Failure is one recipient a message will not reach.
type Failure struct {
	Recipient string // the address given in RCPT TO
	// Status is the RFC 3463 enhanced status code, e.g. "5.1.1".
	Status string
	// Diagnostic is what the failing server said, e.g.
	// "550 5.1.1 No such user", or our own explanation.
	Diagnostic string
	// RemoteMTA is the host that answered; "" for a failure found here.
	RemoteMTA string
}

// Bounce is a non-delivery report (RFC 3464 DSN) to send back to the
// envelope sender of a message.
type Bounce struct {
	Hostname string    // the reporting MTA: From: MAILER-DAEMON@Hostname
	Sender   string    // the original envelope sender, who gets the report
	QueueID  string    // the original message's queue ID
	Arrival  time.Time // when the original message was received
	Failures []Failure
	// Original is the original message; its header section is returned
	// (text/rfc822-headers), not its body.
	Original []byte
}

// Message renders the report as made at now, with Message-ID <id@Hostname>:
// a multipart/report; report-type=delivery-status with a human-readable
// part, the message/delivery-status part and the original headers.
func (b *Bounce) Message(now time.Time, id string) []byte {
	host := b.Hostname
	if host == "" {
		host = "localhost"
	}
	boundary := id + "/" + host
	var m bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&m, format+"\r\n", args...) }
	w("From: Mail Delivery System <MAILER-DAEMON@%s>", host)
	w("To: <%s>", b.Sender)
	w("Subject: Undelivered Mail Returned to Sender")
	w("Date: %s", now.Format(time.RFC1123Z))
	w("Message-ID: <%s@%s>", id, host)
	w("Auto-Submitted: auto-replied")
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w("\tboundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")
	w("--%s", boundary)
	w("Content-Description: Notification")
	w("Content-Type: text/plain; charset=us-ascii")
	w("")
	w("This is the mail system at host %s.", host)
	w("")
	w("I'm sorry to have to inform you that your message could not")
	w("be delivered to one or more recipients. It's attached below.")
	w("")
	w("For further assistance, please send mail to postmaster.")
	w("")
	w("                   The mail system")
	for _, f := range b.Failures {
		w("")
		line := "<" + f.Recipient + ">: "
		if f.RemoteMTA != "" {
			line += "host " + ascii(f.RemoteMTA) + " said: "
		}
		w("%s%s", line, ascii(f.Diagnostic))
	}
	w("")
	w("--%s", boundary)
	w("Content-Description: Delivery report")
	w("Content-Type: message/delivery-status")
	w("")
	w("Reporting-MTA: dns; %s", host)
	if b.QueueID != "" {
		w("X-Sigillo-Queue-ID: %s", b.QueueID)
	}
	if !b.Arrival.IsZero() {
		w("Arrival-Date: %s", b.Arrival.Format(time.RFC1123Z))
	}
	for _, f := range b.Failures {
		w("")
		w("Final-Recipient: rfc822; %s", ascii(f.Recipient))
		w("Action: failed")
		w("Status: %s", f.Status)
		if f.RemoteMTA != "" {
			w("Remote-MTA: dns; %s", ascii(f.RemoteMTA))
		}
		if f.Diagnostic != "" {
			kind := "smtp"
			if f.RemoteMTA == "" {
				kind = "x-sigillo"
			}
			w("Diagnostic-Code: %s; %s", kind, ascii(f.Diagnostic))
		}
	}
	w("")
	w("--%s", boundary)
	w("Content-Description: Undelivered Message Headers")
	w("Content-Type: text/rfc822-headers")
	w("")
	m.Write(crlf(headerSection(b.Original)))
	w("")
	w("--%s--", boundary)
	return m.Bytes()
}

// Directory is the part of the store a bounce needs to find the sender.
type Directory interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	MailboxByAddress(ctx context.Context, address string) (storage.Mailbox, error)
}

// BounceCommand returns the storage.Deliver that delivers the report: into
// the sender's INBOX if the sender is a local mailbox, otherwise on the
// outbound queue with the null sender. It returns nil and no error when no
// report is due: a message with the null sender is itself a report and is
// never bounced (RFC 5321 §4.5.5), and a local domain without such a
// mailbox has nobody to tell. queued reports whether the command puts the
// report on the outbound queue (so the caller can wake the runner).
func BounceCommand(ctx context.Context, store Directory, b Bounce, now time.Time) (cmd *storage.Deliver, queued bool, err error) {
	if b.Sender == "" || len(b.Failures) == 0 {
		return nil, false, nil
	}
	_, domain, ok := storage.SplitAddress(b.Sender)
	if !ok {
		return nil, false, nil
	}
	id := NewID()
	body := b.Message(now, id)
	local, err := store.IsLocalDomain(ctx, domain)
	if err != nil {
		return nil, false, fmt.Errorf("bounce to %s: %w", b.Sender, err)
	}
	if local {
		mb, err := store.MailboxByAddress(ctx, b.Sender)
		if storage.IsCode(err, storage.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("bounce to %s: %w", b.Sender, err)
		}
		data := append([]byte("Return-Path: <>\r\n"), body...)
		return &storage.Deliver{
			Targets:      []storage.Target{{MailboxID: mb.ID}},
			InternalDate: now.Unix(),
			Data:         data,
		}, false, nil
	}
	return &storage.Deliver{
		Outbound: &storage.Outbound{
			ID:          id,
			Sender:      "",
			Recipients:  []string{b.Sender},
			NextAttempt: now.Unix(),
		},
		InternalDate: now.Unix(),
		Data:         body,
	}, true, nil
}

// headerSection returns the header of a message (without the blank line),
// at most 64 KiB of it.
func headerSection(msg []byte) []byte {
	end := len(msg)
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		end = i + 2
	} else if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		end = i + 1
	}
	if end > 64<<10 {
		end = 64 << 10
	}
	h := msg[:end]
	if len(h) > 0 && h[len(h)-1] != '\n' {
		h = append(append([]byte(nil), h...), '\n')
	}
	return h
}

// crlf turns bare LFs into CRLF, so the report is well-formed whatever the
// original used.
func crlf(b []byte) []byte {
	var out bytes.Buffer
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}

// ascii makes a string safe for a DSN field: printable US-ASCII on one line.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\r' || r == '\n' || r == '\t':
			b.WriteByte(' ')
		case r < ' ' || r > '~':
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
}

// stripReturnPath removes the Return-Path fields at the top of a stored
// message. smtpd adds one when it delivers a copy locally, and a message
// with local and remote recipients is stored once, so the copy on the queue
// carries it too; RFC 5321 §4.4 says a relay must not send it on.
func stripReturnPath(msg []byte) []byte {
	for {
		if len(msg) < len("Return-Path:") || !strings.EqualFold(string(msg[:len("Return-Path:")]), "Return-Path:") {
			return msg
		}
		// Skip the field and its folded continuation lines.
		for {
			i := bytes.IndexByte(msg, '\n')
			if i < 0 {
				return nil
			}
			msg = msg[i+1:]
			if len(msg) == 0 || (msg[0] != ' ' && msg[0] != '\t') {
				break
			}
		}
	}
}
