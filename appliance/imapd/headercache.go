package imapd

import (
	"container/list"
	"sync"

	"github.com/emersion/go-message/textproto"

	"sigillo/storage"
)

// headerCacheBytes bounds the memory of the header sections kept, raw and
// parsed (about 20,000 messages' headers).
const headerCacheBytes = 48 << 20

// headerCache keeps the header section of recently read messages by
// content hash: content never changes under its hash, so an entry is never
// stale. SEARCH on header fields and FETCH ENVELOPE read only this, instead
// of each message's whole content from the store every time.
type headerCache struct {
	mu    sync.Mutex
	size  int
	order *list.List               // most recently used first
	byKey map[string]*list.Element // sha256 → element holding a headerEntry
}

type headerEntry struct {
	sha    string
	hdr    []byte
	parsed textproto.Header // read only: shared by every session
}

func (c *headerCache) get(sha string) (headerEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[sha]; ok {
		c.order.MoveToFront(e)
		return e.Value.(headerEntry), true
	}
	return headerEntry{}, false
}

func (c *headerCache) put(sha string, hdr []byte, parsed textproto.Header) {
	if len(hdr) > headerCacheBytes/64 {
		return // an absurd header is not worth a sixty-fourth of the cache
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		c.byKey, c.order = map[string]*list.Element{}, list.New()
	}
	if _, ok := c.byKey[sha]; ok {
		return
	}
	c.byKey[sha] = c.order.PushFront(headerEntry{sha, hdr, parsed})
	// The parsed form (a map, and a struct per field) takes about seven
	// times the raw bytes.
	c.size += entryCost(hdr, sha)
	for c.size > headerCacheBytes {
		old := c.order.Back()
		e := old.Value.(headerEntry)
		c.order.Remove(old)
		delete(c.byKey, e.sha)
		c.size -= entryCost(e.hdr, e.sha)
	}
}

func entryCost(hdr []byte, sha string) int { return 8*len(hdr) + len(sha) + 64 }

// header returns the header section of m (with the empty line that ends
// it) and its parsed fields, from the cache or from the store. The parsed
// header is shared: callers only read it.
func (s *session) header(m storage.Message) ([]byte, textproto.Header, error) {
	if e, ok := s.srv.headers.get(m.SHA256); ok {
		return e.hdr, e.parsed, nil
	}
	content, err := s.srv.Store.Content(s.ctx, m.SHA256)
	if err != nil {
		return nil, textproto.Header{}, err
	}
	h, _ := splitMessage(content)
	h = append([]byte(nil), h...) // not the whole content's array
	parsed := readHeader(h)
	s.srv.headers.put(m.SHA256, h, parsed)
	return h, parsed, nil
}

// folderCacheRows bounds the message rows kept by folderCache (about
// 40 MB); one folder may take half (SEARCH on a folder of 100,000
// messages should not read them all from the store each time).
const folderCacheRows = 200_000

// folderCache keeps the message rows of recently read folders at their
// highest modseq. Every change to a folder (a message in or out, a flag)
// raises its modseq, and a folder made again gets a new UIDVALIDITY, so
// rows cached under (id, UIDVALIDITY, modseq) are exactly the folder's.
// SELECT and SEARCH read these instead of the whole folder from the store.
type folderCache struct {
	mu      sync.Mutex
	rows    int
	entries map[int64]folderEntry
}

type folderEntry struct {
	validity uint32
	modseq   uint64
	msgs     []storage.Message // read only: shared by every session
}

// get returns the rows of f at its modseq, or else (ok false) the rows of
// an older state of the same folder, if any (older nil otherwise).
func (c *folderCache) get(f storage.Folder) (msgs []storage.Message, ok bool, older *folderEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.entries[f.ID]
	switch {
	case !found || e.validity != f.UIDValidity || e.modseq > f.HighestModSeq:
		return nil, false, nil
	case e.modseq == f.HighestModSeq:
		return e.msgs, true, nil
	}
	return nil, false, &e
}

func (c *folderCache) put(f storage.Folder, msgs []storage.Message) {
	if len(msgs) > folderCacheRows/2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[int64]folderEntry{}
	}
	if old, ok := c.entries[f.ID]; ok {
		if old.modseq > f.HighestModSeq {
			return // a slower reader of an older state
		}
		c.rows -= len(old.msgs)
	}
	for id, e := range c.entries {
		if c.rows+len(msgs) <= folderCacheRows {
			break
		}
		c.rows -= len(e.msgs)
		delete(c.entries, id)
	}
	c.entries[f.ID] = folderEntry{f.UIDValidity, f.HighestModSeq, msgs}
	c.rows += len(msgs)
}

// messages returns the messages of f, whose row the caller has just read
// (its modseq says which state is wanted), from the cache or the store.
// The slice is shared: callers only read it.
func (s *session) messages(f storage.Folder) ([]storage.Message, error) {
	cached, ok, older := s.srv.folders.get(f)
	if ok {
		return cached, nil
	}
	var msgs []storage.Message
	if older != nil {
		// An older state is cached: bring it up to date with the rows
		// changed since (indexed by modseq) and the UIDs still there.
		msgs = s.catchUp(f, older)
	}
	if msgs == nil {
		var err error
		if msgs, err = s.srv.Store.Messages(s.ctx, f.ID); err != nil {
			return nil, err
		}
	}
	// The rows may be newer than f (a delivery in between): cache them
	// under the folder's modseq as it is now only if it is still f's.
	if now, err := s.srv.Store.FolderByID(s.ctx, f.ID); err == nil && now.HighestModSeq == f.HighestModSeq && now.UIDValidity == f.UIDValidity {
		s.srv.folders.put(f, msgs)
	}
	return msgs, nil
}

// catchUp derives the rows of f from an older cached state; nil when the
// reads do not fit together (a change in between): then read them all.
func (s *session) catchUp(f storage.Folder, older *folderEntry) []storage.Message {
	uids, err := s.srv.Store.FolderUIDs(s.ctx, f.ID)
	if err != nil {
		return nil
	}
	changed, err := s.srv.Store.ChangedSince(s.ctx, f.ID, older.modseq)
	if err != nil {
		return nil
	}
	byUID := make(map[uint32]storage.Message, len(changed))
	for _, m := range changed {
		byUID[m.UID] = m
	}
	out := make([]storage.Message, 0, len(uids))
	i := 0
	for _, uid := range uids {
		if m, ok := byUID[uid]; ok {
			out = append(out, m)
			continue
		}
		for i < len(older.msgs) && older.msgs[i].UID < uid {
			i++
		}
		if i == len(older.msgs) || older.msgs[i].UID != uid {
			return nil // a message neither old nor changed: read it all
		}
		out = append(out, older.msgs[i])
	}
	return out
}
