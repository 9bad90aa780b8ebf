package imapd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/storage"
)

// view is a selected session's picture of its folder: the UIDs behind the
// sequence numbers the client knows, and the modseq of the flags it was last
// told about for each. The store is the truth; sync brings the view (and the
// client) up to date with it.
//
// Invariants: uids is ascending (UIDs only grow and new messages are
// appended); every UID ever in the view is <= maxUID, so a UID above maxUID
// in the store is a new message; a UID in the view but no longer in the
// store is a ghost until the client may be told (EXPUNGE is not allowed
// during FETCH, STORE and SEARCH).
type view struct {
	folder   storage.Folder // as selected: ID, name, UIDVALIDITY
	readOnly bool

	uids    []uint32
	modseq  map[uint32]uint64 // UID -> modseq of the flags the client knows
	ghosts  map[uint32]bool   // expunged in the store, not yet announced
	maxUID  uint32
	highest uint64 // the folder's HIGHESTMODSEQ at the last sync
	deleted bool   // the folder itself is gone
	flags   map[string]bool

	searchRes imap.UIDSet // SEARCH RETURN (SAVE)

	watch   <-chan storage.Change
	unwatch func()
}

func (v *view) release() {
	if v.unwatch != nil {
		v.unwatch()
		v.unwatch = nil
	}
}

// seqOf is the sequence number of uid in the client's view, or 0.
func (v *view) seqOf(uid uint32) uint32 {
	i := sort.Search(len(v.uids), func(i int) bool { return v.uids[i] >= uid })
	if i < len(v.uids) && v.uids[i] == uid {
		return uint32(i + 1)
	}
	return 0
}

// msgRef is one message a command names: its sequence number and UID.
type msgRef struct {
	seq uint32
	uid uint32
}

// resolve turns a sequence or UID set (or $, the saved search result) into
// the messages of the view it names, ascending, ghosts left out. A sequence
// number beyond the view is the client's mistake (BAD); UIDs that do not
// exist are ignored, as RFC 9051 says.
func (v *view) resolve(numSet imap.NumSet) ([]msgRef, error) {
	if imap.IsSearchRes(numSet) {
		numSet = v.searchRes
	}
	var out []msgRef
	switch set := numSet.(type) {
	case imap.SeqSet:
		n := uint32(len(v.uids))
		seen := map[uint32]bool{}
		for _, r := range set {
			if (r.Start != 0 && r.Start > n) || (r.Stop != 0 && r.Stop > n) {
				return nil, bad("Invalid message sequence number")
			}
			if n == 0 {
				continue
			}
			start, stop := staticRange(r.Start, r.Stop, n)
			for seq := max(start, 1); seq <= stop; seq++ {
				if !seen[seq] {
					seen[seq] = true
					out = append(out, msgRef{seq: seq, uid: v.uids[seq-1]})
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	case imap.UIDSet:
		if len(v.uids) == 0 {
			return nil, nil
		}
		static := v.staticUIDs(set)
		for i, uid := range v.uids {
			if static.Contains(imap.UID(uid)) {
				out = append(out, msgRef{seq: uint32(i + 1), uid: uid})
			}
		}
	}
	if len(v.ghosts) > 0 {
		kept := out[:0]
		for _, r := range out {
			if !v.ghosts[r.uid] {
				kept = append(kept, r)
			}
		}
		out = kept
	}
	return out, nil
}

// staticUIDs replaces * in a UID set by the highest UID of the view.
func (v *view) staticUIDs(set imap.UIDSet) imap.UIDSet {
	var last uint32
	if len(v.uids) > 0 {
		last = v.uids[len(v.uids)-1]
	}
	static := make(imap.UIDSet, len(set))
	for i, r := range set {
		start, stop := staticRange(uint32(r.Start), uint32(r.Stop), last)
		static[i] = imap.UIDRange{Start: imap.UID(start), Stop: imap.UID(stop)}
	}
	return static
}

// staticRange replaces * (0) by max and orders the bounds.
func staticRange(start, stop, max uint32) (uint32, uint32) {
	if start == 0 {
		start = max
	}
	if stop == 0 {
		stop = max
	}
	if start > stop {
		start, stop = stop, start
	}
	return start, stop
}

func refUIDs(refs []msgRef) []uint32 {
	out := make([]uint32, len(refs))
	for i, r := range refs {
		out[i] = r.uid
	}
	return out
}

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *session) Select(mailbox string, options *imap.SelectOptions) (*imap.SelectData, error) {
	s.unselect()
	f, err := s.folder(mailbox)
	if err != nil {
		return nil, err
	}
	// Watch before reading, so that no change after the read is missed.
	watch, unwatch := s.srv.Store.Watch(f.MailboxID)
	msgs, err := s.messages(f)
	if err != nil {
		unwatch()
		return nil, s.fail("list messages", err)
	}
	v := &view{
		folder:   f,
		readOnly: options != nil && options.ReadOnly,
		modseq:   make(map[uint32]uint64, len(msgs)),
		ghosts:   map[uint32]bool{},
		highest:  f.HighestModSeq,
		flags:    map[string]bool{},
		watch:    watch,
		unwatch:  unwatch,
	}
	var firstUnseen uint32
	for i, m := range msgs {
		v.uids = append(v.uids, m.UID)
		v.modseq[m.UID] = m.ModSeq
		v.maxUID = m.UID
		for _, fl := range m.Flags {
			v.flags[fl] = true
		}
		if firstUnseen == 0 && !hasFlag(m.Flags, string(imap.FlagSeen)) {
			firstUnseen = uint32(i + 1)
		}
	}
	uidNext := f.UIDNext
	if v.maxUID >= uidNext {
		uidNext = v.maxUID + 1
	}
	data := &imap.SelectData{
		Flags:             v.flagList(),
		NumMessages:       uint32(len(v.uids)),
		FirstUnseenSeqNum: firstUnseen,
		UIDNext:           imap.UID(uidNext),
		UIDValidity:       f.UIDValidity,
	}
	if v.readOnly {
		data.PermanentFlags = []imap.Flag{}
	} else {
		data.PermanentFlags = append(v.flagList(), imap.FlagWildcard)
	}
	s.mu.Lock()
	s.sel = v
	s.mu.Unlock()
	return data, nil
}

// flagList is the FLAGS of the folder: the system flags and every keyword
// in use.
func (v *view) flagList() []imap.Flag {
	out := []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}
	var keywords []string
	for f := range v.flags {
		if !strings.HasPrefix(f, `\`) {
			keywords = append(keywords, f)
		}
	}
	sort.Strings(keywords)
	for _, k := range keywords {
		out = append(out, imap.Flag(k))
	}
	return out
}

// Unselect implements imapserver.Session (UNSELECT, and CLOSE after its
// silent expunge).
func (s *session) Unselect() error {
	s.unselect()
	return nil
}

func (s *session) unselect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sel != nil {
		s.sel.release()
		s.sel = nil
	}
}

// selected is the view, or a BAD if no folder is selected (imapserver checks
// the state first, so this is defensive).
func (s *session) selected() (*view, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sel == nil {
		return nil, bad("No mailbox selected")
	}
	return s.sel, nil
}

// Poll implements imapserver.Session: after each command, tell the client
// what changed. An error here ends the connection, so a store that cannot be
// read is only logged: the next poll will try again.
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sel == nil {
		return nil
	}
	// Consume a pending notification first: anything that changes after
	// this point notifies again.
	select {
	case <-s.sel.watch:
	default:
	}
	return s.syncLocked(w, allowExpunge)
}

// Idle implements imapserver.Session: wait for the store to signal a change
// to the account, then sync, until stop.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.idle.Add(1)
	s.idling.Store(true)
	defer func() {
		s.idling.Store(false)
		s.idle.Done()
	}()
	v := s.sel
	var err error
	if v != nil {
		err = s.syncLocked(w, true)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if v == nil {
		select {
		case <-stop:
		case <-s.ctx.Done():
		}
		return nil
	}
	for {
		select {
		case <-stop:
			return nil
		case <-s.ctx.Done():
			return nil
		case <-v.watch:
			// Any change to the account wakes us: the channel holds one
			// notification, so one for another folder may stand for ours.
			s.mu.Lock()
			if s.sel != v {
				s.mu.Unlock()
				return nil
			}
			err := s.syncLocked(w, true)
			s.mu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

// updateWriter is what sync writes to (imapserver.UpdateWriter).
type updateWriter interface {
	WriteExpunge(seqNum uint32) error
	WriteNumMessages(n uint32) error
	WriteMailboxFlags(flags []imap.Flag) error
	WriteMessageFlags(seqNum uint32, uid imap.UID, flags []imap.Flag) error
}

// syncLocked compares the view with the store and writes the differences:
// EXPUNGE for messages gone (if allowed, else they stay as ghosts), EXISTS
// for new ones, FLAGS for new keywords and FETCH FLAGS for messages whose
// modseq grew. Reads are not one snapshot, so the folder's HIGHESTMODSEQ is
// read first and becomes the view's: whatever changes after it has a higher
// modseq and is seen (again) by the next sync. s.mu is held.
func (s *session) syncLocked(w updateWriter, allowExpunge bool) error {
	v := s.sel
	if v == nil {
		return nil
	}
	ctx := s.ctx
	var current []uint32
	var changed []storage.Message
	highest := v.highest
	if !v.deleted {
		f, err := s.srv.Store.FolderByID(ctx, v.folder.ID)
		switch {
		case storage.IsCode(err, storage.ErrNotFound) || (err == nil && f.UIDValidity != v.folder.UIDValidity):
			// Deleted (by another session or protocol): every message
			// is gone.
			v.deleted = true
		case err != nil:
			s.log.Warn("imap sync: read folder", "folder", v.folder.Name, "err", err)
			return nil
		case f.HighestModSeq == v.highest:
			// Nothing changed since the last sync.
		default:
			highest = f.HighestModSeq
			if current, err = s.srv.Store.FolderUIDs(ctx, f.ID); err == nil {
				changed, err = s.srv.Store.ChangedSince(ctx, f.ID, v.highest)
			}
			if err != nil {
				s.log.Warn("imap sync: read messages", "folder", v.folder.Name, "err", err)
				return nil
			}
			present := make(map[uint32]bool, len(current))
			for _, u := range current {
				present[u] = true
			}
			for _, u := range v.uids {
				if !present[u] {
					v.ghosts[u] = true
				}
			}
		}
	}
	if v.deleted {
		for _, u := range v.uids {
			v.ghosts[u] = true
		}
		current, changed = nil, nil
	}

	// Expunges, from the highest sequence number down so that each one is
	// numbered as the client currently numbers it.
	if allowExpunge && len(v.ghosts) > 0 {
		kept := v.uids[:0:0]
		var gone []uint32
		for i, u := range v.uids {
			if v.ghosts[u] {
				gone = append(gone, uint32(i+1))
			} else {
				kept = append(kept, u)
			}
		}
		for i := len(gone) - 1; i >= 0; i-- {
			if err := w.WriteExpunge(gone[i]); err != nil {
				return err
			}
		}
		for u := range v.ghosts {
			delete(v.modseq, u)
		}
		v.ghosts = map[uint32]bool{}
		v.uids = kept
	}

	// New messages: UIDs above any the view has known.
	added := map[uint32]bool{}
	for _, u := range current {
		if u > v.maxUID {
			v.uids = append(v.uids, u)
			v.maxUID = u
			added[u] = true
		}
	}

	// New keywords first, so that the client knows them before a FETCH
	// shows them.
	newKeyword := false
	for _, m := range changed {
		for _, f := range m.Flags {
			if !v.flags[f] {
				v.flags[f] = true
				newKeyword = newKeyword || !strings.HasPrefix(f, `\`)
			}
		}
	}
	if newKeyword {
		if err := w.WriteMailboxFlags(v.flagList()); err != nil {
			return err
		}
	}
	if len(added) > 0 {
		if err := w.WriteNumMessages(uint32(len(v.uids))); err != nil {
			return err
		}
	}
	for _, m := range changed {
		if v.ghosts[m.UID] {
			continue
		}
		seq := v.seqOf(m.UID)
		if seq == 0 {
			continue // arrived after the UID list was read: next sync
		}
		known := v.modseq[m.UID] // 0 if never known: any change is news
		if m.ModSeq <= known {
			continue
		}
		v.modseq[m.UID] = m.ModSeq
		if added[m.UID] {
			continue // the client will fetch what it needs of new messages
		}
		if err := w.WriteMessageFlags(seq, imap.UID(m.UID), imapFlags(m.Flags)); err != nil {
			return err
		}
	}
	v.highest = highest
	return nil
}

// errUnexpected reports a command value of the wrong type (a bug).
func errUnexpected(op string, v any) error {
	return fmt.Errorf("%s: unexpected result %T", op, v)
}
