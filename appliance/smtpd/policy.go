package smtpd

// The session's policy beyond the protocol: which sender addresses a client
// may use, the header fields added on submission, the rejected-recipient
// limit, the postmaster, and quota at the end of data. Each check reads
// only what it is given (the envelope, the message's header block), so that
// Data can call it with whatever holds the message.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"sigillo/appliance/queue"
	"sigillo/storage"
)

// DefaultMaxRejectedRecipients is how many recipients a connection may have
// refused before it is told 421 and closed (Postfix's smtpd_hard_error_limit).
const DefaultMaxRejectedRecipients = 20

var (
	errTooManyRejected = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many rejected recipients, closing the connection"}
	errPostmasterTemp  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "<postmaster>: The postmaster's mailbox is missing here, please try again later"}
)

func (s *Server) maxRejected() int {
	if s.MaxRejectedRecipients > 0 {
		return s.MaxRejectedRecipients
	}
	return DefaultMaxRejectedRecipients
}

// ---- senders ----

// mayUse reports whether the authenticated user may use addr as a sender
// (MAIL FROM, From:, Sender:). Today only its own address; aliases and
// shared addresses, once they exist, are to be answered here.
func (s *session) mayUse(addr string) bool {
	return s.user != nil && sameAddress(addr, s.user.Address)
}

// trusted reports whether the client is in RelayNetworks: on port 25 it may
// use the hosted domains' addresses as senders without authenticating.
func (s *session) trusted() bool {
	if len(s.srv.RelayNetworks) == 0 {
		return false
	}
	ta, ok := s.remote.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.srv.RelayNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// checkSender is the MAIL FROM policy: on the submission ports the address
// must be one the user may use; on port 25 an address of a hosted domain is
// refused (only its users, authenticated, send as it), except from
// RelayNetworks. The null sender (bounces) passes on port 25.
func (s *session) checkSender(from string) error {
	if s.mode != Inbound {
		if s.user == nil {
			return errAuthRequired
		}
		if !s.mayUse(from) {
			s.log.Info("sender refused: not the authenticated user's address", "from", from)
			return replyf(553, smtp.EnhancedCode{5, 7, 1}, "<%s>: Sender address rejected: not owned by user %s", from, s.user.Address)
		}
		return nil
	}
	if from == "" || s.trusted() {
		return nil
	}
	_, domain, ok := storage.SplitAddress(from)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, lookupTimeout)
	defer cancel()
	hosted, err := s.srv.Store.IsLocalDomain(ctx, domain)
	if err != nil {
		s.log.Error("sender lookup failed", "from", from, "err", err)
		return errTempFailure
	}
	if hosted {
		s.log.Info("sender refused: a hosted domain without authentication", "from", from)
		return replyf(550, smtp.EnhancedCode{5, 7, 1}, "<%s>: Sender address rejected: %s is hosted here, its users authenticate on the submission port", from, domain)
	}
	return nil
}

// checkHeader is the header policy at the end of data, on the header block
// of the message as the client sent it. On the submission ports every
// address of From: and Sender: must be one the user may use (553); a PEC
// user's submission is left to the access point, which answers a wrong
// From: with a signed avviso di non accettazione. On port 25, a From:
// address in a hosted domain is refused (550), except from RelayNetworks.
func (s *session) checkHeader(header []byte) error {
	if s.mode != Inbound {
		if s.pecSender {
			return nil
		}
		for _, f := range headerFields(header, "From", "Sender") {
			addrs := fieldAddresses(f.value)
			if len(addrs) == 0 {
				s.log.Info("message refused: no address in a header field", "field", f.name, "value", f.value)
				return replyf(553, smtp.EnhancedCode{5, 7, 1}, "%s: header has no address that %s may send as", f.name, s.user.Address)
			}
			for _, a := range addrs {
				if !s.mayUse(a) {
					s.log.Info("message refused: header address not owned by the user", "field", f.name, "address", a)
					return replyf(553, smtp.EnhancedCode{5, 7, 1}, "<%s>: %s: address rejected: not owned by user %s", a, f.name, s.user.Address)
				}
			}
		}
		return nil
	}
	if s.trusted() {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, lookupTimeout)
	defer cancel()
	for _, f := range headerFields(header, "From") {
		for _, a := range fieldAddresses(f.value) {
			_, domain, _ := storage.SplitAddress(a)
			hosted, err := s.srv.Store.IsLocalDomain(ctx, domain)
			if err != nil {
				s.log.Error("header sender lookup failed", "from", a, "err", err)
				return errTempFailure
			}
			if hosted {
				s.log.Info("message refused: From: in a hosted domain without authentication", "from", s.from, "header_from", a)
				return replyf(550, smtp.EnhancedCode{5, 7, 1}, "<%s>: From: address rejected: %s is hosted here, its users authenticate on the submission port", a, domain)
			}
		}
	}
	return nil
}

// ---- header fields added on submission ----

// addedFields returns the Message-ID: and Date: fields to put before a
// submitted message whose header lacks them (as Postfix's cleanup does),
// or nil. Mail from other servers (port 25) is stored as it came.
func (s *session) addedFields(header []byte, id string, now time.Time) []byte {
	if s.mode == Inbound {
		return nil
	}
	var hasID, hasDate bool
	for _, f := range headerFields(header, "Message-ID", "Date") {
		hasID = hasID || strings.EqualFold(f.name, "Message-ID")
		hasDate = hasDate || strings.EqualFold(f.name, "Date")
	}
	var b []byte
	if !hasID {
		b = append(b, "Message-ID: <"+now.UTC().Format("20060102150405")+"."+id+"@"+s.srv.hostname()+">\r\n"...)
	}
	if !hasDate {
		b = append(b, "Date: "+now.Format(time.RFC1123Z)+"\r\n"...)
	}
	return b
}

// ---- rejected recipients ----

// Rcpt answers RCPT TO (see rcpt) and counts the recipients refused on the
// connection: past Server.MaxRejectedRecipients it answers 421 and closes
// the connection, so that addresses cannot be harvested by guessing.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.rejectedLimitReached() {
		return s.hangUp()
	}
	err := s.rcpt(to, opts)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		s.countRejected()
	}
	return err
}

func (s *session) countRejected() {
	if s.track != nil {
		s.track.rejected.Add(1)
	} else {
		s.rejected++
	}
}

func (s *session) rejectedLimitReached() bool {
	n := s.rejected
	if s.track != nil {
		n = int(s.track.rejected.Load())
	}
	return n >= s.srv.maxRejected()
}

// hangUp answers 421 and has the connection closed once that reply is
// written (go-smtp does not close a connection after a 421 of ours).
func (s *session) hangUp() error {
	if !s.hungUp {
		// Once: pipelined commands already read still come here.
		s.hungUp = true
		s.log.Info("connection closed: too many rejected recipients", "limit", s.srv.maxRejected())
	}
	if s.track != nil {
		s.track.hangUp.Store(true)
	}
	return errTooManyRejected
}

// lingerTimeout bounds how long lingerClose waits for the client to close.
const lingerTimeout = 2 * time.Second

// lingerClose closes the connection without losing the last reply: a
// close with unread input (the pipelined commands of a harvester) makes
// the kernel reset the connection, and the client may never read the
// reply. So the write side is shut first (FIN after the reply), then what
// the client still sends is read and dropped until it closes too, for at
// most lingerTimeout and 1 MiB.
func (c *trackedConn) lingerClose() {
	// On the TCP connection itself: a wrapper may manage its deadlines.
	raw := innermost(c.Conn)
	if cw, ok := raw.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		raw.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, raw, 1<<20)
	}
	c.Close()
}

// innermost is the connection under c's wrappers (those with an Unwrap
// method, such as connlimit's).
func innermost(c net.Conn) net.Conn {
	for {
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return c
		}
		c = u.Unwrap()
	}
}

// ---- postmaster ----

// postmaster returns the address that mail for to is delivered to when to
// is the postmaster (RFC 5321 §4.5.1): bare "postmaster", or
// postmaster@<a hosted domain> that has no mailbox of its own. Both go to
// Server.Postmaster; without it, bare postmaster goes to the mailbox
// postmaster@<hostname> if there is one, and otherwise both are refused
// with a 550 that says what is missing. Any other address is returned as
// it is.
func (s *session) postmaster(ctx context.Context, to string) (string, error) {
	bare := strings.EqualFold(to, "postmaster")
	if !bare {
		local, domain, ok := storage.SplitAddress(to)
		if !ok || !strings.EqualFold(local, "postmaster") {
			return to, nil
		}
		hosted, err := s.srv.Store.IsLocalDomain(ctx, domain)
		if err != nil {
			s.log.Error("recipient lookup failed", "to", to, "err", err)
			return "", errTempFailure
		}
		if !hosted {
			return to, nil
		}
		if _, err := s.srv.Store.MailboxByAddress(ctx, to); err == nil {
			return to, nil
		} else if !storage.IsCode(err, storage.ErrNotFound) {
			s.log.Error("recipient lookup failed", "to", to, "err", err)
			return "", errTempFailure
		}
	}
	addr := s.srv.Postmaster
	if addr == "" && bare {
		addr = "postmaster@" + s.srv.hostname()
	}
	if addr != "" {
		_, err := s.srv.Store.MailboxByAddress(ctx, addr)
		if err == nil {
			return addr, nil
		}
		if !storage.IsCode(err, storage.ErrNotFound) {
			s.log.Error("recipient lookup failed", "to", addr, "err", err)
			return "", errTempFailure
		}
		if s.srv.Postmaster != "" {
			s.log.Error("the configured postmaster mailbox does not exist; mail for the postmaster waits", "postmaster", addr, "to", to)
			return "", errPostmasterTemp
		}
	}
	s.log.Warn("mail for the postmaster refused: no postmaster mailbox (set postmaster in the configuration)", "to", to)
	return "", replyf(550, smtp.EnhancedCode{5, 1, 1}, "<%s>: Recipient address rejected: no postmaster mailbox is set up here", to)
}

// ---- quota ----

// quotaGrace is how far over its quota one message may take a mailbox that
// was under it (Dovecot's quota_grace, 10 %).
func quotaGrace(quota int64) int64 { return quota / 10 }

// fits reports whether a message of size bytes may go into mb: it has no
// quota, or it is under its quota and stays within quota and grace. size 0
// (unknown) asks only whether the mailbox is under its quota.
func fits(mb storage.Mailbox, size int64) bool {
	q := mb.QuotaBytes
	return q <= 0 || (mb.UsedBytes < q && mb.UsedBytes+size <= q+quotaGrace(q))
}

// quotaTargets decides, at the end of data, which local recipients get a
// message of size bytes. Those that fit do. Those that do not are in over
// on the submission ports, where the sender is authenticated and gets a
// DSN for them; on port 25, where a DSN would go to a sender that may be
// forged, a recipient accepted at RCPT gets the message even beyond its
// grace, unless no recipient at all can take it (then targets is empty and
// the caller answers 552, so that the sending server tells its user).
func (s *session) quotaTargets(ctx context.Context, locals []recipient, size int64) (targets []storage.Target, over []recipient, err error) {
	var beyond []recipient
	for _, rc := range locals {
		mb, err := s.srv.Store.MailboxByID(ctx, rc.mailbox)
		if err != nil {
			return nil, nil, err
		}
		if fits(mb, size) {
			targets = append(targets, storage.Target{MailboxID: rc.mailbox})
			continue
		}
		s.log.Info("recipient over quota at end of data", "to", rc.addr, "used", mb.UsedBytes, "quota", mb.QuotaBytes, "size", size)
		beyond = append(beyond, rc)
	}
	if s.mode != Inbound {
		return targets, beyond, nil
	}
	if len(targets) == 0 {
		return nil, beyond, nil
	}
	for _, rc := range beyond {
		s.log.Warn("delivered beyond the quota grace: no bounce from port 25", "to", rc.addr)
		targets = append(targets, storage.Target{MailboxID: rc.mailbox})
	}
	return targets, nil, nil
}

// overQuotaFailures is the DSN's list for the recipients quotaTargets left
// out.
func overQuotaFailures(over []recipient) []queue.Failure {
	var f []queue.Failure
	for _, rc := range over {
		f = append(f, queue.Failure{Recipient: rc.addr, Status: "5.2.2", Diagnostic: "mailbox full"})
	}
	return f
}

// ---- reading a header ----

// headerField is one field of a header block, its value unfolded.
type headerField struct {
	name, value string
}

// headerFields returns the fields of a header block named in names
// (compared case-insensitively; no names: every field), in order, each
// value unfolded (continuation lines joined without their line ending). A
// line that is neither a field nor a continuation is skipped. Only the
// fields asked for are copied, however long the header.
func headerFields(h []byte, names ...string) []headerField {
	var out []headerField
	var cur *headerField // the field being read, if wanted
	for len(h) > 0 {
		line := h
		if i := bytes.IndexByte(h, '\n'); i >= 0 {
			line, h = h[:i], h[i+1:]
		} else {
			h = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if cur != nil {
				cur.value += string(line)
			}
			continue
		}
		cur = nil
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !fieldName(name) || !wanted(name, names) {
			continue
		}
		out = append(out, headerField{name: string(name), value: string(value)})
		cur = &out[len(out)-1]
	}
	return out
}

func wanted(name []byte, names []string) bool {
	for _, n := range names {
		if len(name) == len(n) && strings.EqualFold(string(name), n) {
			return true
		}
	}
	return len(names) == 0
}

// fieldName reports whether b is a field name (RFC 5322 §3.6.8: printable
// US-ASCII but the colon).
func fieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 {
			return false
		}
	}
	return len(b) > 0
}

// addressParser reads address lists with encoded words in any charset: a
// display name's charset does not matter here.
func addressParser() *mail.AddressParser {
	return &mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
}

// fieldAddresses returns the addresses of an address-list field value
// (From:, Sender:). A value net/mail cannot read is scanned for anything
// around an "@", so that a malformed field that some client would still
// display cannot slip an address past the checks.
func fieldAddresses(value string) []string {
	if list, err := addressParser().ParseList(value); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	var out []string
	delim := func(c byte) bool {
		return c <= ' ' || c >= 0x7f || strings.IndexByte(`<>()[],;:"\`, c) >= 0
	}
	for i := 0; i < len(value); i++ {
		if value[i] != '@' {
			continue
		}
		start, end := i, i+1
		for start > 0 && !delim(value[start-1]) {
			start--
		}
		for end < len(value) && !delim(value[end]) && value[end] != '@' {
			end++
		}
		if start < i && end > i+1 {
			out = append(out, value[start:end])
		}
	}
	return out
}
