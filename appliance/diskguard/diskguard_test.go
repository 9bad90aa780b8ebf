package diskguard

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

func TestNewMailWaitsWhileTheDiskIsLowAndEverythingElseGoesOn(t *testing.T) {
	ctx := context.Background()
	s, err := storage.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	free := int64(10 << 20)
	g := &Guard{Dir: t.TempDir(), MinFree: 5 << 20, Free: func(string) (int64, error) { return free, nil }}
	p := Guarded{Next: apptest.NewProposer(s), Guard: g}
	p.Apply(ctx, &storage.AddDomain{Name: "a.test"})
	id, err := storage.ApplyAs[int64](ctx, p, &storage.AddMailbox{Address: "u@a.test", PasswordHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	deliver := &storage.Deliver{Targets: []storage.Target{{MailboxID: id}}, Data: []byte("x")}
	if _, err := p.Apply(ctx, deliver); err != nil {
		t.Fatalf("with room: %v", err)
	}
	free = 1 << 20
	if _, err := p.Apply(ctx, deliver); !errors.Is(err, ErrLowDisk) {
		t.Fatalf("low disk: %v", err)
	}
	inbox, _ := s.FolderByName(ctx, id, "INBOX")
	if _, err := p.Apply(ctx, &storage.Expunge{FolderID: inbox.ID, UIDs: []uint32{1}}); err != nil {
		t.Fatalf("expunge refused on a low disk: %v", err)
	}
	// The real statfs answers for a real directory.
	if err := (&Guard{Dir: t.TempDir(), MinFree: 1}).Check(); err != nil {
		t.Fatal(err)
	}
}
