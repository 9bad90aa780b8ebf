// Package pec is the PEC gestore (Italian certified email, RFC 6109 and the
// rules summarised in PEC.md): the access point that checks what a user of a
// PEC domain submits and answers with a ricevuta di accettazione or an
// avviso di non accettazione and the busta di trasporto; the reception point
// that verifies what arrives for a PEC domain (signature, origin in the
// providers directory, validity, format), emits the presa in carico and
// wraps anything else in a busta di anomalia; the delivery point that stores
// a busta in the mailbox and emits the ricevuta di avvenuta consegna
// (completa, breve or sintetica) or the avviso di mancata consegna; and the
// leader's timer for the 12 h and 24 h notices.
//
// Every system message is S/MIME signed with the gestore key through a
// Signer (package signer, PKCS#11). The package does not talk SMTP or touch
// the database: each transaction is turned into one storage.Batch (the
// messages to store or queue, the legal log events, the tracking changes)
// that the caller applies through raft before answering the client, so that
// a receipt, its log entry and the message it certifies are committed
// together or not at all. One time reference is taken per transaction and
// used in every date, text, daticert and log entry of it (PEC.md §2.4).
//
// It does not scan for viruses (package scan will, at the call sites marked
// in access.go and reception.go), fetch CRLs or OCSP, or publish the
// gestore's own directory entry.
package pec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/mail"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"sigillo/appliance/pecdir"
	"sigillo/appliance/queue"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// DirectoryKey is the replicated key holding the providers directory as
// LDIF (what `sigillo directory import` writes).
const DirectoryKey = "pec/directory.ldif"

// Store is what the gestore reads from the replicated state.
type Store interface {
	MailboxByAddress(ctx context.Context, address string) (storage.Mailbox, error)
	DomainKinds(ctx context.Context) (map[string]bool, error)
	KV(ctx context.Context, key string) ([]byte, error)
	// TrackedMessage is the tracking of a busta we sent to other
	// gestori, one entry per recipient.
	TrackedMessage(ctx context.Context, msgid string) ([]storage.Tracked, error)
	// AlreadyReceived tells a busta taken in charge before for recipient
	// (and a submission accepted before from a sender, by its
	// submissionKey).
	AlreadyReceived(ctx context.Context, msgid, recipient string) (bool, error)
}

// Gestore is one PEC provider: its name, service address, signing key and
// the state it reads. Set the fields, then use it from any goroutine.
type Gestore struct {
	Provider string // provider_name: gestore-emittente in daticert
	Service  string // service address: From of every system message, and a mailbox
	Signer   Signer
	// Chain is the gestore certificate and its CA chain: our own signature
	// is trusted without a directory entry.
	Chain []*x509.Certificate
	// Roots are extra trust anchors for other gestori's chains (a CA such
	// as AgID CA1's root); the certificates of the providers directory are
	// anchors too.
	Roots *x509.CertPool
	Store Store
	// MaxBytes bounds size × recipients of a submission (DM 2/11/2005
	// art. 12: at least 30 MB).
	MaxBytes int64
	Now      func() time.Time
	Logger   *slog.Logger

	mu       sync.Mutex
	dirSum   [32]byte
	dirCache *pecdir.Directory
	dirRoots *x509.CertPool
}

func (g *Gestore) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Gestore) logger() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

func (g *Gestore) serviceDomain() string {
	_, d, _ := storage.SplitAddress(g.Service)
	return d
}

// Transaction is one SMTP transaction handed to the gestore, after DATA.
type Transaction struct {
	Sender     string   // the reverse-path
	Recipients []string // the forward-paths this gestore handles
	// Data is the message as received, with the Received: field the SMTP
	// server prepended.
	Data []byte
	// Inbound: it came from another server (port 25), not from one of our
	// users. TLS: over a TLS connection.
	Inbound, TLS bool
	// Virus is the signature the scanner found in Data, or "".
	Virus string
	// Dedupe identifies a submission as the client sent it (its
	// Message-ID and the SHA-256 of its bytes, without the Received:
	// field of each attempt); nil, or without a Message-ID, there is no
	// check. A submission accepted before from the same sender is
	// acknowledged again without a second accettazione or busta: the
	// client's retry after a 250 it never saw (a leader's failover).
	Dedupe *storage.Dedupe
}

// Reply is an SMTP reply other than 250, for the caller to give once the
// batch (if any) is applied.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// Outcome is what the gestore made of a transaction.
type Outcome struct {
	// Batch is to be applied through raft before answering; nil when
	// there is nothing to store.
	Batch *storage.Batch
	// Reply, when set, is the answer to give instead of 250.
	Reply *Reply
	// Queued: Batch puts something on the outbound queue.
	Queued bool
	// ID is the PEC identificativo of the transaction, if one was made.
	ID      string
	Summary string // for the log line
}

// ErrUnavailable wraps failures of a dependency (store, signer): the
// client should get a temporary error and retry.
var ErrUnavailable = errors.New("pec: temporarily unavailable")

func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// directory returns the providers directory and the trust anchors made of
// its certificates, parsing the stored LDIF again only when it changed.
func (g *Gestore) directory(ctx context.Context) (*pecdir.Directory, *x509.CertPool, error) {
	raw, err := g.Store.KV(ctx, DirectoryKey)
	if storage.IsCode(err, storage.ErrNotFound) {
		raw, err = nil, nil
	}
	if err != nil {
		return nil, nil, unavailable("reading the providers directory", err)
	}
	sum := sha256.Sum256(raw)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dirCache != nil && sum == g.dirSum {
		return g.dirCache, g.dirRoots, nil
	}
	var ps []pecdir.Provider
	if len(raw) > 0 {
		ps, err = pecdir.ParseLDIF(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, unavailable("parsing the providers directory", err)
		}
	}
	pool := x509.NewCertPool()
	if g.Roots != nil {
		pool = g.Roots.Clone()
	}
	for _, p := range ps {
		for _, c := range p.Certificates {
			pool.AddCert(c)
		}
	}
	for _, c := range g.Chain {
		pool.AddCert(c)
	}
	g.dirSum, g.dirCache, g.dirRoots = sum, pecdir.New(ps), pool
	return g.dirCache, pool, nil
}

// domains tells which domains are hosted here and which of them are PEC.
type domains struct {
	hosted map[string]bool // name → PEC
}

func (g *Gestore) domains(ctx context.Context) (domains, error) {
	ds, err := g.Store.DomainKinds(ctx)
	if err != nil {
		return domains{}, unavailable("listing domains", err)
	}
	return domains{hosted: ds}, nil
}

func domainOf(addr string) string {
	_, d, _ := storage.SplitAddress(addr)
	return d
}

// IsPECAddress reports whether mail to addr is handled by this gestore as
// certified mail: its domain is a PEC domain hosted here, or it is the
// service address.
func (g *Gestore) IsPECAddress(ctx context.Context, addr string) (bool, error) {
	if strings.EqualFold(addr, g.Service) {
		return true, nil
	}
	ds, err := g.domains(ctx)
	if err != nil {
		return false, err
	}
	return ds.hosted[domainOf(storage.NormalizeAddress(addr))], nil
}

// certified reports whether addr is a certified (PEC) recipient: one of our
// PEC domains, or a domain the directory lists (RFC 6109 §2.2.1).
func certified(addr string, ds domains, dir *pecdir.Directory) bool {
	d := domainOf(storage.NormalizeAddress(addr))
	return ds.hosted[d] || dir.IsPEC(d)
}

// plan collects what one transaction stores.
type plan struct {
	batch  storage.Batch
	queued bool
}

func (p *plan) log(e peclog.Entry) { p.batch.Log = append(p.batch.Log, e) }

// send stores a system message for its recipients: local mailboxes get it
// with a Return-Path: field, the others through the outbound queue (over TLS
// only when requireTLS). A local recipient without a mailbox is skipped
// with a warning (a receipt for a mailbox removed meanwhile).
func (g *Gestore) send(ctx context.Context, p *plan, ds domains, envFrom string, to []string, data []byte, at time.Time, requireTLS bool) error {
	var targets []storage.Target
	var remote []string
	for _, r := range to {
		if _, hosted := ds.hosted[domainOf(storage.NormalizeAddress(r))]; !hosted {
			remote = append(remote, r)
			continue
		}
		mb, err := g.Store.MailboxByAddress(ctx, r)
		if storage.IsCode(err, storage.ErrNotFound) {
			g.logger().Warn("pec: no mailbox for a system message; dropped", "to", r)
			continue
		}
		if err != nil {
			return unavailable("looking up "+r, err)
		}
		targets = append(targets, storage.Target{MailboxID: mb.ID})
	}
	if len(targets) > 0 {
		local := append([]byte("Return-Path: <"+envFrom+">\r\n"), data...)
		p.batch.Deliveries = append(p.batch.Deliveries, &storage.Deliver{Targets: targets, InternalDate: at.Unix(), Data: local})
	}
	if len(remote) > 0 {
		p.batch.Deliveries = append(p.batch.Deliveries, &storage.Deliver{InternalDate: at.Unix(), Data: data,
			Outbound: &storage.Outbound{ID: queue.NewID(), Sender: envFrom, Recipients: remote, NextAttempt: at.Unix(), RequireTLS: requireTLS}})
		p.queued = true
	}
	return nil
}

// ---- reading the original message ----

// original is what the gestore reads from a message's header.
type original struct {
	raw        []byte
	fields     []rawField
	from       []*mail.Address
	fromErr    error
	to, cc     []*mail.Address
	toErr      error
	ccErr      error
	bcc        string
	subjectRaw string
	subject    string // decoded
	msgID      string // with angle brackets
	replyTo    string
	tipo       string // X-TipoRicevuta requested: completa, breve, sintetica
}

func readOriginal(data []byte) *original {
	o := &original{raw: data, fields: rawFields(data)}
	get := func(name string) string {
		for _, f := range o.fields {
			if strings.EqualFold(f.name, name) {
				return f.value()
			}
		}
		return ""
	}
	// Encoded words in UTF-8, ISO-8859-1, US-ASCII, Windows-1252 and
	// ISO-8859-15; in addresses, any charset (the display name does not
	// matter, and an unknown charset must not make a From unreadable).
	wordDecoder := &mime.WordDecoder{CharsetReader: charsetReader}
	parser := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: lenientCharsetReader}}
	if v := get("From"); v != "" {
		o.from, o.fromErr = parser.ParseList(v)
	} else {
		o.fromErr = errors.New("no From: field")
	}
	if v := get("To"); v != "" {
		o.to, o.toErr = parser.ParseList(v)
	} else {
		o.toErr = errors.New("no To: field")
	}
	if v := get("Cc"); v != "" {
		o.cc, o.ccErr = parser.ParseList(v)
	}
	for _, f := range o.fields {
		if strings.EqualFold(f.name, "Bcc") && strings.TrimSpace(f.value()) != "" {
			o.bcc = f.value()
		}
	}
	o.subjectRaw = get("Subject")
	o.subject = o.subjectRaw
	if dec, err := wordDecoder.DecodeHeader(o.subjectRaw); err == nil {
		o.subject = dec
	}
	o.subject = oneLine(o.subject)
	o.msgID = normalizeMsgID(get("Message-ID"))
	// risposte is the Reply-To's addresses, as gestori write it.
	if v := get("Reply-To"); v != "" {
		if as, err := parser.ParseList(v); err == nil && len(as) > 0 {
			o.replyTo = strings.Join(addrList(as), ", ")
		} else {
			o.replyTo = oneLine(v)
		}
	}
	switch t := strings.ToLower(strings.TrimSpace(get("X-TipoRicevuta"))); t {
	case "breve", "sintetica":
		o.tipo = t
	default:
		o.tipo = "completa"
	}
	return o
}

// oneLine makes s valid UTF-8 (bytes that are not UTF-8 taken as
// Windows-1252, which covers ISO-8859-1, as 8-bit headers from old clients
// are) on one line: control characters become spaces. What it returns can
// go in a text, a daticert and the log without changing their layout.
func oneLine(s string) string {
	if !utf8.ValidString(s) {
		s = decodeCP1252Invalid(s)
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// normalizeMsgID returns the msg-id of a Message-ID field value with its
// angle brackets (RFC 5322 §3.6.4; PEC.md §3.4.1): the first <...> in it,
// or the first word bracketed when a client left them out; nothing that
// could break a header line or the log (spaces, control characters,
// invalid UTF-8). "" when there is none.
func normalizeMsgID(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexByte(v, '<'); i >= 0 {
		v = v[i+1:]
		if j := strings.IndexByte(v, '>'); j >= 0 {
			v = v[:j]
		}
	} else if fs := strings.Fields(v); len(fs) > 0 {
		v = fs[0]
	}
	v = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == utf8.RuneError {
			return -1
		}
		return r
	}, strings.ToValidUTF8(v, ""))
	if v == "" {
		return ""
	}
	return "<" + v + ">"
}

// inCc reports whether addr is among the Cc: recipients and not the To:
// ones (an ambiguous recipient is primary, RFC 6109 §3.3.2.1: so is every
// recipient when To: or Cc: cannot be read).
func (o *original) inCc(addr string) bool {
	if o.toErr != nil || o.ccErr != nil {
		return false
	}
	for _, a := range o.to {
		if strings.EqualFold(a.Address, addr) {
			return false
		}
	}
	for _, a := range o.cc {
		if strings.EqualFold(a.Address, addr) {
			return true
		}
	}
	return false
}

// rawField is one header field as it is on the wire, continuation lines
// included.
type rawField struct {
	name string
	raw  []byte // "Name: value\r\n ...\r\n"
}

func (f rawField) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// rawFields splits the header of data into its fields, each with its
// continuation lines, exactly as they are.
func rawFields(data []byte) []rawField {
	var out []rawField
	pos := 0
	for pos < len(data) {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data) - pos - 1
		}
		line := data[pos : pos+end+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			last := &out[len(out)-1]
			last.raw = data[pos-len(last.raw) : pos+len(line)]
		} else {
			name, _, _ := bytes.Cut(line, []byte(":"))
			out = append(out, rawField{name: strings.TrimSpace(string(name)), raw: line})
		}
		pos += len(line)
	}
	return out
}

// withMessageID returns data with its Message-ID: fields replaced by
// "Message-ID: <id>" and X-Riferimento-Message-ID: carrying the client's
// msgid (PEC.md §3.4.1), both at the top of the header.
func withMessageID(data []byte, id, origMsgID string) []byte {
	var out bytes.Buffer
	out.Grow(len(data) + 200)
	out.WriteString("Message-ID: <" + id + ">\r\n")
	if origMsgID != "" {
		out.WriteString("X-Riferimento-Message-ID: " + origMsgID + "\r\n")
	}
	n := 0
	for _, f := range rawFields(data) {
		n += len(f.raw)
		if !strings.EqualFold(f.name, "Message-ID") && !strings.EqualFold(f.name, "X-Riferimento-Message-ID") {
			out.Write(f.raw)
		}
	}
	out.Write(data[n:])
	return out.Bytes()
}

func addrList(as []*mail.Address) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Address)
	}
	return out
}
