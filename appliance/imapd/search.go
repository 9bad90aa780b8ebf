package imapd

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"sigillo/storage"
	"sigillo/storage/mailtext"
)

// What one SEARCH may cost. A search key is one criterion (BODY x, SEEN,
// a sequence set, NOT, OR, …); BODY and TEXT keys each cost a look-up in
// the store's full-text index; NOT and OR nest. Beyond these a SEARCH is
// refused with NO [LIMIT] (RFC 5530) before anything is read, and one
// that runs longer than the Server's SearchTimeout is stopped and refused
// the same way.
const (
	maxSearchKeys        = 1000
	maxSearchTextKeys    = 100
	maxSearchDepth       = 100
	defaultSearchTimeout = 15 * time.Second
)

// checkSearchCost refuses criteria beyond the limits.
func checkSearchCost(c *imap.SearchCriteria) error {
	var cost searchCost
	if cost.add(c, 0) {
		return nil
	}
	switch {
	case cost.depth > maxSearchDepth:
		return no(imap.ResponseCodeLimit, "SEARCH nests NOT and OR more than %d deep", maxSearchDepth)
	case cost.text > maxSearchTextKeys:
		return no(imap.ResponseCodeLimit, "SEARCH has more than %d BODY and TEXT keys", maxSearchTextKeys)
	default:
		return no(imap.ResponseCodeLimit, "SEARCH has more than %d search keys", maxSearchKeys)
	}
}

type searchCost struct{ keys, text, depth int }

// add counts c at depth, and tells whether the total is within the limits
// (it stops counting at the first limit passed).
func (sc *searchCost) add(c *imap.SearchCriteria, depth int) bool {
	if depth > maxSearchDepth {
		sc.depth = depth
		return false
	}
	n := len(c.SeqNum) + len(c.UID) + len(c.Flag) + len(c.NotFlag) + len(c.Header) + len(c.Body) + len(c.Text) + len(c.Not) + len(c.Or)
	for _, set := range []bool{!c.Since.IsZero(), !c.Before.IsZero(), !c.SentSince.IsZero(), !c.SentBefore.IsZero(), c.Larger != 0, c.Smaller != 0} {
		if set {
			n++
		}
	}
	sc.keys += n
	sc.text += len(c.Body) + len(c.Text)
	if sc.keys > maxSearchKeys || sc.text > maxSearchTextKeys {
		return false
	}
	for i := range c.Not {
		if !sc.add(&c.Not[i], depth+1) {
			return false
		}
	}
	for i := range c.Or {
		if !sc.add(&c.Or[i][0], depth+1) || !sc.add(&c.Or[i][1], depth+1) {
			return false
		}
	}
	return true
}

func (s *Server) searchTimeout() time.Duration {
	if s.SearchTimeout > 0 {
		return s.SearchTimeout
	}
	return defaultSearchTimeout
}

// Search implements imapserver.Session over the messages of the view.
// Criteria on flags, dates, sizes and sets use the store's message rows;
// header criteria the header cache; BODY and TEXT the store's full-text
// index, reading a message itself only when the index does not hold all
// its text.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	v, err := s.selected()
	if err != nil {
		return nil, err
	}
	if err := checkSearchCost(criteria); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.searchTimeout())
	defer cancel()
	f, err := s.srv.Store.FolderByID(ctx, v.folder.ID)
	if err != nil {
		return nil, s.searchFailed(ctx, err)
	}
	msgs, err := s.messages(f)
	if err != nil {
		return nil, s.searchFailed(ctx, err)
	}
	v.staticCriteria(criteria)
	texts, err := s.textMatches(ctx, f.ID, criteria)
	if err != nil {
		return nil, s.searchFailed(ctx, err)
	}
	data := &imap.SearchData{}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for i, m := range msgs {
		if i%64 == 0 && ctx.Err() != nil {
			return nil, s.searchFailed(ctx, ctx.Err())
		}
		seq := v.seqOf(m.UID)
		if seq == 0 || v.ghosts[m.UID] {
			continue // not (or no longer) in the client's view
		}
		c := &candidate{s: s, ctx: ctx, seq: seq, m: m, texts: texts}
		ok, err := c.match(criteria)
		if err != nil {
			return nil, s.searchFailed(ctx, err)
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

// searchFailed is NO [LIMIT] for a search that ran out of time, else what
// fail says.
func (s *session) searchFailed(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && s.ctx.Err() == nil {
		s.log.Info("imap search stopped", "after", s.srv.searchTimeout())
		return no(imap.ResponseCodeLimit, "SEARCH took more than %v: search for something narrower", s.srv.searchTimeout())
	}
	return s.fail("search", err)
}

// textKey is one BODY (header false) or TEXT (header true) key.
type textKey struct {
	pattern string
	header  bool
}

// textMatches is what the full-text index says of a folder for the BODY
// and TEXT keys of a search.
type textMatches struct {
	found map[textKey]map[string]bool // contents by SHA-256
	// uncertain are the messages whose text the index does not hold
	// whole: where found says no, they are read.
	uncertain map[uint32]bool
}

// textMatches looks every BODY and TEXT key of the criteria up in the
// index, once each.
func (s *session) textMatches(ctx context.Context, folderID int64, criteria *imap.SearchCriteria) (*textMatches, error) {
	keys := map[textKey]bool{}
	var collect func(c *imap.SearchCriteria)
	collect = func(c *imap.SearchCriteria) {
		for _, p := range c.Body {
			keys[textKey{p, false}] = true
		}
		for _, p := range c.Text {
			keys[textKey{p, true}] = true
		}
		for i := range c.Not {
			collect(&c.Not[i])
		}
		for i := range c.Or {
			collect(&c.Or[i][0])
			collect(&c.Or[i][1])
		}
	}
	collect(criteria)
	delete(keys, textKey{"", false})
	delete(keys, textKey{"", true})
	if len(keys) == 0 {
		return nil, nil
	}
	// Uncertain first: a message indexed between the two reads is then
	// in one or the other, never in neither.
	uncertain, err := s.srv.Store.TextUncertain(ctx, folderID)
	if err != nil {
		return nil, err
	}
	tm := &textMatches{found: map[textKey]map[string]bool{}, uncertain: uncertain}
	for k := range keys {
		if tm.found[k], err = s.srv.Store.SearchText(ctx, folderID, k.pattern, k.header); err != nil {
			return nil, err
		}
	}
	return tm, nil
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
	s      *session
	ctx    context.Context
	seq    uint32
	m      storage.Message
	texts  *textMatches
	text   *mailtext.Text // the whole text, for a message the index is unsure of
	header *mail.Header
}

// hasText is BODY (withHeader false) and TEXT: the index's answer, or for
// a message whose text it does not hold whole, the message's own.
func (c *candidate) hasText(pattern string, withHeader bool) (bool, error) {
	if pattern == "" {
		return true, nil
	}
	if c.texts.found[textKey{pattern, withHeader}][c.m.SHA256] {
		return true, nil
	}
	if !c.texts.uncertain[c.m.UID] {
		return false, nil
	}
	if c.text == nil {
		content, err := c.s.srv.Store.Content(c.ctx, c.m.SHA256)
		if err != nil {
			return false, err
		}
		t := mailtext.Extract(content, mailtext.Full())
		c.text = &t
	}
	return storage.ContainsFold(c.text.Body, pattern) || (withHeader && storage.ContainsFold(c.text.Header, pattern)), nil
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
		if ok, err := c.hasText(text, true); err != nil || !ok {
			return false, err
		}
	}
	for _, body := range cr.Body {
		if ok, err := c.hasText(body, false); err != nil || !ok {
			return false, err
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
