package imapd

import (
	"bytes"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"sigillo/storage"
)

// maxSearchDepth bounds the MIME parts walked for BODY and TEXT.
const maxSearchDepth = 20

// Search implements imapserver.Session over the messages of the view.
// Criteria on flags, dates, sizes and sets use the store's message rows;
// header and text criteria read the content, only when asked for.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	v, err := s.selected()
	if err != nil {
		return nil, err
	}
	f, err := s.srv.Store.FolderByID(s.ctx, v.folder.ID)
	if err != nil {
		return nil, s.fail("search", err)
	}
	msgs, err := s.messages(f)
	if err != nil {
		return nil, s.fail("search", err)
	}
	v.staticCriteria(criteria)
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for _, m := range msgs {
		seq := v.seqOf(m.UID)
		if seq == 0 || v.ghosts[m.UID] {
			continue // not (or no longer) in the client's view
		}
		c := &candidate{s: s, seq: seq, m: m}
		ok, err := c.match(criteria)
		if err != nil {
			return nil, s.fail("search", err)
		}
		if !ok {
			continue
		}
		uids.AddNum(imap.UID(m.UID))
		num := seq
		if kind == imapserver.NumKindUID {
			num = m.UID
		} else {
			seqs.AddNum(seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		if num > data.Max {
			data.Max = num
		}
		data.Count++
	}
	if kind == imapserver.NumKindUID {
		data.All = uids
	} else {
		data.All = seqs
	}
	if options != nil && options.ReturnSave {
		s.mu.Lock()
		v.searchRes = uids
		s.mu.Unlock()
	}
	return data, nil
}

// staticCriteria replaces * and $ in the criteria's sets by what they stand
// for in this view.
func (v *view) staticCriteria(c *imap.SearchCriteria) {
	var seqSets []imap.SeqSet
	for _, set := range c.SeqNum {
		n := uint32(len(v.uids))
		static := make(imap.SeqSet, len(set))
		for i, r := range set {
			start, stop := staticRange(r.Start, r.Stop, n)
			static[i] = imap.SeqRange{Start: start, Stop: stop}
		}
		seqSets = append(seqSets, static)
	}
	c.SeqNum = seqSets
	for i, set := range c.UID {
		if imap.IsSearchRes(set) {
			c.UID[i] = v.searchRes
			if c.UID[i] == nil {
				c.UID[i] = imap.UIDSet{}
			}
			continue
		}
		c.UID[i] = v.staticUIDs(set)
	}
	for i := range c.Not {
		v.staticCriteria(&c.Not[i])
	}
	for i := range c.Or {
		v.staticCriteria(&c.Or[i][0])
		v.staticCriteria(&c.Or[i][1])
	}
}

// candidate is one message being matched; its content and header are read
// once, on first need.
type candidate struct {
	s       *session
	seq     uint32
	m       storage.Message
	content []byte
	loaded  bool
	header  *mail.Header
}

func (c *candidate) load() ([]byte, error) {
	if !c.loaded {
		b, err := c.s.srv.Store.Content(c.s.ctx, c.m.SHA256)
		if err != nil {
			return nil, err
		}
		c.content, c.loaded = b, true
	}
	return c.content, nil
}

func (c *candidate) mailHeader() (*mail.Header, error) {
	if c.header == nil {
		_, parsed, err := c.s.header(c.m)
		if err != nil {
			return nil, err
		}
		c.header = &mail.Header{Header: gomessage.Header{Header: parsed}}
	}
	return c.header, nil
}

func (c *candidate) match(cr *imap.SearchCriteria) (bool, error) {
	for _, set := range cr.SeqNum {
		if !set.Contains(c.seq) {
			return false, nil
		}
	}
	for _, set := range cr.UID {
		if !set.Contains(imap.UID(c.m.UID)) {
			return false, nil
		}
	}
	if !matchDate(c.m.InternalDate, cr.Since, cr.Before) {
		return false, nil
	}
	for _, f := range cr.Flag {
		if !hasFlag(c.m.Flags, string(f)) {
			return false, nil
		}
	}
	for _, f := range cr.NotFlag {
		if hasFlag(c.m.Flags, string(f)) {
			return false, nil
		}
	}
	if cr.Larger != 0 && c.m.Size <= cr.Larger {
		return false, nil
	}
	if cr.Smaller != 0 && c.m.Size >= cr.Smaller {
		return false, nil
	}
	if len(cr.Header) > 0 || !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
		h, err := c.mailHeader()
		if err != nil {
			return false, err
		}
		for _, hc := range cr.Header {
			if !matchHeaderField(h.FieldsByKey(hc.Key), hc.Value) {
				return false, nil
			}
		}
		if !cr.SentSince.IsZero() || !cr.SentBefore.IsZero() {
			t, err := h.Date()
			if err != nil || t.IsZero() || !matchDate(t, cr.SentSince, cr.SentBefore) {
				return false, nil
			}
		}
	}
	for _, text := range cr.Text {
		content, err := c.load()
		if err != nil {
			return false, err
		}
		if !matchText(content, text, true) {
			return false, nil
		}
	}
	for _, body := range cr.Body {
		content, err := c.load()
		if err != nil {
			return false, err
		}
		if !matchText(content, body, false) {
			return false, nil
		}
	}
	for i := range cr.Not {
		ok, err := c.match(&cr.Not[i])
		if err != nil || ok {
			return false, err
		}
	}
	for i := range cr.Or {
		ok, err := c.match(&cr.Or[i][0])
		if err != nil {
			return false, err
		}
		if !ok {
			if ok, err = c.match(&cr.Or[i][1]); err != nil || !ok {
				return false, err
			}
		}
	}
	return true, nil
}

// matchDate compares dates only, ignoring time and zone (RFC 9051).
func matchDate(t, since, before time.Time) bool {
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if !since.IsZero() && d.Before(time.Date(since.Year(), since.Month(), since.Day(), 0, 0, 0, 0, time.UTC)) {
		return false
	}
	if !before.IsZero() && !d.Before(time.Date(before.Year(), before.Month(), before.Day(), 0, 0, 0, 0, time.UTC)) {
		return false
	}
	return true
}

// matchHeaderField: an empty pattern asks only that the field be present.
func matchHeaderField(fields gomessage.HeaderFields, pattern string) bool {
	if pattern == "" {
		return fields.Len() > 0
	}
	pattern = strings.ToLower(pattern)
	for fields.Next() {
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		if strings.Contains(strings.ToLower(v), pattern) {
			return true
		}
	}
	return false
}

// matchText is SEARCH BODY (withHeader false) and TEXT: a case-insensitive
// substring of the decoded text parts (and header fields), or of the raw
// bytes, so that malformed MIME is still searchable.
func matchText(content []byte, pattern string, withHeader bool) bool {
	if pattern == "" {
		return true
	}
	p := bytes.ToLower([]byte(pattern))
	header, text := splitMessage(content)
	if withHeader && bytes.Contains(bytes.ToLower(header), p) {
		return true
	}
	if bytes.Contains(bytes.ToLower(text), p) {
		return true
	}
	if tooDeep(content) {
		return false
	}
	e, err := gomessage.Read(bytes.NewReader(content))
	if e == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
		return false
	}
	return matchEntity(e, p, withHeader, 0)
}

func matchEntity(e *gomessage.Entity, p []byte, withHeader bool, depth int) (found bool) {
	defer func() {
		if recover() != nil {
			found = false
		}
	}()
	if depth > maxSearchDepth {
		return false
	}
	if withHeader {
		for f := e.Header.Fields(); f.Next(); {
			v, err := f.Text()
			if err != nil {
				v = f.Value()
			}
			if bytes.Contains(bytes.ToLower([]byte(v)), p) {
				return true
			}
		}
	}
	if mr := e.MultipartReader(); mr != nil {
		for {
			part, err := mr.NextPart()
			if part == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
				return false
			}
			if matchEntity(part, p, withHeader, depth+1) {
				return true
			}
		}
	}
	t, _, _ := e.Header.ContentType()
	if !strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "message/") {
		return false
	}
	body, err := io.ReadAll(io.LimitReader(e.Body, 64<<20))
	if err != nil && len(body) == 0 {
		return false
	}
	return bytes.Contains(bytes.ToLower(body), p)
}
