// Package manage is the one set of administrative operations of a
// Sigillo server: adding and removing domains and mailboxes, passwords,
// the PEC providers directory, the queue, the legal log and the status
// reports, each a typed request with the rules that go with it (password
// length, default quota, byte sizes, internationalised names, directory
// merge). Every operation is called with an Actor (the operator, the
// admin of one domain, or one user) and checks what that actor may do.
//
// It is not a transport: the control socket (appliance/control) and the
// admin HTTP API decode their requests into this package's types and turn
// its refusals (*Error) into exit statuses, HTTP statuses and messages.
package manage

import (
	"time"

	"sigillo/appliance/config"
	"sigillo/appliance/scan"
	"sigillo/appliance/tlsmgr"
	"sigillo/storage"
)

// Manager runs the operations against one node's store.
type Manager struct {
	Store    *storage.Store
	Proposer storage.Proposer
	Now      func() time.Time

	// NoGestore: no PEC gestore runs here, so PEC domains get ordinary
	// mail (adding one warns).
	NoGestore bool

	// For the status reports; any may be nil.
	Scanner  *scan.Scanner   // nil: scanning off
	ACME     *tlsmgr.ACME    // nil: the local CA serves
	CA       *tlsmgr.LocalCA // the local CA
	Hostname string
	Version  string
	IsLeader func() bool

	// Cluster answers the cluster operations (nil: none).
	Cluster Cluster
	// Backups runs and reports the backups (nil: no target configured).
	Backups Backups
	// TOML is this node's configuration as its file gives it (before the
	// cluster's settings), for the sources and disagreements of
	// `sigillo settings list`.
	TOML config.Config
}

func (m *Manager) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
}

// Actor is who asks for an operation: Operator, DomainAdmin or User.
type Actor interface{ actor() }

// Operator runs the server: every operation is allowed. The control
// socket (mode 0600, the server's user) speaks for the operator.
type Operator struct{}

// DomainAdmin administers the mailboxes of one domain (its ASCII, xn--
// form).
type DomainAdmin struct{ Domain string }

// User is the owner of one mailbox: they may change its password and see
// it listed.
type User struct{ Address string }

func (Operator) actor()    {}
func (DomainAdmin) actor() {}
func (User) actor()        {}

// operatorOnly refuses every actor but the operator.
func operatorOnly(a Actor, what string) error {
	if _, ok := a.(Operator); ok {
		return nil
	}
	return forbidden("%s is for the server's operator", what)
}
