package imapd

import (
	"errors"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"sigillo/appliance/spool"
	"sigillo/storage"
)

// canonicalName spells a folder name the way the store keeps it: INBOX in
// capitals (also as the first level of a longer name) and no trailing
// delimiter ("CREATE foo/" makes foo).
func canonicalName(name string) string {
	name = strings.TrimRight(name, string(delim))
	switch {
	case strings.EqualFold(name, "INBOX"):
		return "INBOX"
	case len(name) > 6 && strings.EqualFold(name[:6], "INBOX/"):
		return "INBOX/" + name[6:]
	}
	return name
}

// canonicalPattern does the same to a LIST reference or pattern, so that
// "inbox" and "Inbox/%" find INBOX.
func canonicalPattern(p string) string {
	if len(p) >= 5 && strings.EqualFold(p[:5], "INBOX") && (len(p) == 5 || p[5] == delim) {
		return "INBOX" + p[5:]
	}
	return p
}

// What a new folder name may be: at most 255 bytes (as the store allows)
// in at most 20 levels (Dovecot's MAILBOX_MAX_HIERARCHY_LEVELS); no
// control characters (CR, LF, NUL, …), no LIST wildcards, no empty level.
const (
	maxNameBytes  = 255
	maxNameLevels = 20
)

// checkNewName refuses a name CREATE or RENAME may not give, saying why.
func checkNewName(name string) error {
	switch {
	case name == "":
		return no(imap.ResponseCodeCannot, "Mailbox name is empty")
	case len(name) > maxNameBytes:
		return no(imap.ResponseCodeCannot, "Mailbox names are limited to %d bytes, this one has %d", maxNameBytes, len(name))
	case strings.Count(name, string(delim)) >= maxNameLevels:
		return no(imap.ResponseCodeCannot, "Mailbox names are limited to %d levels", maxNameLevels)
	case !utf8.ValidString(name):
		return no(imap.ResponseCodeCannot, "Mailbox name is not valid UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) }):
		return no(imap.ResponseCodeCannot, "Mailbox names cannot contain control characters (CR, LF, NUL, ...)")
	case strings.ContainsAny(name, "*%"):
		return no(imap.ResponseCodeCannot, "Mailbox names cannot contain * or %%")
	case strings.HasPrefix(name, string(delim)) || strings.Contains(name, string(delim)+string(delim)):
		return no(imap.ResponseCodeCannot, "Mailbox name has an empty level")
	}
	return nil
}

// folder looks a folder of the logged-in account up by name.
func (s *session) folder(name string) (storage.Folder, error) {
	f, err := s.srv.Store.FolderByName(s.ctx, s.mailboxID(), canonicalName(name))
	if err != nil {
		if storage.IsCode(err, storage.ErrNotFound) {
			return f, no(imap.ResponseCodeNonExistent, "No such mailbox")
		}
		return f, s.fail("find folder", err)
	}
	return f, nil
}

// Create implements imapserver.Session.
func (s *session) Create(mailbox string, options *imap.CreateOptions) error {
	name := canonicalName(mailbox)
	if name == "INBOX" {
		return no(imap.ResponseCodeAlreadyExists, "INBOX always exists")
	}
	if err := checkNewName(name); err != nil {
		return err
	}
	var use string
	if options != nil && len(options.SpecialUse) > 0 {
		if len(options.SpecialUse) > 1 {
			return no("USEATTR", "Only one special use per mailbox")
		}
		switch a := options.SpecialUse[0]; a {
		case imap.MailboxAttrSent, imap.MailboxAttrDrafts, imap.MailboxAttrTrash, imap.MailboxAttrJunk,
			imap.MailboxAttrArchive, imap.MailboxAttrAll, imap.MailboxAttrFlagged, imap.MailboxAttrImportant:
			use = string(a)
		default:
			return no("USEATTR", "Unsupported special use %s", a)
		}
	}
	_, err := s.apply(&storage.CreateFolder{MailboxID: s.mailboxID(), Name: name, SpecialUse: use, At: s.srv.now().Unix()})
	return err
}

// Delete implements imapserver.Session.
func (s *session) Delete(mailbox string) error {
	f, err := s.folder(mailbox)
	if err != nil {
		return err
	}
	if f.Name == "INBOX" {
		return no(imap.ResponseCodeCannot, "INBOX cannot be deleted")
	}
	_, err = s.apply(&storage.DeleteFolder{FolderID: f.ID})
	return err
}

// Rename implements imapserver.Session. Folders below the old name move
// along; renaming INBOX moves its messages to a new folder.
func (s *session) Rename(mailbox, newName string, _ *imap.RenameOptions) error {
	f, err := s.folder(mailbox)
	if err != nil {
		return err
	}
	to := canonicalName(newName)
	if to == "INBOX" {
		return no(imap.ResponseCodeAlreadyExists, "INBOX always exists")
	}
	if err := checkNewName(to); err != nil {
		return err
	}
	if to == f.Name {
		return no(imap.ResponseCodeAlreadyExists, "Mailbox already has that name")
	}
	if strings.HasPrefix(to, f.Name+string(delim)) {
		return no(imap.ResponseCodeCannot, "A mailbox cannot be moved below itself")
	}
	_, err = s.apply(&storage.RenameFolder{FolderID: f.ID, NewName: to, At: s.srv.now().Unix()})
	return err
}

// Subscribe implements imapserver.Session.
func (s *session) Subscribe(mailbox string) error { return s.subscribe(mailbox, true) }

// Unsubscribe implements imapserver.Session.
func (s *session) Unsubscribe(mailbox string) error { return s.subscribe(mailbox, false) }

func (s *session) subscribe(mailbox string, on bool) error {
	f, err := s.folder(mailbox)
	if err != nil {
		return err
	}
	_, err = s.apply(&storage.Subscribe{FolderID: f.ID, Subscribed: on})
	return err
}

// Status implements imapserver.Session.
func (s *session) Status(mailbox string, options *imap.StatusOptions) (*imap.StatusData, error) {
	f, err := s.folder(mailbox)
	if err != nil {
		return nil, err
	}
	return s.status(f, options)
}

// status fills every item options asks for: imapserver dereferences them.
func (s *session) status(f storage.Folder, options *imap.StatusOptions) (*imap.StatusData, error) {
	data := &imap.StatusData{
		Mailbox:       f.Name,
		UIDNext:       imap.UID(f.UIDNext),
		UIDValidity:   f.UIDValidity,
		HighestModSeq: f.HighestModSeq,
	}
	if options.NumMessages || options.NumUnseen || options.NumDeleted || options.Size {
		st, err := s.srv.Store.Stats(s.ctx, f.ID)
		if err != nil {
			return nil, s.fail("folder stats", err)
		}
		messages, unseen, deleted := uint32(st.Messages), uint32(st.Unseen), uint32(st.Deleted)
		data.NumMessages, data.NumUnseen, data.NumDeleted, data.Size = &messages, &unseen, &deleted, &st.Size
	}
	if options.DeletedStorage {
		msgs, err := s.srv.Store.Messages(s.ctx, f.ID)
		if err != nil {
			return nil, s.fail("folder messages", err)
		}
		var n int64
		for _, m := range msgs {
			if hasFlag(m.Flags, string(imap.FlagDeleted)) {
				n += m.Size
			}
		}
		data.DeletedStorage = &n
	}
	if options.AppendLimit {
		l := s.AppendLimit()
		data.AppendLimit = &l
	}
	if options.NumRecent {
		var zero uint32
		data.NumRecent = &zero
	}
	return data, nil
}

// Append implements imapserver.Session: the message is stored exactly as
// sent, through a Deliver command that enforces the quota.
func (s *session) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	// Refused before the message is spooled (imapserver discards it).
	if err := s.writable("append"); err != nil {
		return nil, err
	}
	f, err := s.srv.Store.FolderByName(s.ctx, s.mailboxID(), canonicalName(mailbox))
	if storage.IsCode(err, storage.ErrNotFound) {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	} else if err != nil {
		return nil, s.fail("find folder", err)
	}
	limit := s.srv.maxMessageBytes()
	if r.Size() > limit {
		return nil, no(imap.ResponseCodeTooBig, "Messages are limited to %d bytes", limit)
	}
	// The literal goes to a spool file as it arrives; it is read into
	// memory once, into the raft log entry, within the in-flight budget.
	msg, err := s.srv.Spool.Receive(io.LimitReader(r, limit+1))
	if errors.Is(err, spool.ErrWrite) {
		s.log.Error("APPEND not stored: spool", "err", err)
		return nil, unavailable("Cannot take the message now, try again later")
	} else if err != nil {
		return nil, err
	}
	defer msg.Close()
	if msg.Size() > limit {
		return nil, no(imap.ResponseCodeTooBig, "Messages are limited to %d bytes", limit)
	}
	flags, err := flagStrings(options.Flags)
	if err != nil {
		return nil, err
	}
	date := options.Time
	if date.IsZero() {
		date = s.srv.now()
	}
	held, err := s.srv.Budget.Acquire(s.ctx, msg.Size())
	if err != nil {
		s.log.Warn("APPEND not stored for now: too many bytes in flight", "size", msg.Size(), "err", err)
		return nil, unavailable("Server busy, try again later")
	}
	defer held.Release()
	res, err := applyAs[*storage.DeliverResult](s, &storage.Deliver{
		Targets:      []storage.Target{{MailboxID: f.MailboxID, Folder: f.Name, Flags: flags, EnforceQuota: true}},
		InternalDate: date.Unix(),
		Tail:         msg.Reader(),
	})
	if code(err) == imap.ResponseCodeNonExistent {
		return nil, no(imap.ResponseCodeTryCreate, "No such mailbox")
	} else if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, s.fail("append", errUnexpected("deliver", res))
	}
	if len(res.Placed) == 0 {
		return nil, no(imap.ResponseCodeOverQuota, "Mailbox is over its quota")
	}
	p := res.Placed[0]
	return &imap.AppendData{UID: imap.UID(p.UID), UIDValidity: p.UIDValidity}, nil
}

// List implements imapserver.Session (LIST, LIST-EXTENDED, LIST-STATUS and
// LSUB, which imapserver turns into LIST with SelectSubscribed).
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	folders, err := s.srv.Store.Folders(s.ctx, s.mailboxID())
	if err != nil {
		return s.fail("list folders", err)
	}

	// Every level above a folder is listed too, as a name with children
	// (\Noselect or \NonExistent if it is not a folder itself).
	byName := map[string]*storage.Folder{}
	hasChildren := map[string]bool{}
	subscribedBelow := map[string]bool{}
	all := map[string]bool{}
	for i := range folders {
		f := &folders[i]
		byName[f.Name] = f
		all[f.Name] = true
		for j := 1; j < len(f.Name); j++ {
			if f.Name[j] != delim {
				continue
			}
			parent := f.Name[:j]
			all[parent] = true
			hasChildren[parent] = true
			if f.Subscribed {
				subscribedBelow[parent] = true
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "INBOX") != (names[j] == "INBOX") {
			return names[i] == "INBOX"
		}
		return names[i] < names[j]
	})

	ref = canonicalPattern(ref)
	for i := range patterns {
		patterns[i] = canonicalPattern(patterns[i])
	}
	rev2 := s.conn.EnabledCaps().Has(imap.CapIMAP4rev2)

	for _, name := range names {
		matched := false
		for _, p := range patterns {
			if imapserver.MatchList(name, delim, ref, p) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		f := byName[name]
		data := imap.ListData{Mailbox: name, Delim: delim}
		subscribed := f != nil && f.Subscribed
		if options.SelectSubscribed && !subscribed {
			if !(options.SelectRecursiveMatch && subscribedBelow[name]) {
				continue
			}
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if options.SelectSpecialUse && (f == nil || f.SpecialUse == "") {
			continue
		}
		if f == nil {
			if rev2 {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNonExistent)
			} else {
				data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
			}
		}
		if subscribed && (options.SelectSubscribed || options.ReturnSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if hasChildren[name] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if f != nil && f.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(f.SpecialUse))
		}
		if options.ReturnStatus != nil && f != nil {
			st, err := s.status(*f, options.ReturnStatus)
			if err != nil {
				return err
			}
			data.Status = st
		}
		if err := w.WriteList(&data); err != nil {
			return err
		}
	}
	return nil
}
