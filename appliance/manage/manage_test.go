package manage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/manage"
	"sigillo/appliance/passwd"
	"sigillo/appliance/pecdir"
	"sigillo/storage"
)

// newManager is a Manager on a real store, applying through the test
// proposer (each command at the next log index, as the raft FSM would).
func newManager(t *testing.T) (*manage.Manager, *apptest.Proposer) {
	t.Helper()
	s, err := storage.Open(filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	p := apptest.NewProposer(s)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &manage.Manager{Store: s, Proposer: p, Now: func() time.Time { return now }, Version: "test"}, p
}

var op = manage.Operator{}

// refused fails t unless err is a refusal with code whose message holds
// want.
func refused(t *testing.T, what string, err error, code manage.Code, want string) {
	t.Helper()
	var e *manage.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %v (%T), want a %s refusal", what, err, err, code)
	}
	if e.Code != code || !strings.Contains(e.Message, want) {
		t.Fatalf("%s: %s %q, want %s saying %q", what, e.Code, e.Message, code, want)
	}
}

// must is an operation's value, failing t if it failed:
// must(m.AddDomain(...))(t).
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

const pw = "a long password"

// TestRefusalCodesMapToEveryTransport: each code has one HTTP status and
// one exit status, and other failures are "unavailable".
func TestRefusalCodesMapToEveryTransport(t *testing.T) {
	for _, c := range []struct {
		code       manage.Code
		http, exit int
	}{
		{manage.Invalid, 400, 65},
		{manage.NotFound, 404, 66},
		{manage.Conflict, 409, 73},
		{manage.Forbidden, 403, 77},
		{manage.Unavailable, 503, 75},
	} {
		if got := c.code.HTTPStatus(); got != c.http {
			t.Errorf("%s: HTTP %d, want %d", c.code, got, c.http)
		}
		if got := c.code.ExitStatus(); got != c.exit {
			t.Errorf("%s: exit %d, want %d", c.code, got, c.exit)
		}
		err := error(&manage.Error{Code: c.code, Message: "m"})
		if got := manage.CodeOf(err); got != c.code {
			t.Errorf("CodeOf(%s refusal) = %s", c.code, got)
		}
	}
	if got := manage.CodeOf(errors.New("disk on fire")); got != manage.Unavailable {
		t.Errorf("CodeOf(a plain error) = %s, want unavailable", got)
	}
}

// TestDomains: names as typed become their stored form, a PEC domain
// warns when no gestore runs, the store's refusals keep their message and
// gain a code, and only the operator adds or removes domains.
func TestDomains(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	m.NoGestore = true

	n := must(m.AddDomain(ctx, op, manage.AddDomain{Name: "Bücher.Example"}))(t)
	if n.Name != "xn--bcher-kva.example" || n.Unicode != "bücher.example" || n.Warning != "" {
		t.Fatalf("added %+v", n)
	}
	n = must(m.AddDomain(ctx, op, manage.AddDomain{Name: "pec.test", PEC: true}))(t)
	if !strings.Contains(n.Warning, "no PEC gestore runs on this server") {
		t.Fatalf("PEC domain without a gestore: warning %q", n.Warning)
	}
	_, err := m.AddDomain(ctx, op, manage.AddDomain{Name: "pec.test"})
	refused(t, "adding pec.test twice", err, manage.Conflict, "pec.test")
	_, err = m.AddDomain(ctx, op, manage.AddDomain{Name: "bad..name"})
	refused(t, "adding bad..name", err, manage.Invalid, "")
	_, err = m.AddDomain(ctx, manage.DomainAdmin{Domain: "pec.test"}, manage.AddDomain{Name: "c.test"})
	refused(t, "a domain admin adding a domain", err, manage.Forbidden, "operator")

	ds := must(m.ListDomains(ctx, op))(t)
	if len(ds) != 2 || ds[0].Name != "pec.test" && ds[1].Name != "pec.test" {
		t.Fatalf("operator's list %+v", ds)
	}
	ds = must(m.ListDomains(ctx, manage.DomainAdmin{Domain: "bücher.example"}))(t)
	if len(ds) != 1 || ds[0].Name != "xn--bcher-kva.example" {
		t.Fatalf("bücher.example admin's list %+v, want only their domain", ds)
	}
	_, err = m.ListDomains(ctx, manage.User{Address: "a@pec.test"})
	refused(t, "a user listing domains", err, manage.Forbidden, "")

	must(m.AddMailbox(ctx, op, manage.AddMailbox{Address: "a@pec.test", Password: pw}))(t)
	_, err = m.RemoveDomain(ctx, op, manage.RemoveDomain{Name: "pec.test"})
	refused(t, "removing a domain with mailboxes", err, manage.Conflict, "")
	_, err = m.RemoveDomain(ctx, op, manage.RemoveDomain{Name: "none.test"})
	refused(t, "removing an unknown domain", err, manage.NotFound, "")
	_, err = m.RemoveDomain(ctx, manage.DomainAdmin{Domain: "bücher.example"}, manage.RemoveDomain{Name: "bücher.example"})
	refused(t, "a domain admin removing their domain", err, manage.Forbidden, "")
	n = must(m.RemoveDomain(ctx, op, manage.RemoveDomain{Name: "BÜCHER.example"}))(t)
	if n.Name != "xn--bcher-kva.example" {
		t.Fatalf("removed %+v", n)
	}
}

// TestMailboxRules: the password's length in characters, the default and
// typed quotas, and the address's stored form.
func TestMailboxRules(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	must(m.AddDomain(ctx, op, manage.AddDomain{Name: "a.test"}))(t)

	_, err := m.AddMailbox(ctx, op, manage.AddMailbox{Address: "x@a.test", Password: "èèèèèèè"})
	refused(t, "7 characters", err, manage.Invalid, "password too short (7 characters): use at least 8")
	_, err = m.AddMailbox(ctx, op, manage.AddMailbox{Address: "x@a.test", Password: strings.Repeat("x", 1025)})
	refused(t, "1025 bytes", err, manage.Invalid, "password too long (1025 bytes): use at most 1024")
	_, err = m.AddMailbox(ctx, op, manage.AddMailbox{Address: "x@a.test", Password: pw, Quota: "lots"})
	refused(t, "quota lots", err, manage.Invalid, `quota "lots"`)
	_, err = m.AddMailbox(ctx, op, manage.AddMailbox{Address: "x@none.test", Password: pw})
	refused(t, "a mailbox of an unknown domain", err, manage.NotFound, "")

	// 8 characters in 16 bytes is long enough; the line end is not part of
	// the password.
	must(m.AddMailbox(ctx, op, manage.AddMailbox{Address: "Alice@A.Test", Password: "èèèèèèèè\n"}))(t)
	must(m.AddMailbox(ctx, op, manage.AddMailbox{Address: "bob@a.test", Password: pw, Quota: "1.5G"}))(t)
	must(m.AddMailbox(ctx, op, manage.AddMailbox{Address: "carol@a.test", Password: pw, Quota: "0"}))(t)
	_, err = m.AddMailbox(ctx, op, manage.AddMailbox{Address: "bob@a.test", Password: pw})
	refused(t, "bob twice", err, manage.Conflict, "")

	quota := map[string]int64{}
	for _, mb := range must(m.ListMailboxes(ctx, op, manage.ListMailboxes{Domain: "A.TEST"}))(t) {
		quota[mb.Address] = mb.QuotaBytes
	}
	want := map[string]int64{"alice@a.test": manage.DefaultQuota, "bob@a.test": 3 << 29, "carol@a.test": 0}
	if len(quota) != len(want) {
		t.Fatalf("mailboxes %v, want %v", quota, want)
	}
	for a, q := range want {
		if quota[a] != q {
			t.Errorf("%s: quota %d, want %d", a, quota[a], q)
		}
	}
	mb, err := m.Store.MailboxByAddress(ctx, "alice@a.test")
	if err != nil || !passwd.Verify(mb.PasswordHash, "èèèèèèèè") {
		t.Fatalf("alice's password does not verify (%v)", err)
	}
	_, err = m.ListMailboxes(ctx, op, manage.ListMailboxes{Domain: "b.test"})
	refused(t, "listing b.test", err, manage.NotFound, "no domain b.test here (sigillo domain list shows the hosted ones)")
	_, err = m.RemoveMailbox(ctx, op, manage.RemoveMailbox{Address: "nobody@a.test"})
	refused(t, "removing nobody", err, manage.NotFound, "")
	must(m.RemoveMailbox(ctx, op, manage.RemoveMailbox{Address: "carol@a.test"}))(t)
}

// TestActors: a domain admin manages their domain's mailboxes only, a
// user changes only their own password and sees only their own mailbox.
func TestActors(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	for _, d := range []string{"a.test", "b.test"} {
		must(m.AddDomain(ctx, op, manage.AddDomain{Name: d}))(t)
	}
	admin := manage.DomainAdmin{Domain: "A.test"}
	must(m.AddMailbox(ctx, admin, manage.AddMailbox{Address: "ann@a.test", Password: pw}))(t)
	must(m.AddMailbox(ctx, admin, manage.AddMailbox{Address: "al@a.test", Password: pw}))(t)
	must(m.AddMailbox(ctx, op, manage.AddMailbox{Address: "ben@b.test", Password: pw}))(t)

	_, err := m.AddMailbox(ctx, admin, manage.AddMailbox{Address: "eve@b.test", Password: pw})
	refused(t, "a.test's admin adding on b.test", err, manage.Forbidden, "b.test")
	_, err = m.RemoveMailbox(ctx, admin, manage.RemoveMailbox{Address: "ben@b.test"})
	refused(t, "a.test's admin removing on b.test", err, manage.Forbidden, "b.test")
	_, err = m.SetPassword(ctx, admin, manage.SetPassword{Address: "ben@b.test", Password: pw + "!"})
	refused(t, "a.test's admin changing ben's password", err, manage.Forbidden, "ben@b.test")
	_, err = m.ListMailboxes(ctx, admin, manage.ListMailboxes{Domain: "b.test"})
	refused(t, "a.test's admin listing b.test", err, manage.Forbidden, "b.test")
	// The admin of a domain that is a suffix of another is not its admin.
	_, err = m.AddMailbox(ctx, manage.DomainAdmin{Domain: "test"}, manage.AddMailbox{Address: "x@a.test", Password: pw})
	refused(t, "test's admin adding on a.test", err, manage.Forbidden, "")

	addrs := func(a manage.Actor, domain string) string {
		t.Helper()
		var out []string
		for _, mb := range must(m.ListMailboxes(ctx, a, manage.ListMailboxes{Domain: domain}))(t) {
			out = append(out, mb.Address)
		}
		return strings.Join(out, " ")
	}
	if got := addrs(admin, ""); got != "al@a.test ann@a.test" {
		t.Errorf("a.test's admin lists %q", got)
	}
	if got := addrs(op, ""); got != "al@a.test ann@a.test ben@b.test" {
		t.Errorf("operator lists %q", got)
	}
	ann := manage.User{Address: "Ann@A.test"}
	if got := addrs(ann, ""); got != "ann@a.test" {
		t.Errorf("ann lists %q", got)
	}
	if got := addrs(ann, "a.test"); got != "ann@a.test" {
		t.Errorf("ann lists %q in a.test", got)
	}
	_, err = m.ListMailboxes(ctx, ann, manage.ListMailboxes{Domain: "b.test"})
	refused(t, "ann listing b.test", err, manage.Forbidden, "b.test")
	_, err = m.ListMailboxes(ctx, ann, manage.ListMailboxes{Domain: "nowhere.test"})
	refused(t, "ann listing a domain not hosted", err, manage.Forbidden, "nowhere.test")

	must(m.SetPassword(ctx, ann, manage.SetPassword{Address: "ann@a.test", Password: "ann's new password"}))(t)
	_, err = m.SetPassword(ctx, ann, manage.SetPassword{Address: "al@a.test", Password: "ann's new password"})
	refused(t, "ann changing al's password", err, manage.Forbidden, "al@a.test")
	_, err = m.SetPassword(ctx, ann, manage.SetPassword{Address: "ann@a.test", Password: "short"})
	refused(t, "ann's short password", err, manage.Invalid, "too short")
	_, err = m.AddMailbox(ctx, ann, manage.AddMailbox{Address: "ann2@a.test", Password: pw})
	refused(t, "ann adding a mailbox", err, manage.Forbidden, "")
	_, err = m.RemoveMailbox(ctx, ann, manage.RemoveMailbox{Address: "ann@a.test"})
	refused(t, "ann removing her mailbox", err, manage.Forbidden, "")
	for _, mb := range []struct{ addr, pw string }{{"ann@a.test", "ann's new password"}, {"al@a.test", pw}} {
		got, err := m.Store.MailboxByAddress(ctx, mb.addr)
		if err != nil || !passwd.Verify(got.PasswordHash, mb.pw) {
			t.Errorf("%s's password is not %q (%v)", mb.addr, mb.pw, err)
		}
	}
	must(m.SetPassword(ctx, admin, manage.SetPassword{Address: "al@a.test", Password: "al's new password"}))(t)

	// The operator's own operations are refused to everyone else.
	for name, call := range map[string]func(manage.Actor) error{
		"queue":     func(a manage.Actor) error { _, err := m.ListQueue(ctx, a); return err },
		"directory": func(a manage.Actor) error { _, err := m.ListDirectory(ctx, a); return err },
		"import":    func(a manage.Actor) error { _, err := m.ImportDirectory(ctx, a, manage.ImportDirectory{}); return err },
		"log":       func(a manage.Actor) error { _, err := m.SearchLog(ctx, a, manage.SearchLog{}); return err },
		"status":    func(a manage.Actor) error { _, err := m.Status(ctx, a); return err },
		"scan":      func(a manage.Actor) error { _, err := m.ScanStatus(ctx, a); return err },
	} {
		for _, a := range []manage.Actor{admin, ann} {
			refused(t, name+" as a non-operator", call(a), manage.Forbidden, "operator")
		}
	}
}

// TestUnavailable: when the log cannot commit, the operation fails as
// unavailable with the proposer's message, and nothing is stored.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	m, p := newManager(t)
	p.FailWith(errors.New("raft: no leader (test)"))
	_, err := m.AddDomain(ctx, op, manage.AddDomain{Name: "a.test"})
	refused(t, "adding with no leader", err, manage.Unavailable, "raft: no leader (test)")
	p.FailWith(nil)
	if ds := must(m.ListDomains(ctx, op))(t); len(ds) != 0 {
		t.Fatalf("domains %+v after a failed add", ds)
	}
}

// TestDirectoryMerge: an import replaces the providers with the same name
// and unit and keeps the others; a file without providers is refused.
func TestDirectoryMerge(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	indice, err := os.ReadFile("../pecdir/testdata/indice.ldif")
	if err != nil {
		t.Fatal(err)
	}
	first := must(m.ImportDirectory(ctx, op, manage.ImportDirectory{LDIF: string(indice)}))(t)
	if first.Imported < 2 || first.Total != first.Imported {
		t.Fatalf("first import %+v", first)
	}
	ps, err := pecdir.ParseLDIF(bytes.NewReader(indice))
	if err != nil {
		t.Fatal(err)
	}
	renewed := ps[0]
	renewed.MailReceipt = "nuovo-posta@" + renewed.ManagedDomains[0]
	var buf bytes.Buffer
	if err := pecdir.WriteLDIF(&buf, []pecdir.Provider{renewed}); err != nil {
		t.Fatal(err)
	}
	again := must(m.ImportDirectory(ctx, op, manage.ImportDirectory{LDIF: buf.String()}))(t)
	if again.Imported != 1 || again.Total != first.Total {
		t.Fatalf("second import %+v, want 1 replacing one of %d", again, first.Total)
	}
	list := must(m.ListDirectory(ctx, op))(t)
	if len(list) != first.Total {
		t.Fatalf("%d providers, want %d", len(list), first.Total)
	}
	found := 0
	for _, p := range list {
		if p.Name == renewed.Name && p.Unit == renewed.Unit {
			found++
			if p.MailReceipt != renewed.MailReceipt {
				t.Errorf("%s: mail receipt %s, want the renewed %s", p.Name, p.MailReceipt, renewed.MailReceipt)
			}
		}
	}
	if found != 1 {
		t.Errorf("%d entries for %q %q, want 1", found, renewed.Name, renewed.Unit)
	}
	_, err = m.ImportDirectory(ctx, op, manage.ImportDirectory{LDIF: "version: 1\n"})
	refused(t, "an empty file", err, manage.Invalid, "directory import: no provider entry in the file")
	_, err = m.ImportDirectory(ctx, op, manage.ImportDirectory{LDIF: "dn: providerName=X,o=postacert\nproviderName: X\n"})
	refused(t, "an entry without mailReceipt", err, manage.Invalid, "directory import:")
	if got := must(m.ListDirectory(ctx, op))(t); len(got) != first.Total {
		t.Fatalf("%d providers after refused imports, want %d", len(got), first.Total)
	}
}
