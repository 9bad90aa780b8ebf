package storage

// The commands on a mailbox's folders and their messages (IMAP): folders
// created, deleted, renamed and subscribed, flags stored, messages
// expunged and copied or moved.

import (
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
)

// CreateFolder makes a folder in a mailbox.
type CreateFolder struct {
	MailboxID  int64  `json:"mailbox_id"`
	Name       string `json:"name"`
	SpecialUse string `json:"special_use,omitempty"`
	At         int64  `json:"at"` // seeds UIDVALIDITY
}

// Op implements Command.
func (*CreateFolder) Op() string { return "create-folder" }

func (c *CreateFolder) apply(t *txn) (any, error) {
	if err := validFolderName(c.Name); err != nil {
		return nil, err
	}
	return t.createFolder(c.MailboxID, c.Name, c.SpecialUse, c.At)
}

// DeleteFolder removes a folder and its messages. INBOX cannot be deleted.
type DeleteFolder struct {
	FolderID int64 `json:"folder_id"`
}

// Op implements Command.
func (*DeleteFolder) Op() string { return "delete-folder" }

func (c *DeleteFolder) apply(t *txn) (any, error) {
	f, err := t.folder(c.FolderID)
	if err != nil {
		return nil, err
	}
	if f.Name == "INBOX" {
		return nil, refuse(ErrInvalid, "INBOX cannot be deleted")
	}
	if _, err := t.exec(`UPDATE mailboxes SET used_bytes = used_bytes - (SELECT coalesce(sum(size),0) FROM messages WHERE folder_id=?) WHERE id=?`, f.ID, f.MailboxID); err != nil {
		return nil, err
	}
	if err := t.deleteMessagesWhere("folder_id=?", f.ID); err != nil {
		return nil, err
	}
	if _, err := t.exec("DELETE FROM folders WHERE id=?", f.ID); err != nil {
		return nil, err
	}
	t.changed(f.MailboxID, 0)
	return nil, nil
}

// RenameFolder renames a folder and the folders below it. Renaming INBOX
// moves its messages to a new folder and leaves INBOX empty (RFC 9051).
type RenameFolder struct {
	FolderID int64  `json:"folder_id"`
	NewName  string `json:"new_name"`
	At       int64  `json:"at"`
}

// Op implements Command.
func (*RenameFolder) Op() string { return "rename-folder" }

func (c *RenameFolder) apply(t *txn) (any, error) {
	if err := validFolderName(c.NewName); err != nil {
		return nil, err
	}
	f, err := t.folder(c.FolderID)
	if err != nil {
		return nil, err
	}
	var n int
	if err := t.row("SELECT count(*) FROM folders WHERE mailbox_id=? AND name=?", f.MailboxID, c.NewName).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		return nil, refuse(ErrExists, "folder %s already exists", c.NewName)
	}
	if f.Name == "INBOX" {
		newID, err := t.createFolder(f.MailboxID, c.NewName, "", c.At)
		if err != nil {
			return nil, err
		}
		nf, err := t.folder(newID)
		if err != nil {
			return nil, err
		}
		modseq, err := t.bumpModSeq(nf.ID)
		if err != nil {
			return nil, err
		}
		// Renumber the messages in their new folder, in UID order.
		rows, err := t.tx.QueryContext(t.ctx, "SELECT id FROM messages WHERE folder_id=? ORDER BY uid", f.ID)
		if err != nil {
			return nil, err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		uid := nf.UIDNext
		for _, id := range ids {
			if _, err := t.exec("UPDATE messages SET folder_id=?, uid=?, modseq=? WHERE id=?", nf.ID, uid, modseq, id); err != nil {
				return nil, err
			}
			uid++
		}
		if _, err := t.exec("UPDATE folders SET uidnext=? WHERE id=?", uid, nf.ID); err != nil {
			return nil, err
		}
		if _, err := t.bumpModSeq(f.ID); err != nil {
			return nil, err
		}
		t.changed(f.MailboxID, f.ID)
		t.changed(f.MailboxID, 0)
		return nil, nil
	}
	// substr and length count characters, not bytes: folder names may be
	// any UTF-8.
	if _, err := t.exec(`UPDATE folders SET name = ? || substr(name, length(?)+1) WHERE mailbox_id=? AND (name=? OR substr(name, 1, length(?)) = ?)`,
		c.NewName, f.Name, f.MailboxID, f.Name, f.Name+"/", f.Name+"/"); err != nil {
		return nil, err
	}
	t.changed(f.MailboxID, 0)
	return nil, nil
}

// Subscribe sets a folder's subscription.
type Subscribe struct {
	FolderID   int64 `json:"folder_id"`
	Subscribed bool  `json:"subscribed"`
}

// Op implements Command.
func (*Subscribe) Op() string { return "subscribe" }

func (c *Subscribe) apply(t *txn) (any, error) {
	f, err := t.folder(c.FolderID)
	if err != nil {
		return nil, err
	}
	_, err = t.exec("UPDATE folders SET subscribed=? WHERE id=?", c.Subscribed, f.ID)
	return nil, err
}

// FlagMode says how StoreFlags combines the given flags with the present ones.
type FlagMode string

// The three STORE forms.
const (
	FlagsSet    FlagMode = "set"
	FlagsAdd    FlagMode = "add"
	FlagsRemove FlagMode = "remove"
)

// StoreFlags changes the flags of messages in one folder.
type StoreFlags struct {
	FolderID int64    `json:"folder_id"`
	UIDs     []uint32 `json:"uids"`
	Mode     FlagMode `json:"mode"`
	Flags    []string `json:"flags"`
	// UnchangedSince, when non-zero, leaves alone messages whose modseq is
	// above it (CONDSTORE); their UIDs come back in FlagsResult.Modified.
	UnchangedSince uint64 `json:"unchanged_since,omitempty"`
}

// Op implements Command.
func (*StoreFlags) Op() string { return "store-flags" }

// FlagUpdate is a message's state after a flag change.
type FlagUpdate struct {
	UID    uint32
	Flags  []string
	ModSeq uint64
}

// FlagsResult is the value of StoreFlags.
type FlagsResult struct {
	Updated  []FlagUpdate // every message found, changed or not
	Modified []uint32     // refused by UnchangedSince
}

func (c *StoreFlags) apply(t *txn) (any, error) {
	f, err := t.folder(c.FolderID)
	if err != nil {
		return nil, err
	}
	res := &FlagsResult{}
	var modseq uint64
	for _, uid := range sortedUIDs(c.UIDs) {
		var id int64
		var flags string
		var ms uint64
		err := t.row("SELECT id, flags, modseq FROM messages WHERE folder_id=? AND uid=?", f.ID, uid).Scan(&id, &flags, &ms)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, err
		}
		if c.UnchangedSince != 0 && ms > c.UnchangedSince {
			res.Modified = append(res.Modified, uid)
			continue
		}
		old := splitFlags(flags)
		nf := applyFlags(old, c.Mode, c.Flags)
		if strings.Join(nf, " ") == flags {
			res.Updated = append(res.Updated, FlagUpdate{UID: uid, Flags: nf, ModSeq: ms})
			continue
		}
		if modseq == 0 {
			if modseq, err = t.bumpModSeq(f.ID); err != nil {
				return nil, err
			}
		}
		if _, err := t.exec("UPDATE messages SET flags=?, modseq=? WHERE id=?", strings.Join(nf, " "), modseq, id); err != nil {
			return nil, err
		}
		res.Updated = append(res.Updated, FlagUpdate{UID: uid, Flags: nf, ModSeq: modseq})
	}
	if modseq != 0 {
		t.changed(f.MailboxID, f.ID)
	}
	return res, nil
}

// Expunge removes messages from a folder: the given UIDs, or with
// OnlyDeleted those of them (or, if UIDs is empty, all) flagged \Deleted.
type Expunge struct {
	FolderID    int64    `json:"folder_id"`
	UIDs        []uint32 `json:"uids,omitempty"`
	OnlyDeleted bool     `json:"only_deleted"`
}

// Op implements Command.
func (*Expunge) Op() string { return "expunge" }

func (c *Expunge) apply(t *txn) (any, error) {
	f, err := t.folder(c.FolderID)
	if err != nil {
		return nil, err
	}
	var candidates []uint32
	if len(c.UIDs) == 0 {
		if !c.OnlyDeleted {
			return nil, refuse(ErrInvalid, "expunge: no messages named")
		}
		candidates, err = t.uids("SELECT uid FROM messages WHERE folder_id=? ORDER BY uid", f.ID)
		if err != nil {
			return nil, err
		}
	} else {
		candidates = sortedUIDs(c.UIDs)
	}
	var gone []uint32
	var freed int64
	for _, uid := range candidates {
		var id, size int64
		var flags, sha string
		err := t.row("SELECT id, size, flags, sha256 FROM messages WHERE folder_id=? AND uid=?", f.ID, uid).Scan(&id, &size, &flags, &sha)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, err
		}
		if c.OnlyDeleted && !hasFlag(splitFlags(flags), `\Deleted`) {
			continue
		}
		if _, err := t.exec("DELETE FROM messages WHERE id=?", id); err != nil {
			return nil, err
		}
		if err := t.releaseBlob(sha); err != nil {
			return nil, err
		}
		freed += size
		gone = append(gone, uid)
	}
	if len(gone) > 0 {
		if _, err := t.exec("UPDATE mailboxes SET used_bytes=used_bytes-? WHERE id=?", freed, f.MailboxID); err != nil {
			return nil, err
		}
		if _, err := t.bumpModSeq(f.ID); err != nil {
			return nil, err
		}
		t.changed(f.MailboxID, f.ID)
	}
	return gone, nil
}

// Copy copies (or with Move, moves) messages to another folder of the same
// mailbox.
type Copy struct {
	FromFolderID int64    `json:"from_folder_id"`
	UIDs         []uint32 `json:"uids"`
	ToFolderID   int64    `json:"to_folder_id"`
	Move         bool     `json:"move"`
	// EnforceQuota refuses a copy (not a move) that would take the mailbox
	// over its quota.
	EnforceQuota bool `json:"enforce_quota,omitempty"`
}

// Op implements Command.
func (*Copy) Op() string { return "copy" }

// CopyResult is the value of Copy: source and destination UIDs pair up.
type CopyResult struct {
	UIDValidity uint32
	Source      []uint32
	Dest        []uint32
}

func (c *Copy) apply(t *txn) (any, error) {
	from, err := t.folder(c.FromFolderID)
	if err != nil {
		return nil, err
	}
	to, err := t.folder(c.ToFolderID)
	if err != nil {
		return nil, err
	}
	if from.MailboxID != to.MailboxID {
		return nil, refuse(ErrInvalid, "copy between mailboxes")
	}
	if c.EnforceQuota && !c.Move {
		var quota, used, add int64
		if err := t.row("SELECT quota_bytes, used_bytes FROM mailboxes WHERE id=?", to.MailboxID).Scan(&quota, &used); err != nil {
			return nil, err
		}
		list, _ := json.Marshal(sortedUIDs(c.UIDs))
		if err := t.row(`SELECT coalesce(sum(size),0) FROM messages WHERE folder_id=?
			AND uid IN (SELECT value FROM json_each(?))`, from.ID, string(list)).Scan(&add); err != nil {
			return nil, err
		}
		if quota > 0 && used+add > quota {
			return nil, refuse(ErrOverQuota, "mailbox is over its quota")
		}
	}
	res := &CopyResult{UIDValidity: to.UIDValidity}
	var freed int64 // bytes the originals of a move held
	for _, uid := range sortedUIDs(c.UIDs) {
		var id, size, date int64
		var sha, flags string
		err := t.row("SELECT id, sha256, size, internal_date, flags FROM messages WHERE folder_id=? AND uid=?", from.ID, uid).
			Scan(&id, &sha, &size, &date, &flags)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		} else if err != nil {
			return nil, err
		}
		stored := true
		if err := t.addBlob(sha, nil, &stored); err != nil {
			return nil, err
		}
		p, err := t.insertMessage(to.MailboxID, to.ID, sha, size, date, flags)
		if err != nil {
			return nil, err
		}
		if c.Move {
			if _, err := t.exec("DELETE FROM messages WHERE id=?", id); err != nil {
				return nil, err
			}
			if err := t.releaseBlob(sha); err != nil {
				return nil, err
			}
			freed += size
		}
		res.Source = append(res.Source, uid)
		res.Dest = append(res.Dest, p.UID)
	}
	if len(res.Source) > 0 && c.Move {
		if _, err := t.bumpModSeq(from.ID); err != nil {
			return nil, err
		}
		t.changed(from.MailboxID, from.ID)
	}
	// insertMessage counted the copies; a move frees the originals.
	if freed > 0 {
		if _, err := t.exec("UPDATE mailboxes SET used_bytes=used_bytes-? WHERE id=?", freed, from.MailboxID); err != nil {
			return nil, err
		}
	}
	return res, nil
}
