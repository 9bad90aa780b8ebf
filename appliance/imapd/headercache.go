package imapd

import (
	"container/list"
	"sync"

	"sigillo/storage"
)

// headerCacheBytes bounds the header sections kept in memory (about 10,000
// messages' headers).
const headerCacheBytes = 16 << 20

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
	sha string
	hdr []byte
}

func (c *headerCache) get(sha string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[sha]; ok {
		c.order.MoveToFront(e)
		return e.Value.(headerEntry).hdr, true
	}
	return nil, false
}

func (c *headerCache) put(sha string, hdr []byte) {
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
	c.byKey[sha] = c.order.PushFront(headerEntry{sha, hdr})
	c.size += len(hdr) + len(sha)
	for c.size > headerCacheBytes {
		old := c.order.Back()
		e := old.Value.(headerEntry)
		c.order.Remove(old)
		delete(c.byKey, e.sha)
		c.size -= len(e.hdr) + len(e.sha)
	}
}

// header returns the header section of m (with the empty line that ends
// it), from the cache or from the store.
func (s *session) header(m storage.Message) ([]byte, error) {
	if h, ok := s.srv.headers.get(m.SHA256); ok {
		return h, nil
	}
	content, err := s.srv.Store.Content(s.ctx, m.SHA256)
	if err != nil {
		return nil, err
	}
	h, _ := splitMessage(content)
	h = append([]byte(nil), h...) // not the whole content's array
	s.srv.headers.put(m.SHA256, h)
	return h, nil
}
