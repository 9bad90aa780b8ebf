package imapd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	"sigillo/appliance/apptest"
	"sigillo/storage"
)

// TestTheFolderCacheAlwaysGivesTheFolderAsItIs: deliveries, flag changes
// and expunges in random order; after each, the rows SELECT and SEARCH get
// (cached, caught up from an older state, or read) are the store's.
func TestTheFolderCacheAlwaysGivesTheFolderAsItIs(t *testing.T) {
	st, err := storage.Open(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := apptest.NewProposer(st)
	ctx := context.Background()
	p.Must(t, &storage.AddDomain{Name: "a.test"})
	p.Must(t, &storage.AddMailbox{Address: "u@a.test", PasswordHash: "x", At: 1})
	mb, _ := st.MailboxByAddress(ctx, "u@a.test")
	inbox, _ := st.FolderByName(ctx, mb.ID, "INBOX")
	s := &session{srv: &Server{Store: st}, ctx: ctx}
	rng := rand.New(rand.NewPCG(1, 2))
	var uids []uint32
	caughtUp := 0
	for step := range 400 {
		switch r := rng.IntN(10); {
		case r < 5 || len(uids) == 0:
			v := p.Must(t, &storage.Deliver{Targets: []storage.Target{{MailboxID: mb.ID}}, InternalDate: 1,
				Data: []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", step))})
			uids = append(uids, v.(*storage.DeliverResult).Placed[0].UID)
		case r < 8:
			u := uids[rng.IntN(len(uids))]
			p.Must(t, &storage.StoreFlags{FolderID: inbox.ID, UIDs: []uint32{u}, Mode: storage.FlagsAdd, Flags: []string{fmt.Sprintf("$k%d", step)}})
		default:
			i := rng.IntN(len(uids))
			p.Must(t, &storage.Expunge{FolderID: inbox.ID, UIDs: []uint32{uids[i]}})
			uids = append(uids[:i], uids[i+1:]...)
		}
		if rng.IntN(3) == 0 {
			continue // not read after every step: catching up over several
		}
		f, _ := st.FolderByID(ctx, inbox.ID)
		if _, ok, older := s.srv.folders.get(f); !ok && older != nil {
			caughtUp++
		}
		got, err := s.messages(f)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := st.Messages(ctx, inbox.ID)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: %d cached rows, %d in the store", step, len(got), len(want))
		}
	}
	if caughtUp < 100 {
		t.Fatalf("only %d reads caught up from an older state", caughtUp)
	}
	t.Logf("%d reads caught up from an older state", caughtUp)
}
