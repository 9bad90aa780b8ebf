package manage

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"sigillo/appliance/bytesize"
	"sigillo/appliance/idn"
	"sigillo/appliance/passwd"
	"sigillo/storage"
)

// DefaultQuota is a new mailbox's quota when none is given (1 GiB).
const DefaultQuota = 1 << 30

// MinPasswordChars and MaxPasswordBytes bound a mailbox password: at
// least 8 characters (not bytes: "èèèè" is 4), at most 1 KiB.
const (
	MinPasswordChars = 8
	MaxPasswordBytes = 1024
)

// Named is what an operation that adds, changes or removes a domain or a
// mailbox answers: the name as stored (lowercase, xn-- labels), and its
// Unicode form when it has one, so that the user sees both.
type Named struct {
	Name    string `json:"name"`
	Unicode string `json:"unicode,omitempty"`
	// Warning is something the administrator should know about the change.
	Warning string `json:"warning,omitempty"`
}

func named(name string) Named { return Named{Name: name, Unicode: idn.Unicode(name)} }

// DomainInfo describes one hosted domain.
type DomainInfo struct {
	Name      string    `json:"name"`
	Unicode   string    `json:"unicode,omitempty"` // an internationalised name as typed (Name is its xn-- form)
	Mailboxes int       `json:"mailboxes"`
	Created   time.Time `json:"created"`
	PEC       bool      `json:"pec"`
}

// MailboxInfo describes one mailbox.
type MailboxInfo struct {
	Address    string `json:"address"`
	Unicode    string `json:"unicode,omitempty"` // with an internationalised domain
	QuotaBytes int64  `json:"quota_bytes"`
	UsedBytes  int64  `json:"used_bytes"`
}

// Names arrive as typed (bücher.example, Alice@Example.TEST) and are
// stored in ASCII: internationalised domains become their xn-- form here,
// before the command enters the log, so that every node applies the same
// name whatever its IDNA tables. Adding checks xn-- labels (strict);
// removing or listing takes a name as it was stored.

func domainName(name string, strict bool) (string, error) {
	d, err := idn.Domain(name, strict)
	return d, wrap(err, Invalid)
}

func addressName(addr string, strict bool) (string, error) {
	a, err := idn.Address(addr, strict)
	if err != nil {
		return "", wrap(err, Invalid)
	}
	return storage.NormalizeAddress(a), nil
}

func domainOf(address string) string {
	_, d, _ := storage.SplitAddress(address)
	return d
}

// actorDomain is the domain a DomainAdmin administers, in ASCII; "" if it
// is no domain.
func actorDomain(a DomainAdmin) string {
	d, err := idn.Domain(a.Domain, false)
	if err != nil {
		return ""
	}
	return d
}

// mayManage says whether a may administer the mailboxes of domain (ASCII).
func mayManage(a Actor, domain string) bool {
	switch a := a.(type) {
	case Operator:
		return true
	case DomainAdmin:
		return domain != "" && actorDomain(a) == domain
	}
	return false
}

func checkPassword(pw string) (string, error) {
	pw = strings.TrimRight(pw, "\r\n")
	if n := utf8.RuneCountInString(pw); n < MinPasswordChars {
		return "", invalid("password too short (%d characters): use at least %d", n, MinPasswordChars)
	}
	if len(pw) > MaxPasswordBytes {
		return "", invalid("password too long (%d bytes): use at most %d", len(pw), MaxPasswordBytes)
	}
	return pw, nil
}

func hashPassword(pw string) (string, error) {
	pw, err := checkPassword(pw)
	if err != nil {
		return "", err
	}
	hash, err := passwd.Hash(pw, passwd.Default())
	return hash, wrap(err, Unavailable)
}

// AddDomain hosts a new domain; PEC makes it a PEC domain.
type AddDomain struct {
	Name string
	PEC  bool
}

// AddDomain is for the operator.
func (m *Manager) AddDomain(ctx context.Context, a Actor, r AddDomain) (Named, error) {
	if err := operatorOnly(a, "adding a domain"); err != nil {
		return Named{}, err
	}
	name, err := domainName(r.Name, true)
	if err != nil {
		return Named{}, err
	}
	if _, err := m.Proposer.Apply(ctx, &storage.AddDomain{Name: name, At: m.now().Unix(), PEC: r.PEC}); err != nil {
		return Named{}, applyErr(err)
	}
	n := named(name)
	if r.PEC && m.NoGestore {
		n.Warning = "no PEC gestore runs on this server (no [signer] configured, or, for make run, no SoftHSM2): the domain gets ordinary mail until one does"
	}
	return n, nil
}

// RemoveDomain stops hosting a domain (the store refuses one that still
// has mailboxes).
type RemoveDomain struct{ Name string }

// RemoveDomain is for the operator.
func (m *Manager) RemoveDomain(ctx context.Context, a Actor, r RemoveDomain) (Named, error) {
	if err := operatorOnly(a, "removing a domain"); err != nil {
		return Named{}, err
	}
	name, err := domainName(r.Name, false)
	if err != nil {
		return Named{}, err
	}
	if _, err := m.Proposer.Apply(ctx, &storage.RemoveDomain{Name: name}); err != nil {
		return Named{}, applyErr(err)
	}
	return named(name), nil
}

// ListDomains lists the hosted domains an actor may see: all for the
// operator, their own for a domain admin; a user may not list domains.
func (m *Manager) ListDomains(ctx context.Context, a Actor) ([]DomainInfo, error) {
	if _, ok := a.(User); ok {
		return nil, forbidden("listing domains is for the operator and domain admins")
	}
	ds, err := m.Store.Domains(ctx)
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	out := []DomainInfo{}
	for _, d := range ds {
		if !mayManage(a, d.Name) {
			continue
		}
		out = append(out, DomainInfo{Name: d.Name, Unicode: idn.Unicode(d.Name), Mailboxes: d.Mailboxes, Created: d.CreatedAt, PEC: d.PEC})
	}
	return out, nil
}

// AddMailbox makes a mailbox. Quota is a size as typed (bytes, or 500M,
// 1.5G, 2T; 0 unlimited); empty means DefaultQuota.
type AddMailbox struct {
	Address  string
	Password string
	Quota    string
}

// AddMailbox is for the operator and the admin of the address's domain.
func (m *Manager) AddMailbox(ctx context.Context, a Actor, r AddMailbox) (Named, error) {
	addr, err := addressName(r.Address, true)
	if err != nil {
		return Named{}, err
	}
	if !mayManage(a, domainOf(addr)) {
		return Named{}, forbidden("you may not add mailboxes to %s", domainOf(addr))
	}
	pw, err := checkPassword(r.Password)
	if err != nil {
		return Named{}, err
	}
	quota := int64(DefaultQuota)
	if q := r.Quota; q != "" {
		if quota, err = bytesize.Parse(q); err != nil {
			return Named{}, invalid("quota %q: %v: give bytes, or a size with K, M, G or T (1024-based) like 500M, 1.5G or 2T (0: unlimited)", q, err)
		}
	}
	hash, err := hashPassword(pw)
	if err != nil {
		return Named{}, err
	}
	if _, err = m.Proposer.Apply(ctx, &storage.AddMailbox{Address: addr, PasswordHash: hash, QuotaBytes: quota, At: m.now().Unix()}); err != nil {
		return Named{}, applyErr(err)
	}
	return named(addr), nil
}

// SetPassword changes a mailbox's password.
type SetPassword struct {
	Address  string
	Password string
}

// SetPassword is for the operator, the admin of the address's domain and
// the mailbox's user.
func (m *Manager) SetPassword(ctx context.Context, a Actor, r SetPassword) (Named, error) {
	addr, err := addressName(r.Address, false)
	if err != nil {
		return Named{}, err
	}
	if !mayManage(a, domainOf(addr)) && !isUser(a, addr) {
		return Named{}, forbidden("you may not change the password of %s", addr)
	}
	hash, err := hashPassword(r.Password)
	if err != nil {
		return Named{}, err
	}
	if _, err = m.Proposer.Apply(ctx, &storage.SetPassword{Address: addr, PasswordHash: hash}); err != nil {
		return Named{}, applyErr(err)
	}
	return named(addr), nil
}

// userAddress is the address of a User in its stored form; "" for other
// actors.
func userAddress(a Actor) string {
	u, ok := a.(User)
	if !ok {
		return ""
	}
	own, err := addressName(u.Address, false)
	if err != nil {
		return ""
	}
	return own
}

// isUser says whether a is the user of addr (stored form).
func isUser(a Actor, addr string) bool {
	own := userAddress(a)
	return own != "" && own == addr
}

// RemoveMailbox deletes a mailbox and its mail.
type RemoveMailbox struct{ Address string }

// RemoveMailbox is for the operator and the admin of the address's domain.
func (m *Manager) RemoveMailbox(ctx context.Context, a Actor, r RemoveMailbox) (Named, error) {
	addr, err := addressName(r.Address, false)
	if err != nil {
		return Named{}, err
	}
	if !mayManage(a, domainOf(addr)) {
		return Named{}, forbidden("you may not remove mailboxes of %s", domainOf(addr))
	}
	if _, err := m.Proposer.Apply(ctx, &storage.RemoveMailbox{Address: addr}); err != nil {
		return Named{}, applyErr(err)
	}
	return named(addr), nil
}

// ListMailboxes lists the mailboxes of Domain, or of every domain when it
// is empty, that the actor may see: a domain admin only their domain's, a
// user only their own. Naming a domain the actor has no part in is
// refused (forbidden), so that no one learns which domains are hosted.
type ListMailboxes struct{ Domain string }

// ListMailboxes answers a ListMailboxes request.
func (m *Manager) ListMailboxes(ctx context.Context, a Actor, r ListMailboxes) ([]MailboxInfo, error) {
	domain := r.Domain
	if domain != "" {
		d, err := domainName(domain, false)
		if err != nil {
			return nil, err
		}
		domain = d
		// A user may name their own domain: their mailbox is all they see
		// of it.
		if !mayManage(a, domain) && !(userAddress(a) != "" && domainOf(userAddress(a)) == domain) {
			return nil, forbidden("you may not list the mailboxes of %s", domain)
		}
		local, err := m.Store.IsLocalDomain(ctx, domain)
		if err != nil {
			return nil, wrap(err, Unavailable)
		}
		if !local {
			return nil, refuse(NotFound, "no domain %s here (sigillo domain list shows the hosted ones)", domain)
		}
	}
	mbs, err := m.Store.Mailboxes(ctx, domain)
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	out := []MailboxInfo{}
	for _, mb := range mbs {
		if !mayManage(a, domainOf(mb.Address)) && !isUser(a, mb.Address) {
			continue
		}
		out = append(out, MailboxInfo{Address: mb.Address, Unicode: idn.Unicode(mb.Address), QuotaBytes: mb.QuotaBytes, UsedBytes: mb.UsedBytes})
	}
	return out, nil
}
