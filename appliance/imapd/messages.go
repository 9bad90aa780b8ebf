package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/appliance/readiness"
	"sigillo/storage"
)

var systemFlags = [...]imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

// flagStrings checks flags from a client for the store: system flags are
// spelled canonically, \Recent is dropped (the server sets it, and we never
// do), any other backslash flag is refused.
func flagStrings(in []imap.Flag) ([]string, error) {
	out := make([]string, 0, len(in))
next:
	for _, f := range in {
		if !strings.HasPrefix(string(f), `\`) {
			out = append(out, string(f))
			continue
		}
		for _, sf := range systemFlags {
			if strings.EqualFold(string(f), string(sf)) {
				out = append(out, string(sf))
				continue next
			}
		}
		if strings.EqualFold(string(f), `\Recent`) {
			continue
		}
		return nil, bad("Invalid system flag " + string(f))
	}
	return out, nil
}

func imapFlags(in []string) []imap.Flag {
	out := make([]imap.Flag, len(in))
	for i, f := range in {
		out[i] = imap.Flag(f)
	}
	return out
}

// hasFlag matches flags case-insensitively, as IMAP does.
func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

// Fetch implements imapserver.Session. A BODY[...] that is not .PEEK sets
// \Seen first, through one StoreFlags command: if that cannot be applied
// the FETCH fails as a whole.
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	refs, err := v.resolve(numSet)
	if err != nil || len(refs) == 0 {
		return err
	}
	msgs, err := s.srv.Store.MessagesByUID(s.ctx, v.folder.ID, refUIDs(refs))
	if err != nil {
		return s.fail("fetch", err)
	}

	markSeen := false
	if !v.readOnly {
		for _, bs := range options.BodySection {
			markSeen = markSeen || !bs.Peek
		}
		for _, bs := range options.BinarySection {
			markSeen = markSeen || !bs.Peek
		}
	}
	if markSeen {
		// A node that may not write still serves the message: \Seen
		// stays unset (as on an EXAMINEd folder) rather than the FETCH
		// failing.
		markSeen, _ = readiness.Check(s.srv.Ready)
	}
	seenNow := map[uint32]bool{}
	if markSeen {
		var unseen []uint32
		for _, m := range msgs {
			if !hasFlag(m.Flags, string(imap.FlagSeen)) {
				unseen = append(unseen, m.UID)
			}
		}
		if len(unseen) > 0 {
			fr, err := applyAs[*storage.FlagsResult](s, &storage.StoreFlags{FolderID: v.folder.ID, UIDs: unseen, Mode: storage.FlagsAdd, Flags: []string{string(imap.FlagSeen)}})
			if err != nil {
				return err
			}
			if fr == nil {
				return s.fail("fetch", errUnexpected("store-flags", fr))
			}
			byUID := map[uint32]storage.FlagUpdate{}
			for _, u := range fr.Updated {
				byUID[u.UID] = u
			}
			s.mu.Lock()
			for i := range msgs {
				if u, ok := byUID[msgs[i].UID]; ok {
					msgs[i].Flags, msgs[i].ModSeq = u.Flags, u.ModSeq
					seenNow[u.UID] = true
				}
			}
			s.mu.Unlock()
		}
	}

	needContent := options.BodyStructure != nil || len(options.BodySection) > 0 ||
		len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0
	// ENVELOPE alone needs only the header section, cached by hash.
	headerOnly := options.Envelope && !needContent
	for _, m := range msgs {
		seq := v.seqOf(m.UID)
		if seq == 0 {
			continue
		}
		var content []byte
		if needContent {
			content, err = s.srv.Store.Content(s.ctx, m.SHA256)
			if err != nil {
				return s.fail("fetch content", err)
			}
		} else if headerOnly {
			if content, _, err = s.header(m); err != nil {
				return s.fail("fetch header", err)
			}
		}
		rw := w.CreateMessage(seq)
		if options.UID {
			rw.WriteUID(imap.UID(m.UID))
		}
		if options.Flags || seenNow[m.UID] {
			rw.WriteFlags(imapFlags(m.Flags))
			s.mu.Lock()
			if m.ModSeq > v.modseq[m.UID] {
				v.modseq[m.UID] = m.ModSeq
			}
			s.mu.Unlock()
		}
		if options.InternalDate {
			rw.WriteInternalDate(m.InternalDate)
		}
		if options.RFC822Size {
			rw.WriteRFC822Size(m.Size)
		}
		if options.Envelope {
			rw.WriteEnvelope(envelope(content))
		}
		if options.BodyStructure != nil {
			rw.WriteBodyStructure(bodyStructure(content))
		}
		for _, bs := range options.BodySection {
			buf := bodySection(content, bs)
			wc := rw.WriteBodySection(bs, int64(len(buf)))
			if _, err := wc.Write(buf); err != nil {
				wc.Close()
				return err
			}
			if err := wc.Close(); err != nil {
				return err
			}
		}
		for _, bs := range options.BinarySection {
			buf := binarySection(content, bs)
			wc := rw.WriteBinarySection(bs, int64(len(buf)))
			if _, err := wc.Write(buf); err != nil {
				wc.Close()
				return err
			}
			if err := wc.Close(); err != nil {
				return err
			}
		}
		for _, bss := range options.BinarySectionSize {
			rw.WriteBinarySectionSize(bss, binarySectionSize(content, bss))
		}
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Store implements imapserver.Session.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	if v.readOnly {
		return no(imap.ResponseCodeCannot, "Mailbox is read-only")
	}
	list, err := flagStrings(flags.Flags)
	if err != nil {
		return err
	}
	refs, err := v.resolve(numSet)
	if err != nil || len(refs) == 0 {
		return err
	}
	mode := storage.FlagsSet
	switch flags.Op {
	case imap.StoreFlagsAdd:
		mode = storage.FlagsAdd
	case imap.StoreFlagsDel:
		mode = storage.FlagsRemove
	}
	fr, err := applyAs[*storage.FlagsResult](s, &storage.StoreFlags{FolderID: v.folder.ID, UIDs: refUIDs(refs), Mode: mode, Flags: list})
	if err != nil {
		return err
	}
	if fr == nil {
		return s.fail("store", errUnexpected("store-flags", fr))
	}
	// The client learns the new flags from this answer (or asked not to):
	// the next sync must not repeat them. New keywords are left for the
	// next sync to announce with FLAGS.
	s.mu.Lock()
	for _, u := range fr.Updated {
		if u.ModSeq > v.modseq[u.UID] {
			v.modseq[u.UID] = u.ModSeq
		}
	}
	s.mu.Unlock()
	if flags.Silent {
		return nil
	}
	for _, u := range fr.Updated {
		seq := v.seqOf(u.UID)
		if seq == 0 {
			continue
		}
		rw := w.CreateMessage(seq)
		rw.WriteUID(imap.UID(u.UID))
		rw.WriteFlags(imapFlags(u.Flags))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Copy implements imapserver.Session.
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	res, _, err := s.copy(numSet, dest, false)
	return res, err
}

// Move implements imapserver.SessionMove: one Copy command with Move set,
// then EXPUNGE for the moved messages.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	data, moved, err := s.copy(numSet, dest, true)
	if err != nil || data == nil {
		return err
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	return s.expunged(w, moved)
}

// copy copies or moves messages; it returns the COPYUID data (nil if nothing
// was copied) and the source UIDs.
func (s *session) copy(numSet imap.NumSet, dest string, move bool) (*imap.CopyData, []uint32, error) {
	v, err := s.selected()
	if err != nil {
		return nil, nil, err
	}
	if move && v.readOnly {
		return nil, nil, no(imap.ResponseCodeCannot, "Mailbox is read-only")
	}
	to, err := s.srv.Store.FolderByName(s.ctx, s.mailboxID(), canonicalName(dest))
	if storage.IsCode(err, storage.ErrNotFound) {
		return nil, nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	} else if err != nil {
		return nil, nil, s.fail("find folder", err)
	}
	if move && to.ID == v.folder.ID {
		return nil, nil, no(imap.ResponseCodeCannot, "Source and destination are the same mailbox")
	}
	refs, err := v.resolve(numSet)
	if err != nil || len(refs) == 0 {
		return nil, nil, err
	}
	cr, err := applyAs[*storage.CopyResult](s, &storage.Copy{FromFolderID: v.folder.ID, UIDs: refUIDs(refs), ToFolderID: to.ID, Move: move, EnforceQuota: !move})
	if code(err) == imap.ResponseCodeNonExistent {
		return nil, nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	} else if err != nil {
		return nil, nil, err
	}
	if cr == nil {
		return nil, nil, s.fail("copy", errUnexpected("copy", cr))
	}
	if len(cr.Source) == 0 {
		return nil, nil, nil
	}
	data := &imap.CopyData{UIDValidity: cr.UIDValidity}
	for i := range cr.Source {
		data.SourceUIDs.AddNum(imap.UID(cr.Source[i]))
		data.DestUIDs.AddNum(imap.UID(cr.Dest[i]))
	}
	return data, cr.Source, nil
}

// expungeWriter is imapserver's ExpungeWriter or MoveWriter.
type expungeWriter interface{ WriteExpunge(seqNum uint32) error }

// expunged removes uids, which this session's own command took out of the
// folder, from the view and tells the client.
func (s *session) expunged(w expungeWriter, uids []uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.sel
	if v == nil {
		return nil
	}
	gone := make(map[uint32]bool, len(uids))
	for _, u := range uids {
		gone[u] = true
	}
	var seqs []uint32
	kept := v.uids[:0:0]
	for i, u := range v.uids {
		if gone[u] {
			seqs = append(seqs, uint32(i+1))
			delete(v.modseq, u)
			delete(v.ghosts, u)
		} else {
			kept = append(kept, u)
		}
	}
	v.uids = kept
	for i := len(seqs) - 1; i >= 0; i-- {
		if err := w.WriteExpunge(seqs[i]); err != nil {
			return err
		}
	}
	return nil
}

// Expunge implements imapserver.Session: EXPUNGE, UID EXPUNGE and the
// silent expunge of CLOSE (whose writer is the zero ExpungeWriter).
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	v, err := s.selected()
	if err != nil {
		return err
	}
	closing := *w == imapserver.ExpungeWriter{}
	if v.readOnly {
		if closing {
			return nil // CLOSE of an EXAMINEd mailbox expunges nothing
		}
		return no(imap.ResponseCodeCannot, "Mailbox is read-only")
	}
	cmd := &storage.Expunge{FolderID: v.folder.ID, OnlyDeleted: true}
	if uids != nil {
		s.mu.Lock()
		static := v.staticUIDs(*uids)
		for _, u := range v.uids {
			if static.Contains(imap.UID(u)) && !v.ghosts[u] {
				cmd.UIDs = append(cmd.UIDs, u)
			}
		}
		s.mu.Unlock()
		if len(cmd.UIDs) == 0 {
			return nil
		}
	}
	gone, err := applyAs[[]uint32](s, cmd)
	if err != nil {
		return err
	}
	return s.expunged(w, gone)
}
