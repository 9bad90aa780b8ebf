package manage

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"sigillo/appliance/legallog"
	"sigillo/appliance/pec"
	"sigillo/appliance/pecdir"
	"sigillo/appliance/tlsmgr"
	"sigillo/storage"
)

// ProviderInfo describes one gestore of the providers directory.
type ProviderInfo struct {
	Name            string   `json:"name"`
	Unit            string   `json:"unit,omitempty"`
	MailReceipt     string   `json:"mail_receipt"`
	ManagedDomains  []string `json:"managed_domains"`
	CertificateSHA1 []string `json:"certificate_sha1,omitempty"`
}

// Imported is what ImportDirectory answers: the providers in the file and
// in the directory afterwards.
type Imported struct {
	Imported int `json:"imported"`
	Total    int `json:"total"`
}

// QueueInfo describes one outbound message.
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

// ScanInfo reports the virus scanner.
type ScanInfo struct {
	Enabled  bool   `json:"enabled"`
	Address  string `json:"clamd,omitempty"`
	Required bool   `json:"required"`
	OK       bool   `json:"ok"`
	Version  string `json:"version,omitempty"` // clamd's VERSION: engine/signatures/date
	Error    string `json:"error,omitempty"`
	Infected int    `json:"virus_store"` // messages in the virus store
}

// CertStatus reports the certificates the server presents.
type CertStatus struct {
	ACME      bool              `json:"acme"`
	Certs     []tlsmgr.CertInfo `json:"certificates"`
	LastError string            `json:"last_error,omitempty"`
	ErrorAt   time.Time         `json:"error_at,omitzero"`
}

// Status is the node's short report.
type Status struct {
	Version      string `json:"version"`
	Leader       bool   `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (m *Manager) directory(ctx context.Context) ([]pecdir.Provider, error) {
	data, err := m.Store.KV(ctx, pec.DirectoryKey)
	if storage.IsCode(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return pecdir.ParseLDIF(bytes.NewReader(data))
}

// ListDirectory lists the providers directory; for the operator.
func (m *Manager) ListDirectory(ctx context.Context, a Actor) ([]ProviderInfo, error) {
	if err := operatorOnly(a, "the providers directory"); err != nil {
		return nil, err
	}
	ps, err := m.directory(ctx)
	if err != nil {
		return nil, wrap(err, Unavailable)
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
}

// ImportDirectory merges the providers of an LDIF file into the directory.
type ImportDirectory struct{ LDIF string }

// ImportDirectory is for the operator. An entry of the file replaces the
// one with the same name and unit (a renewed certificate), others are
// added. The file is refused whole if any entry is invalid.
func (m *Manager) ImportDirectory(ctx context.Context, a Actor, r ImportDirectory) (Imported, error) {
	if err := operatorOnly(a, "the providers directory"); err != nil {
		return Imported{}, err
	}
	incoming, err := pecdir.ParseLDIF(strings.NewReader(r.LDIF))
	if err != nil {
		return Imported{}, wrap(fmt.Errorf("directory import: %w", err), Invalid)
	}
	if len(incoming) == 0 {
		return Imported{}, invalid("directory import: no provider entry in the file")
	}
	current, err := m.directory(ctx)
	if err != nil {
		return Imported{}, wrap(fmt.Errorf("directory import: the stored directory: %w", err), Unavailable)
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
		return Imported{}, wrap(fmt.Errorf("directory import: %w", err), Invalid)
	}
	if _, err := m.Proposer.Apply(ctx, &storage.PutKV{Key: pec.DirectoryKey, Value: buf.Bytes()}); err != nil {
		return Imported{}, applyErr(err)
	}
	return Imported{Imported: len(incoming), Total: len(merged)}, nil
}

// ListQueue lists the outbound queue; for the operator.
func (m *Manager) ListQueue(ctx context.Context, a Actor) ([]QueueInfo, error) {
	if err := operatorOnly(a, "the outbound queue"); err != nil {
		return nil, err
	}
	items, err := m.Store.QueueItems(ctx, time.Time{})
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	out := []QueueInfo{}
	for _, it := range items {
		out = append(out, QueueInfo{ID: it.ID, Sender: it.Sender, Recipients: it.Recipients, Size: it.Size,
			Created: it.CreatedAt, NextAttempt: it.NextAttempt, Attempts: it.Attempts, LastError: it.LastError})
	}
	return out, nil
}

// SearchLog searches the legal log (the PEC log the law requires);
// Args are the search's terms as the command line names them
// (legallog.FilterFromArgs).
type SearchLog struct{ Args map[string]string }

// SearchLog is for the operator.
func (m *Manager) SearchLog(ctx context.Context, a Actor, r SearchLog) ([]legallog.Record, error) {
	if err := operatorOnly(a, "the legal log"); err != nil {
		return nil, err
	}
	f, err := legallog.FilterFromArgs(r.Args)
	if err != nil {
		return nil, wrap(err, Invalid)
	}
	recs, err := legallog.Search(ctx, m.Store, f)
	return recs, wrap(err, Unavailable)
}

// VerifyLog checks the legal log's chain: each head against the
// certificate it carries and, when RootsPEM holds trusted roots, chained
// to them.
type VerifyLog struct{ RootsPEM string }

// VerifyLog is for the operator. Its report is legallog.Verify's.
func (m *Manager) VerifyLog(ctx context.Context, a Actor, r VerifyLog) (any, error) {
	if err := operatorOnly(a, "the legal log"); err != nil {
		return nil, err
	}
	roots, err := legallog.RootsFromPEM(r.RootsPEM)
	if err != nil {
		return nil, wrap(err, Invalid)
	}
	rep, err := legallog.Verify(ctx, m.Store, roots)
	if err != nil {
		return nil, wrap(err, Unavailable)
	}
	return rep, nil
}

// ScanStatus reports the virus scanner; for the operator.
func (m *Manager) ScanStatus(ctx context.Context, a Actor) (ScanInfo, error) {
	info := ScanInfo{}
	if err := operatorOnly(a, "the scanner's status"); err != nil {
		return info, err
	}
	n, err := m.Store.VirusStoreCount(ctx)
	if err != nil {
		return info, wrap(err, Unavailable)
	}
	info.Infected = n
	if m.Scanner == nil {
		return info, nil
	}
	st := m.Scanner.Status()
	info.Enabled, info.Address, info.Required = true, st.Address, st.Required
	v, err := m.Scanner.Version(ctx)
	if err != nil {
		info.Error = err.Error()
		return info, nil
	}
	info.OK, info.Version = true, v
	return info, nil
}

// CertStatus reports the certificates; for the operator.
func (m *Manager) CertStatus(_ context.Context, a Actor) (CertStatus, error) {
	if err := operatorOnly(a, "the certificates' status"); err != nil {
		return CertStatus{}, err
	}
	if m.ACME != nil {
		certs, lastErr, at := m.ACME.Status()
		return CertStatus{ACME: true, Certs: certs, LastError: lastErr, ErrorAt: at}, nil
	}
	info := tlsmgr.CertInfo{Name: m.Hostname, Source: "local CA"}
	if m.CA != nil {
		if c, err := m.CA.GetCertificate(&tls.ClientHelloInfo{ServerName: m.Hostname}); err == nil && c != nil && len(c.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
				info.Issuer, info.NotBefore, info.NotAfter = leaf.Issuer.String(), leaf.NotBefore, leaf.NotAfter
			}
		}
	}
	return CertStatus{Certs: []tlsmgr.CertInfo{info}}, nil
}

// CARoot is the local CA's root certificate, PEM; anyone may have it
// (clients install it to trust the server).
func (m *Manager) CARoot(_ context.Context, _ Actor) (string, error) {
	if m.CA == nil {
		return "", refuse(Unavailable, "no local CA")
	}
	return string(m.CA.RootPEM()), nil
}

// Status is the node's short report; for the operator.
func (m *Manager) Status(ctx context.Context, a Actor) (Status, error) {
	if err := operatorOnly(a, "the node's status"); err != nil {
		return Status{}, err
	}
	idx, err := m.Store.AppliedIndex(ctx)
	if err != nil {
		return Status{}, wrap(err, Unavailable)
	}
	st := Status{Version: m.Version, AppliedIndex: idx}
	if m.IsLeader != nil {
		st.Leader = m.IsLeader()
	}
	return st, nil
}
