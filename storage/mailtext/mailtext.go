// Package mailtext extracts the searchable text of a message: what IMAP
// SEARCH BODY and TEXT look in (RFC 9051 6.4.4), and what the store's
// full-text index holds.
//
// The header text is the raw header section followed by the fields whose
// encoded words (RFC 2047) decode to something else. The body text is, for
// each MIME part in order, its header fields (so that a part's type or file
// name is found) and, for text parts, the content decoded from its transfer
// encoding (quoted-printable, base64) and charset into UTF-8, with HTML
// reduced to its text; attached messages (message/rfc822) are walked as
// messages. Other parts contribute only their header fields. A message that
// is not MIME at all gives its raw body.
//
// Extraction is a pure function of the message bytes and the limits: every
// node of a cluster derives the same text from the same content. It never
// fails: malformed MIME gives what could be read (a multipart without its
// closing boundary, a part cut short), and parts nested deeper than 20 or
// beyond the 1,000th are left out. The result says whether the limits cut
// anything, that is whether more limits would give more text.
//
// It is not a MIME renderer (imapd renders FETCH), does not decode
// attachments (PDF, office files), and does not tokenize: matching is the
// caller's business.
package mailtext

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"strings"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"
)

// Limits bound the text taken from one message, in bytes of UTF-8.
type Limits struct {
	Header int
	Body   int
}

// The store's index keeps at most this much of each message: a 30 MB
// message of text costs the index no more than a long letter. Messages
// cut short are marked, and searched in full when the index says no.
const (
	IndexHeaderBytes = 16 << 10
	IndexBodyBytes   = 128 << 10
)

// Index is the limits of the store's full-text index.
func Index() Limits { return Limits{Header: IndexHeaderBytes, Body: IndexBodyBytes} }

// Full is for searching one message whole: as much as a message can hold.
func Full() Limits { return Limits{Header: 64 << 20, Body: 64 << 20} }

// maxDepth bounds the nesting of multiparts and attached messages walked;
// maxParts the parts read.
const (
	maxDepth = 20
	maxParts = 1000
)

// Text is the searchable text of one message.
type Text struct {
	Header string // for TEXT
	Body   string // for BODY and TEXT
	// Complete is false when the limits cut the text short.
	Complete bool
}

// Extract returns the text of msg within lim.
func Extract(msg []byte, lim Limits) (t Text) {
	x := &extractor{
		header: newBuf(lim.Header),
		body:   newBuf(lim.Body),
	}
	defer func() {
		// go-message may have bugs on hostile input: what was read so
		// far is kept.
		recover()
		t = Text{Header: x.header.String(), Body: x.body.String(), Complete: !x.header.cut && !x.body.cut}
	}()
	rawHeader, rawBody := split(msg)
	x.header.write(rawHeader)
	e, err := gomessage.Read(bytes.NewReader(msg))
	if !readable(e, err) {
		// Not MIME (a header line without a colon, …): the body as it
		// is, which is what a reader sees.
		x.body.write(rawBody)
		return
	}
	x.decodedFields(x.header, e.Header, false)
	x.walk(e, 0)
	return
}

// readable tells whether go-message gave an entity worth walking: unknown
// charsets and transfer encodings still give one (left undecoded).
func readable(e *gomessage.Entity, err error) bool {
	return e != nil && (err == nil || gomessage.IsUnknownCharset(err) || gomessage.IsUnknownEncoding(err))
}

type extractor struct {
	header, body *buf
	parts        int
}

// walk adds the body text of e (its header is the caller's business).
func (x *extractor) walk(e *gomessage.Entity, depth int) {
	if depth > maxDepth {
		return
	}
	if mr := e.MultipartReader(); mr != nil {
		for !x.body.full() {
			// An error ends the multipart: its closing boundary is
			// missing, or the next part's header is garbage.
			p, err := mr.NextPart()
			if !readable(p, err) {
				return
			}
			if x.parts++; x.parts > maxParts {
				return
			}
			x.decodedFields(x.body, p.Header, true)
			x.walk(p, depth+1)
		}
		x.body.cut = true
		return
	}
	t, params, err := e.Header.ContentType()
	if err != nil && e.Header.Get("Content-Type") != "" {
		t = "application/octet-stream" // garbage type: nothing to decode
	}
	switch {
	case t == "" || strings.HasPrefix(t, "text/"):
		r := e.Body
		if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "us-ascii" {
			// Decoded here rather than by go-message, whose charset
			// support is a process-wide switch (it would change what
			// FETCH BINARY returns).
			if cr, err := charset.NewReaderLabel(cs, r); err == nil {
				r = cr
			}
		}
		if t == "text/html" {
			x.html(r)
		} else {
			x.text(r)
		}
		x.body.endLine()
	case t == "message/rfc822" || t == "message/global":
		inner, err := gomessage.Read(e.Body)
		if !readable(inner, err) {
			return
		}
		x.decodedFields(x.body, inner.Header, true)
		x.walk(inner, depth+1)
	}
}

// text adds what r holds, up to what the body may still take.
func (x *extractor) text(r io.Reader) {
	room := x.body.room()
	// A read error (bad base64, a part cut short) keeps what was read.
	b, _ := io.ReadAll(io.LimitReader(r, int64(room)+1))
	if len(b) > room {
		x.body.cut = true
	}
	x.body.write(string(b))
}

// html adds the text of an HTML document: tags dropped, entities decoded,
// script and style left out, block elements on lines of their own and
// runs of white space made one space.
func (x *extractor) html(r io.Reader) {
	// The markup is bounded too: some HTML is mostly markup.
	lr := &io.LimitedReader{R: r, N: int64(4*x.body.room()) + 1}
	z := html.NewTokenizer(lr)
	skip := 0     // inside script or style
	space := true // the text so far ends in white space (or is empty)
	for !x.body.full() {
		switch tt := z.Next(); tt {
		case html.ErrorToken:
			if lr.N <= 0 {
				x.body.cut = true
			}
			return
		case html.TextToken:
			if skip > 0 {
				continue
			}
			var sb strings.Builder
			for _, r := range string(z.Text()) {
				if unicode.IsSpace(r) {
					if !space {
						sb.WriteByte(' ')
						space = true
					}
					continue
				}
				sb.WriteRune(r)
				space = false
			}
			x.body.write(sb.String())
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch n := string(name); {
			case n == "script" || n == "style":
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
			case blockTags[n] && !space:
				x.body.write("\n")
				space = true
			}
		}
	}
	x.body.cut = true
}

var blockTags = map[string]bool{
	"address": true, "article": true, "aside": true, "blockquote": true, "br": true, "dd": true, "div": true,
	"dl": true, "dt": true, "fieldset": true, "figcaption": true, "figure": true, "footer": true, "form": true,
	"h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true, "header": true, "hr": true,
	"li": true, "main": true, "nav": true, "ol": true, "option": true, "p": true, "pre": true, "section": true,
	"table": true, "tbody": true, "td": true, "tfoot": true, "th": true, "thead": true, "title": true,
	"tr": true, "ul": true,
}

// decodedFields adds header fields to b: all of them as they are (raw), for
// the header of a MIME part or attached message, and also, for any field,
// its value with encoded words decoded when that differs.
func (x *extractor) decodedFields(b *buf, h gomessage.Header, raw bool) {
	dec := mime.WordDecoder{CharsetReader: charset.NewReaderLabel}
	for f := h.Fields(); f.Next(); {
		v := f.Value()
		if raw {
			b.write(f.Key() + ": " + v + "\n")
		}
		if !strings.Contains(v, "=?") {
			continue
		}
		d, err := dec.DecodeHeader(v)
		if err != nil || d == v {
			continue
		}
		b.write(f.Key() + ": " + strings.Join(strings.Fields(d), " ") + "\n")
	}
}

// split cuts a message at the empty line after its header.
func split(msg []byte) (header, body string) {
	for i := 0; i < len(msg); {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			break
		}
		line := msg[i : i+j+1]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return string(msg[:i]), string(msg[i+j+1:])
		}
		i += j + 1
	}
	return string(msg), ""
}

// buf collects text up to a limit, as valid UTF-8 without NUL bytes.
type buf struct {
	b     strings.Builder
	limit int
	cut   bool // something did not fit
}

func newBuf(limit int) *buf { return &buf{limit: limit} }

func (b *buf) room() int  { return b.limit - b.b.Len() }
func (b *buf) full() bool { return b.b.Len() >= b.limit }

func (b *buf) String() string { return b.b.String() }

// endLine ends the text so far with a line break, if it has none.
func (b *buf) endLine() {
	if s := b.b.String(); s != "" && s[len(s)-1] != '\n' {
		b.write("\n")
	}
}

func (b *buf) write(s string) {
	if s == "" {
		return
	}
	s = clean(s)
	if n := b.room(); len(s) > n {
		b.cut = true
		// Cut on a character boundary.
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	b.b.WriteString(s)
}

// clean makes s valid UTF-8 without NUL or CR bytes (lines end in LF).
func clean(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 || strings.IndexByte(s, '\r') >= 0 {
		s = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\x00", " ").Replace(s)
	}
	return s
}

// String describes t briefly, for logs and test failures.
func (t Text) String() string {
	return fmt.Sprintf("header %d bytes, body %d bytes, complete %v", len(t.Header), len(t.Body), t.Complete)
}
