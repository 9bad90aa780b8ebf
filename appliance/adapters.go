package appliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"sigillo/appliance/accounts"
	"sigillo/appliance/config"
	"sigillo/appliance/manage"
	"sigillo/appliance/pop3d"
	"sigillo/storage"
)

// What the command line's requests answer: the operations and their
// types are appliance/manage's; these names stay for the command line.
type (
	CertStatus   = manage.CertStatus
	ScanInfo     = manage.ScanInfo
	DomainInfo   = manage.DomainInfo
	MailboxInfo  = manage.MailboxInfo
	Named        = manage.Named
	ProviderInfo = manage.ProviderInfo
	QueueInfo    = manage.QueueInfo
)

// DatabaseFile is the store's database in cfg's data directory. The
// command line reads it directly (read-only) when no server answers on the
// control socket.
func DatabaseFile(cfg config.Config) string { return filepath.Join(cfg.DataDir, "sigillo.db") }

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
