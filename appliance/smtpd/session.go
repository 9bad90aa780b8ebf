package smtpd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sigillo/appliance/accounts"
	"sigillo/appliance/inflight"
	"sigillo/appliance/queue"
	"sigillo/appliance/readiness"
	"sigillo/appliance/scan"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// The replies the session makes itself (go-smtp makes the protocol ones).
var (
	errAuthRequired    = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errTempFailure     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary failure, please try again later"}
	errAuthTemp        = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errBadSASL         = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}
	errMailboxFull     = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
	errLineTooLong     = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	errNoStorage       = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage"}
	errBusy            = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system resources, please try again later"}
	errScanUnavailable = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Temporary failure: the virus scanner is unavailable, please try again later"}
)

func replyf(code int, enh smtp.EnhancedCode, format string, args ...any) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

type backend struct {
	srv  *Server
	mode Mode
}

// NewSession is called at the first EHLO/HELO of a connection, and again
// after STARTTLS (which forgets everything, authentication included).
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	sess := &session{
		srv:    b.srv,
		mode:   b.mode,
		conn:   c,
		remote: nc.RemoteAddr(),
		track:  tracked(nc),
	}
	sess.log = b.srv.logger().With("mode", b.mode.String(), "remote", sess.remote.String())
	return sess, nil
}

type recipient struct {
	addr    string
	mailbox int64 // 0: remote, or for the PEC gestore
	pec     bool  // in a PEC domain of ours: the reception point's
}

// session is one client's state; go-smtp calls its methods from the
// connection's goroutine only.
type session struct {
	srv    *Server
	mode   Mode
	conn   *smtp.Conn
	remote net.Addr
	track  *trackedConn
	log    *slog.Logger

	user *storage.Mailbox // set by AUTH

	rejected int  // recipients refused, when there is no trackedConn to count them
	hungUp   bool // answered 421 for too many rejected recipients

	// The transaction.
	from      string
	pecSender bool  // a PEC user submitting: the access point's
	size      int64 // MAIL SIZE=, 0 if not given
	rcpts     []recipient
	seen      map[string]bool
}

func (s *session) setBusy(b bool) {
	if s.track != nil {
		s.track.busy.Store(b)
	}
}

func (s *session) Reset() {
	s.from, s.pecSender, s.size, s.rcpts, s.seen = "", false, 0, nil, nil
	s.setBusy(false)
}

func (s *session) Logout() error {
	s.setBusy(false)
	return nil
}

// ---- AUTH ----

func (s *session) authAllowed() bool { return s.mode != Inbound && s.srv.Auth != nil }

func (s *session) AuthMechanisms() []string {
	if !s.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.authAllowed() {
		return nil, smtp.ErrAuthUnsupported
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return &plainServer{login: s.login}, nil
	case sasl.Login:
		return &loginServer{login: s.login}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) login(username, password string) error {
	ctx, cancel := context.WithTimeout(s.srv.ctx, lookupTimeout)
	defer cancel()
	mb, err := s.srv.Auth.Login(ctx, username, password, s.remote)
	if errors.Is(err, accounts.ErrAuthFailed) {
		s.log.Info("authentication failed", "user", username)
		return smtp.ErrAuthFailed
	}
	if err != nil {
		s.log.Error("authentication unavailable", "user", username, "err", err)
		return errAuthTemp
	}
	s.user = &mb
	s.log = s.log.With("user", mb.Address)
	s.log.Info("authenticated")
	return nil
}

// plainServer is SASL PLAIN (RFC 4616); the authorization identity, if
// given, must be the user itself.
type plainServer struct {
	login func(user, pass string) error
	done  bool
}

func (p *plainServer) Next(resp []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, errBadSASL
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	p.done = true
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 {
		return nil, false, errBadSASL
	}
	identity, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if identity != "" && !strings.EqualFold(identity, user) {
		return nil, false, smtp.ErrAuthFailed
	}
	if err := p.login(user, pass); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

// loginServer is the obsolete but ubiquitous LOGIN mechanism
// (draft-murchison-sasl-login): "Username:", then "Password:". An initial
// response is the user name.
type loginServer struct {
	login func(user, pass string) error
	step  int
	user  string
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		if err := l.login(l.user, string(resp)); err != nil {
			return nil, false, err
		}
		return nil, true, nil
	}
	return nil, false, errBadSASL
}

// ---- the transaction ----

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if s.rejectedLimitReached() {
		return s.hangUp()
	}
	if ok, reason := readiness.Check(s.srv.Ready); !ok {
		return s.notReady(reason)
	}
	if err := s.checkSender(from); err != nil {
		return err
	}
	if s.srv.StorageCheck != nil {
		if err := s.srv.StorageCheck(); err != nil {
			s.log.Warn("mail refused for now: storage", "from", from, "err", err)
			return errNoStorage
		}
	}
	if s.srv.PEC != nil && s.user != nil {
		ctx, cancel := context.WithTimeout(s.srv.ctx, lookupTimeout)
		isPEC, err := s.srv.PEC.IsPECAddress(ctx, s.user.Address)
		cancel()
		if err != nil {
			s.log.Error("sender lookup failed", "from", from, "err", err)
			return errTempFailure
		}
		s.pecSender = isPEC
	}
	s.from = from
	if opts != nil {
		s.size = opts.Size
	}
	s.setBusy(true)
	return nil
}

// rcpt is RCPT TO without the count of refusals (Rcpt, in policy.go).
func (s *session) rcpt(to string, _ *smtp.RcptOptions) error {
	ctx, cancel := context.WithTimeout(s.srv.ctx, lookupTimeout)
	defer cancel()
	to, err := s.postmaster(ctx, to)
	if err != nil {
		return err
	}
	localPart, domain, ok := storage.SplitAddress(to)
	if !ok || strings.ContainsFunc(localPart, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return replyf(501, smtp.EnhancedCode{5, 1, 3}, "<%s>: Bad recipient address syntax", to)
	}
	if !hostnameSyntax(domain) {
		// Address literals ([192.0.2.1]) and malformed names: refused here
		// rather than accepted and bounced later.
		return replyf(550, smtp.EnhancedCode{5, 1, 2}, "<%s>: Recipient domain is not a valid host name (address literals are not supported)", to)
	}
	key := storage.NormalizeAddress(to)
	if s.srv.PEC != nil {
		isPEC, err := s.srv.PEC.IsPECAddress(ctx, to)
		if err != nil {
			s.log.Error("recipient lookup failed", "to", to, "err", err)
			return errTempFailure
		}
		if isPEC {
			// The delivery point answers for unknown and full mailboxes
			// with a signed avviso di mancata consegna.
			if !s.seen[key] {
				s.addSeen(key)
				s.rcpts = append(s.rcpts, recipient{addr: to, pec: true})
			}
			return nil
		}
	}
	local, err := s.srv.Store.IsLocalDomain(ctx, domain)
	if err != nil {
		s.log.Error("recipient lookup failed", "to", to, "err", err)
		return errTempFailure
	}
	if !local {
		if s.mode == Inbound || s.user == nil {
			s.log.Info("relay denied", "from", s.from, "to", to)
			return replyf(554, smtp.EnhancedCode{5, 7, 1}, "<%s>: Relay access denied", to)
		}
		if !s.seen[key] {
			s.addSeen(key)
			s.rcpts = append(s.rcpts, recipient{addr: to})
		}
		return nil
	}
	mb, err := s.srv.Store.MailboxByAddress(ctx, to)
	if storage.IsCode(err, storage.ErrNotFound) {
		s.log.Info("unknown recipient", "from", s.from, "to", to)
		return replyf(550, smtp.EnhancedCode{5, 1, 1}, "<%s>: Recipient address rejected: User unknown", to)
	}
	if err != nil {
		s.log.Error("recipient lookup failed", "to", to, "err", err)
		return errTempFailure
	}
	if !fits(mb, s.size) {
		s.log.Info("recipient over quota", "to", to, "used", mb.UsedBytes, "quota", mb.QuotaBytes, "size", s.size)
		return replyf(552, smtp.EnhancedCode{5, 2, 2}, "<%s>: Mailbox full", to)
	}
	if !s.seen[key] {
		s.addSeen(key)
		s.rcpts = append(s.rcpts, recipient{addr: to, mailbox: mb.ID})
	}
	return nil
}

func (s *session) addSeen(key string) {
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[key] = true
}

func (s *session) Data(r io.Reader) error {
	// The message goes to a spool file as it arrives: a client that holds
	// before the final dot costs disk, not memory. msg.Header() is its
	// header section, for checks on the header fields.
	msg, err := s.srv.Spool.Receive(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			s.log.Info("message refused", "from", s.from, "err", se.Message)
			return se // 552 5.3.4 when over MaxMessageBytes
		}
		if errors.Is(err, smtp.ErrTooLongLine) {
			return errLineTooLong
		}
		if errors.Is(err, spool.ErrWrite) {
			s.log.Error("message not accepted for now: spool", "from", s.from, "err", err)
			return errNoStorage
		}
		return fmt.Errorf("reading message: %w", err)
	}
	defer msg.Close()

	now := s.srv.now()
	id := queue.NewID()
	header, err := msg.Header()
	if err != nil {
		s.log.Error("message not accepted for now: spool", "id", id, "from", s.from, "err", err)
		return errNoStorage
	}
	if err := s.checkHeader(header); err != nil {
		return err
	}
	added := s.addedFields(header, id, now) // go after Received:, below
	var verdict scan.Verdict
	if s.srv.Scanner != nil {
		ctx, cancel := context.WithTimeout(s.srv.ctx, applyTimeout)
		verdict, err = s.srv.Scanner.Scan(ctx, msg.Reader(), msg.Size())
		cancel()
		if err != nil {
			s.log.Error("message not accepted for now: no virus scan", "id", id, "from", s.from, "err", err)
			return errScanUnavailable
		}
		if verdict.Header() != "" {
			s.log.Warn("message not scanned", "id", id, "from", s.from, "why", verdict.Skipped)
		}
		if verdict.Infected {
			s.log.Warn("virus found", "id", id, "from", s.from, "virus", verdict.Virus, "size", msg.Size())
		}
	}
	var locals []recipient
	var remote []string
	for _, rc := range s.rcpts {
		if rc.mailbox != 0 {
			locals = append(locals, rc)
		} else {
			remote = append(remote, rc.addr)
		}
	}

	var hdr bytes.Buffer
	if len(locals) > 0 {
		fmt.Fprintf(&hdr, "Return-Path: <%s>\r\n", s.from)
	}
	var cs *tls.ConnectionState
	if st, ok := s.conn.TLSConnectionState(); ok {
		cs = &st
	}
	forRcpt := ""
	if len(s.rcpts) == 1 {
		forRcpt = s.rcpts[0].addr
	}
	recv := received(receivedInfo{
		helo: s.conn.Hostname(), remote: s.remote, by: s.srv.hostname(),
		tls: cs, auth: s.user != nil, id: id, rcpt: forRcpt, at: now,
	}) + string(added)
	if s.srv.PEC != nil {
		if reply, handled := s.pecData(id, now, cs != nil, recv+verdict.Header(), msg, verdict.Virus, dedupe(header, msg.SHA256())); handled {
			return reply
		}
	}
	if verdict.Infected {
		return replyf(554, smtp.EnhancedCode{5, 7, 1}, "Message refused: virus found (%s)", verdict.Virus)
	}
	hdr.WriteString(recv)
	hdr.WriteString(verdict.Header())

	// The stored message is hdr followed by the spool file, copied once
	// into the raft log entry (storage.Encode) while the in-flight budget
	// holds its size.
	size := int64(hdr.Len()) + msg.Size()
	held, err := s.reserve(id, size)
	if err != nil {
		return err
	}
	defer held.Release()
	ctx, cancel := context.WithTimeout(s.srv.ctx, applyTimeout)
	defer cancel()
	targets, over, err := s.quotaTargets(ctx, locals, size)
	if err != nil {
		s.log.Error("quota lookup failed", "id", id, "err", err)
		return errTempFailure
	}
	if len(targets) == 0 && len(remote) == 0 {
		s.log.Info("message refused: every recipient over quota", "id", id, "from", s.from)
		return errMailboxFull
	}
	cmd := &storage.Deliver{Targets: targets, InternalDate: now.Unix(), Data: hdr.Bytes(), Tail: msg.Reader(),
		Dedupe: dedupe(header, msg.SHA256())}
	if len(remote) > 0 {
		cmd.Outbound = &storage.Outbound{ID: id, Sender: s.from, Recipients: remote, NextAttempt: now.Unix()}
	}
	res, err := storage.ApplyAs[*storage.DeliverResult](ctx, s.srv.Proposer, cmd)
	if err != nil {
		s.log.Error("message not stored", "id", id, "from", s.from, "err", err)
		var refusal *storage.Error
		if errors.As(err, &refusal) && refusal.Code == storage.ErrInvalid {
			return replyf(554, smtp.EnhancedCode{5, 3, 0}, "Message refused: %s", refusal.Msg)
		}
		// Anything else, refusals included (a mailbox removed since
		// RCPT): the client retries, and RCPT checks again.
		return errTempFailure
	}

	if len(over) > 0 {
		// The DSN returns the header section only.
		s.bounce(ctx, id, now, append(hdr.Bytes(), header...), overQuotaFailures(over))
	}
	if cmd.Outbound != nil && s.srv.Enqueued != nil {
		s.srv.Enqueued()
	}
	placed, queued := len(targets), len(remote)
	var dups []any
	if res != nil {
		placed, queued = len(res.Placed), len(remote)-len(res.DuplicateRemote)
		if n := len(res.Duplicate) + len(res.DuplicateRemote); n > 0 {
			// A client's retry of a message whose 250 it did not see.
			dups = []any{"duplicate", n, "message_id", cmd.Dedupe.MessageID}
		}
	}
	s.log.Info("message accepted", append([]any{"id", id, "from", s.from, "local", placed, "remote", queued,
		"size", size, "tls", cs != nil}, dups...)...)
	// go-smtp writes the code and text of a returned SMTPError as they
	// are, so a 250 "error" gives Postfix's "queued as" reply.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// dedupe identifies a message for the store's duplicate check: its
// Message-ID (the client's: one this server added is new on every attempt)
// and the hash of what the client sent. A retry after a lost 250 is then
// acknowledged without a second copy. Nil without a Message-ID.
func dedupe(header []byte, sum [sha256.Size]byte) *storage.Dedupe {
	fields := headerFields(header, "Message-ID")
	if len(fields) == 0 {
		return nil
	}
	id := storage.NormalizeMessageID(fields[0].value)
	if id == "" {
		return nil
	}
	return &storage.Dedupe{MessageID: id, SHA256: hex.EncodeToString(sum[:])}
}

// reserve holds bytes of the in-flight budget while a message is in memory
// (from its raft log entry to its reply). When the budget stays full for
// its whole wait, the client gets 452 4.3.1 and sends the message again
// later.
func (s *session) reserve(id string, n int64) (*inflight.Reservation, error) {
	held, err := s.srv.Budget.Acquire(s.srv.ctx, n)
	if err != nil {
		s.log.Warn("message not accepted for now: too many bytes in flight", "id", id, "from", s.from, "bytes", n, "err", err)
		return nil, errBusy
	}
	if held.Waited > 0 {
		s.log.Info("message waited for the in-flight budget", "id", id, "bytes", n, "waited", held.Waited.Round(time.Millisecond))
	}
	return held, nil
}

// bounce reports to an authenticated sender the recipients that turned out
// to be over quota at the end of data; the message was accepted for the
// others.
func (s *session) bounce(ctx context.Context, id string, now time.Time, data []byte, failures []queue.Failure) {
	cmd, queued, err := queue.BounceCommand(ctx, s.srv.Store, queue.Bounce{
		Hostname: s.srv.hostname(), Sender: s.from, QueueID: id, Arrival: now, Failures: failures, Original: data,
	}, now)
	if err == nil && cmd != nil {
		_, err = s.srv.Proposer.Apply(ctx, cmd)
	}
	if err != nil {
		s.log.Error("cannot send the over-quota bounce", "id", id, "err", err)
		return
	}
	for _, f := range failures {
		s.log.Info("recipient over quota at delivery; bounced", "id", id, "to", f.Recipient, "dsn_sent", cmd != nil)
	}
	if queued && s.srv.Enqueued != nil {
		s.srv.Enqueued()
	}
}

// sameAddress compares two addresses ASCII-case-insensitively. Unicode case
// folding (strings.EqualFold) would let "\u212a" stand for "k".
func sameAddress(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x >= 0x80 || y >= 0x80 {
			return false
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// hostnameSyntax reports whether d is a plausible DNS host name: labels of
// letters, digits and hyphens, at least two of them.
func hostnameSyntax(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
