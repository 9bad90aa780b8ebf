package appliance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"sigillo/appliance/accounts"
	"sigillo/appliance/bytesize"
	"sigillo/appliance/config"
	"sigillo/appliance/control"
	"sigillo/appliance/idn"
	"sigillo/appliance/legallog"
	"sigillo/appliance/passwd"
	"sigillo/appliance/pec"
	"sigillo/appliance/pecdir"
	"sigillo/appliance/pop3d"
	"sigillo/appliance/scan"
	"sigillo/appliance/tlsmgr"
	"sigillo/raftfsm"
	"sigillo/storage"
)

// controlHandler answers the command line.
type controlHandler struct {
	store    *storage.Store
	proposer *raftfsm.Node
	ca       *tlsmgr.LocalCA
	now      func() time.Time
	scanner  *scan.Scanner // nil: scanning off
	acme     *tlsmgr.ACME  // nil: the local CA serves
	hostname string
	// noGestore: no [signer], so PEC domains get ordinary mail.
	noGestore bool
}

// CertStatus is what `sigillo cert status` prints.
type CertStatus struct {
	ACME      bool              `json:"acme"`
	Certs     []tlsmgr.CertInfo `json:"certificates"`
	LastError string            `json:"last_error,omitempty"`
	ErrorAt   time.Time         `json:"error_at,omitzero"`
}

// ScanInfo is what `sigillo scan status` prints.
type ScanInfo struct {
	Enabled  bool   `json:"enabled"`
	Address  string `json:"clamd,omitempty"`
	Required bool   `json:"required"`
	OK       bool   `json:"ok"`
	Version  string `json:"version,omitempty"` // clamd's VERSION: engine/signatures/date
	Error    string `json:"error,omitempty"`
	Infected int    `json:"virus_store"` // messages in the virus store
}

// DomainInfo and MailboxInfo are what list commands print.
type DomainInfo struct {
	Name      string    `json:"name"`
	Unicode   string    `json:"unicode,omitempty"` // an internationalised name as typed (Name is its xn-- form)
	Mailboxes int       `json:"mailboxes"`
	Created   time.Time `json:"created"`
	PEC       bool      `json:"pec"`
}

// MailboxInfo describes one mailbox for `sigillo mailbox list`.
type MailboxInfo struct {
	Address    string `json:"address"`
	Unicode    string `json:"unicode,omitempty"` // with an internationalised domain
	QuotaBytes int64  `json:"quota_bytes"`
	UsedBytes  int64  `json:"used_bytes"`
}

// Named is what a request that adds, changes or removes a domain or a
// mailbox answers: the name as stored (lowercase, xn-- labels), and its
// Unicode form when it has one, so that the command line shows both.
type Named struct {
	Name    string `json:"name"`
	Unicode string `json:"unicode,omitempty"`
	// Warning is something the administrator should know about the change.
	Warning string `json:"warning,omitempty"`
}

func named(name string) Named { return Named{Name: name, Unicode: idn.Unicode(name)} }

func (h *controlHandler) handle(ctx context.Context, req control.Request) (any, error) {
	arg := func(k string) string { return req.Args[k] }
	// Names arrive as typed (bücher.example, Alice@Example.TEST).
	if strings.HasPrefix(req.Op, "domain.") || strings.HasPrefix(req.Op, "mailbox.") {
		if err := asciiNames(req); err != nil {
			return nil, err
		}
	}
	switch req.Op {
	case "scan.status":
		return h.scanStatus(ctx)
	case "cert.status":
		return h.certStatus(), nil
	case "domain.add":
		pec := arg("pec") == "true"
		if _, err := h.proposer.Apply(ctx, &storage.AddDomain{Name: arg("name"), At: h.now().Unix(), PEC: pec}); err != nil {
			return nil, err
		}
		n := named(arg("name"))
		if pec && h.noGestore {
			n.Warning = "no PEC gestore runs on this server (no [signer] configured, or, for make run, no SoftHSM2): the domain gets ordinary mail until one does"
		}
		return n, nil
	case "domain.remove":
		if _, err := h.proposer.Apply(ctx, &storage.RemoveDomain{Name: arg("name")}); err != nil {
			return nil, err
		}
		return named(arg("name")), nil
	case "domain.list":
		ds, err := h.store.Domains(ctx)
		if err != nil {
			return nil, err
		}
		out := []DomainInfo{}
		for _, d := range ds {
			out = append(out, DomainInfo{Name: d.Name, Unicode: idn.Unicode(d.Name), Mailboxes: d.Mailboxes, Created: d.CreatedAt, PEC: d.PEC})
		}
		return out, nil
	case "mailbox.add":
		pw, err := checkPassword(arg("password"))
		if err != nil {
			return nil, err
		}
		quota := int64(DefaultQuota)
		if q := arg("quota"); q != "" {
			if quota, err = bytesize.Parse(q); err != nil {
				return nil, fmt.Errorf("quota %q: %v: give bytes, or a size with K, M, G or T (1024-based) like 500M, 1.5G or 2T (0: unlimited)", q, err)
			}
		}
		hash, err := passwd.Hash(pw, passwd.Default())
		if err != nil {
			return nil, err
		}
		if _, err = h.proposer.Apply(ctx, &storage.AddMailbox{Address: arg("address"), PasswordHash: hash, QuotaBytes: quota, At: h.now().Unix()}); err != nil {
			return nil, err
		}
		return named(arg("address")), nil
	case "mailbox.passwd":
		pw, err := checkPassword(arg("password"))
		if err != nil {
			return nil, err
		}
		hash, err := passwd.Hash(pw, passwd.Default())
		if err != nil {
			return nil, err
		}
		if _, err = h.proposer.Apply(ctx, &storage.SetPassword{Address: arg("address"), PasswordHash: hash}); err != nil {
			return nil, err
		}
		return named(arg("address")), nil
	case "mailbox.remove":
		if _, err := h.proposer.Apply(ctx, &storage.RemoveMailbox{Address: arg("address")}); err != nil {
			return nil, err
		}
		return named(arg("address")), nil
	case "mailbox.list":
		if d := arg("domain"); d != "" {
			local, err := h.store.IsLocalDomain(ctx, d)
			if err != nil {
				return nil, err
			}
			if !local {
				return nil, fmt.Errorf("no domain %s here (sigillo domain list shows the hosted ones)", d)
			}
		}
		mbs, err := h.store.Mailboxes(ctx, arg("domain"))
		if err != nil {
			return nil, err
		}
		out := []MailboxInfo{}
		for _, m := range mbs {
			out = append(out, MailboxInfo{Address: m.Address, Unicode: idn.Unicode(m.Address), QuotaBytes: m.QuotaBytes, UsedBytes: m.UsedBytes})
		}
		return out, nil
	case "queue.list":
		items, err := h.store.QueueItems(ctx, time.Time{})
		if err != nil {
			return nil, err
		}
		out := []QueueInfo{}
		for _, it := range items {
			out = append(out, QueueInfo{ID: it.ID, Sender: it.Sender, Recipients: it.Recipients, Size: it.Size,
				Created: it.CreatedAt, NextAttempt: it.NextAttempt, Attempts: it.Attempts, LastError: it.LastError})
		}
		return out, nil
	case "directory.import":
		return h.importDirectory(ctx, arg("ldif"))
	case "directory.list":
		ps, err := h.directory(ctx)
		if err != nil {
			return nil, err
		}
		out := []ProviderInfo{}
		for _, p := range ps {
			info := ProviderInfo{Name: p.Name, Unit: p.Unit, MailReceipt: p.MailReceipt, ManagedDomains: p.ManagedDomains}
			for _, c := range p.Certificates {
				info.CertificateSHA1 = append(info.CertificateSHA1, pecdir.SHA1Hex(c))
			}
			out = append(out, info)
		}
		return out, nil
	case "log.search":
		f, err := legallog.FilterFromArgs(req.Args)
		if err != nil {
			return nil, err
		}
		return legallog.Search(ctx, h.store, f)
	case "log.verify":
		// Each head is checked against the certificate it carries and, if
		// the caller sends trusted roots (PEM), chained to them.
		roots, err := legallog.RootsFromPEM(arg("roots"))
		if err != nil {
			return nil, err
		}
		return legallog.Verify(ctx, h.store, roots)
	case "ca.export":
		return string(h.ca.RootPEM()), nil
	case "status":
		idx, err := h.store.AppliedIndex(ctx)
		if err != nil {
			return nil, err
		}
		return map[string]any{"version": Version, "leader": h.proposer.IsLeader(), "applied_index": idx}, nil
	}
	return nil, fmt.Errorf("unknown request %q", req.Op)
}

// asciiNames puts the names of a domain or mailbox request in the form
// stored: internationalised domains become their xn-- form here, before
// the command enters the log, so that every node applies the same ASCII
// name whatever its IDNA tables. Adding checks xn-- labels; removing or
// listing takes a name as it was stored.
func asciiNames(req control.Request) error {
	strict := req.Op == "domain.add" || req.Op == "mailbox.add"
	if name, ok := req.Args["name"]; ok {
		d, err := idn.Domain(name, strict)
		if err != nil {
			return err
		}
		req.Args["name"] = d
	}
	if domain := req.Args["domain"]; domain != "" {
		d, err := idn.Domain(domain, false)
		if err != nil {
			return err
		}
		req.Args["domain"] = d
	}
	if address, ok := req.Args["address"]; ok {
		a, err := idn.Address(address, strict)
		if err != nil {
			return err
		}
		req.Args["address"] = storage.NormalizeAddress(a)
	}
	return nil
}

// DatabaseFile is the store's database in cfg's data directory. The
// command line reads it directly (read-only) when no server answers on the
// control socket.
func DatabaseFile(cfg config.Config) string { return filepath.Join(cfg.DataDir, "sigillo.db") }

// DefaultQuota is a new mailbox's quota when none is given (1 GiB).
const DefaultQuota = 1 << 30

// MinPasswordChars and MaxPasswordBytes bound a mailbox password: at
// least 8 characters (not bytes: "èèèè" is 4), at most 1 KiB.
const (
	MinPasswordChars = 8
	MaxPasswordBytes = 1024
)

func checkPassword(pw string) (string, error) {
	pw = strings.TrimRight(pw, "\r\n")
	if n := utf8.RuneCountInString(pw); n < MinPasswordChars {
		return "", fmt.Errorf("password too short (%d characters): use at least %d", n, MinPasswordChars)
	}
	if len(pw) > MaxPasswordBytes {
		return "", fmt.Errorf("password too long (%d bytes): use at most %d", len(pw), MaxPasswordBytes)
	}
	return pw, nil
}

// ProviderInfo describes one gestore for `sigillo directory list`.
type ProviderInfo struct {
	Name            string   `json:"name"`
	Unit            string   `json:"unit,omitempty"`
	MailReceipt     string   `json:"mail_receipt"`
	ManagedDomains  []string `json:"managed_domains"`
	CertificateSHA1 []string `json:"certificate_sha1,omitempty"`
}

func (h *controlHandler) directory(ctx context.Context) ([]pecdir.Provider, error) {
	data, err := h.store.KV(ctx, pec.DirectoryKey)
	if storage.IsCode(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return pecdir.ParseLDIF(bytes.NewReader(data))
}

// importDirectory merges the providers of an LDIF file into the directory:
// an entry replaces the one with the same name and unit (a renewed
// certificate), others are added. The file is refused whole if any entry
// is invalid.
func (h *controlHandler) importDirectory(ctx context.Context, ldif string) (any, error) {
	incoming, err := pecdir.ParseLDIF(strings.NewReader(ldif))
	if err != nil {
		return nil, fmt.Errorf("directory import: %w", err)
	}
	if len(incoming) == 0 {
		return nil, errors.New("directory import: no provider entry in the file")
	}
	current, err := h.directory(ctx)
	if err != nil {
		return nil, fmt.Errorf("directory import: the stored directory: %w", err)
	}
	key := func(p pecdir.Provider) string { return p.Name + "\x00" + p.Unit }
	replaced := map[string]bool{}
	for _, p := range incoming {
		replaced[key(p)] = true
	}
	merged := append([]pecdir.Provider(nil), incoming...)
	for _, p := range current {
		if !replaced[key(p)] {
			merged = append(merged, p)
		}
	}
	var buf bytes.Buffer
	if err := pecdir.WriteLDIF(&buf, merged); err != nil {
		return nil, fmt.Errorf("directory import: %w", err)
	}
	if _, err := h.proposer.Apply(ctx, &storage.PutKV{Key: pec.DirectoryKey, Value: buf.Bytes()}); err != nil {
		return nil, err
	}
	return map[string]int{"imported": len(incoming), "total": len(merged)}, nil
}

// QueueInfo describes one outbound message for `sigillo queue list`.
type QueueInfo struct {
	ID          string    `json:"id"`
	Sender      string    `json:"sender"`
	Recipients  []string  `json:"recipients"`
	Size        int64     `json:"size"`
	Created     time.Time `json:"created"`
	NextAttempt time.Time `json:"next_attempt"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error,omitempty"`
}

// pop3Backend serves a mailbox's INBOX to POP3 sessions.
type pop3Backend struct {
	store    *storage.Store
	proposer storage.Proposer
	auth     *accounts.Authenticator // Check only: pop3d applies the limiter
}

func (b pop3Backend) Login(ctx context.Context, username, password string) (pop3d.Maildrop, error) {
	mb, err := b.auth.Check(ctx, username, password)
	if errors.Is(err, accounts.ErrAuthFailed) {
		return nil, pop3d.ErrAuthFailed
	}
	if err != nil {
		return nil, err
	}
	inbox, err := b.store.FolderByName(ctx, mb.ID, "INBOX")
	if err != nil {
		return nil, err
	}
	return &maildrop{b: b, folder: inbox}, nil
}

type maildrop struct {
	b      pop3Backend
	folder storage.Folder
	shaOf  map[string]string
}

// The POP3 unique id is UIDVALIDITY.UID, stable across sessions, so a
// client that leaves mail on the server never downloads it twice.
func (m *maildrop) uidl(uid uint32) string {
	return fmt.Sprintf("%d.%d", m.folder.UIDValidity, uid)
}

func (m *maildrop) Messages(ctx context.Context) ([]pop3d.Message, error) {
	msgs, err := m.b.store.Messages(ctx, m.folder.ID)
	if err != nil {
		return nil, err
	}
	m.shaOf = map[string]string{}
	out := make([]pop3d.Message, 0, len(msgs))
	for _, msg := range msgs {
		id := m.uidl(msg.UID)
		m.shaOf[id] = msg.SHA256
		out = append(out, pop3d.Message{UID: id, Size: msg.Size})
	}
	return out, nil
}

func (m *maildrop) Open(ctx context.Context, uid string) (io.ReadCloser, error) {
	sha, ok := m.shaOf[uid]
	if !ok {
		return nil, pop3d.ErrNoSuchMessage
	}
	data, err := m.b.store.Content(ctx, sha)
	if storage.IsCode(err, storage.ErrNotFound) {
		return nil, pop3d.ErrNoSuchMessage
	}
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (m *maildrop) Delete(ctx context.Context, uids []string) error {
	list, err := parseUIDLs(uids)
	if err != nil {
		return err
	}
	_, err = m.b.proposer.Apply(ctx, &storage.Expunge{FolderID: m.folder.ID, UIDs: list})
	return err
}

// MarkSeen implements pop3d.SeenMarker.
func (m *maildrop) MarkSeen(ctx context.Context, uids []string) error {
	list, err := parseUIDLs(uids)
	if err != nil {
		return err
	}
	_, err = m.b.proposer.Apply(ctx, &storage.StoreFlags{FolderID: m.folder.ID, UIDs: list, Mode: storage.FlagsAdd, Flags: []string{`\Seen`}})
	return err
}

func parseUIDLs(uids []string) ([]uint32, error) {
	var list []uint32
	for _, id := range uids {
		_, u, ok := strings.Cut(id, ".")
		n, err := strconv.ParseUint(u, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("bad message id %q", id)
		}
		list = append(list, uint32(n))
	}
	return list, nil
}

func (m *maildrop) Close() error { return nil }

func (h *controlHandler) scanStatus(ctx context.Context) (ScanInfo, error) {
	info := ScanInfo{}
	n, err := h.store.VirusStoreCount(ctx)
	if err != nil {
		return info, err
	}
	info.Infected = n
	if h.scanner == nil {
		return info, nil
	}
	st := h.scanner.Status()
	info.Enabled, info.Address, info.Required = true, st.Address, st.Required
	v, err := h.scanner.Version(ctx)
	if err != nil {
		info.Error = err.Error()
		return info, nil
	}
	info.OK, info.Version = true, v
	return info, nil
}

func (h *controlHandler) certStatus() CertStatus {
	if h.acme != nil {
		certs, lastErr, at := h.acme.Status()
		return CertStatus{ACME: true, Certs: certs, LastError: lastErr, ErrorAt: at}
	}
	info := tlsmgr.CertInfo{Name: h.hostname, Source: "local CA"}
	if c, err := h.ca.GetCertificate(&tls.ClientHelloInfo{ServerName: h.hostname}); err == nil && c != nil && len(c.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			info.Issuer, info.NotBefore, info.NotAfter = leaf.Issuer.String(), leaf.NotBefore, leaf.NotAfter
		}
	}
	return CertStatus{Certs: []tlsmgr.CertInfo{info}}
}
