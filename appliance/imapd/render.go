package imapd

import (
	"bufio"
	"bytes"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Message data for FETCH. Content is whatever was delivered or appended,
// valid MIME or not: the whole message and its top-level header and text are
// cut from the stored bytes, so they come back byte for byte; MIME parts,
// ENVELOPE and BODYSTRUCTURE come from go-imap's helpers, guarded so that a
// malformed message degrades (empty section, simple structure) instead of
// breaking the connection.

// maxMIMENesting is the number of multipart or message/* Content-Type
// fields above which a message's structure is not parsed at all: the
// library's parsers recurse once per level.
const maxMIMENesting = 100

// splitMessage cuts content after the blank line that ends its header. The
// header keeps that blank line, as BODY[HEADER] must. Without a blank line
// the whole content is header.
func splitMessage(content []byte) (header, text []byte) {
	for i := 0; i < len(content); {
		j := bytes.IndexByte(content[i:], '\n')
		if j < 0 {
			break
		}
		line := content[i : i+j+1]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return content[:i+j+1], content[i+j+1:]
		}
		i += j + 1
	}
	return content, nil
}

// readHeader parses a header as far as it is well formed.
func readHeader(raw []byte) textproto.Header {
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	return h
}

func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) || p.Offset < 0 {
		return nil
	}
	end := p.Offset + p.Size
	if end > int64(len(b)) || end < p.Offset {
		end = int64(len(b))
	}
	return b[p.Offset:end]
}

// tooDeep reports whether content nests more MIME levels than the parsers
// are trusted with.
func tooDeep(content []byte) bool {
	n := 0
	lower := bytes.ToLower(content)
	for i := 0; ; {
		j := bytes.Index(lower[i:], []byte("content-type:"))
		if j < 0 {
			return false
		}
		i += j + len("content-type:")
		end := bytes.IndexByte(lower[i:], '\n')
		if end < 0 {
			end = len(lower) - i
		}
		v := bytes.TrimSpace(lower[i : i+end])
		if bytes.HasPrefix(v, []byte("multipart/")) || bytes.HasPrefix(v, []byte("message/")) {
			n++
			if n > maxMIMENesting {
				return true
			}
		}
	}
}

func isMultipart(h textproto.Header) bool {
	mh := gomessage.Header{Header: h}
	t, _, _ := mh.ContentType()
	return strings.HasPrefix(t, "multipart/")
}

// bodySection is BODY[...] (and RFC822, RFC822.HEADER, RFC822.TEXT).
func bodySection(content []byte, item *imap.FetchItemBodySection) []byte {
	header, text := splitMessage(content)
	filtered := len(item.HeaderFields) > 0 || len(item.HeaderFieldsNot) > 0
	if len(item.Part) == 0 {
		switch {
		case item.Specifier == imap.PartSpecifierNone:
			return partial(content, item.Partial)
		case item.Specifier == imap.PartSpecifierText:
			return partial(text, item.Partial)
		case item.Specifier == imap.PartSpecifierHeader && !filtered:
			return partial(header, item.Partial)
		case item.Specifier == imap.PartSpecifierHeader:
			h := readHeader(header)
			if len(item.HeaderFields) > 0 {
				keep := map[string]bool{}
				for _, k := range item.HeaderFields {
					keep[strings.ToLower(k)] = true
				}
				for f := h.Fields(); f.Next(); {
					if !keep[strings.ToLower(f.Key())] {
						f.Del()
					}
				}
			}
			for _, k := range item.HeaderFieldsNot {
				h.Del(k)
			}
			var buf bytes.Buffer
			if err := textproto.WriteHeader(&buf, h); err != nil {
				return nil
			}
			return partial(buf.Bytes(), item.Partial)
		}
	}
	// BODY[1] of a message that is not multipart is its text, whatever
	// state its header is in.
	if len(item.Part) == 1 && item.Part[0] == 1 && item.Specifier == imap.PartSpecifierNone && !isMultipart(readHeader(header)) {
		return partial(text, item.Partial)
	}
	if tooDeep(content) {
		return nil
	}
	return guard(func() []byte { return imapserver.ExtractBodySection(bytes.NewReader(content), item) })
}

// binarySection is BINARY[...]: the part with its transfer encoding undone.
func binarySection(content []byte, item *imap.FetchItemBinarySection) []byte {
	if tooDeep(content) {
		return nil
	}
	return guard(func() []byte { return imapserver.ExtractBinarySection(bytes.NewReader(content), item) })
}

func binarySectionSize(content []byte, item *imap.FetchItemBinarySectionSize) uint32 {
	return uint32(len(binarySection(content, &imap.FetchItemBinarySection{Part: item.Part})))
}

// guard runs a library extraction, turning a panic into an empty result.
func guard(f func() []byte) (out []byte) {
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	return f()
}

// envelope is ENVELOPE, from whatever part of the header parses.
func envelope(content []byte) (env *imap.Envelope) {
	defer func() {
		if recover() != nil {
			env = &imap.Envelope{}
		}
	}()
	header, _ := splitMessage(content)
	return imapserver.ExtractEnvelope(readHeader(header))
}

// bodyStructure is BODY and BODYSTRUCTURE. What the library cannot make
// sense of becomes text/plain, as RFC 2045 says of a missing or invalid
// Content-Type; a multipart without any part gets an empty text/plain one
// (imapserver cannot write a multipart without children).
func bodyStructure(content []byte) (bs imap.BodyStructure) {
	defer func() {
		if recover() != nil {
			bs = flatStructure(content)
		}
	}()
	if tooDeep(content) {
		return flatStructure(content)
	}
	bs = imapserver.ExtractBodyStructure(bytes.NewReader(content))
	if bs == nil {
		return flatStructure(content)
	}
	sanitizeStructure(bs, 0)
	return bs
}

// flatStructure describes the whole text of a message as one text/plain part.
func flatStructure(content []byte) imap.BodyStructure {
	_, text := splitMessage(content)
	return &imap.BodyStructureSinglePart{
		Type:     "text",
		Subtype:  "plain",
		Params:   map[string]string{"charset": "us-ascii"},
		Encoding: "7bit",
		Size:     uint32(len(text)),
		Text:     &imap.BodyStructureText{NumLines: int64(bytes.Count(text, []byte("\n")))},
		Extended: &imap.BodyStructureSinglePartExt{},
	}
}

func emptyPart() *imap.BodyStructureSinglePart {
	return &imap.BodyStructureSinglePart{
		Type: "text", Subtype: "plain", Encoding: "7bit",
		Text:     &imap.BodyStructureText{},
		Extended: &imap.BodyStructureSinglePartExt{},
	}
}

// sanitizeStructure makes a structure from the library writable by it
// whatever the message was: every field the writer needs is set.
func sanitizeStructure(bs imap.BodyStructure, depth int) {
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs.Type == "" || bs.Subtype == "" {
			bs.Type, bs.Subtype = "text", "plain"
		}
		if strings.EqualFold(bs.Type, "text") && bs.Text == nil {
			bs.Text = &imap.BodyStructureText{}
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureSinglePartExt{}
		}
		if m := bs.MessageRFC822; m != nil {
			if m.Envelope == nil {
				m.Envelope = &imap.Envelope{}
			}
			if m.BodyStructure == nil || depth > maxMIMENesting {
				m.BodyStructure = emptyPart()
			}
			sanitizeStructure(m.BodyStructure, depth+1)
		}
	case *imap.BodyStructureMultiPart:
		if bs.Subtype == "" {
			bs.Subtype = "mixed"
		}
		if bs.Extended == nil {
			bs.Extended = &imap.BodyStructureMultiPartExt{}
		}
		kept := bs.Children[:0]
		for _, c := range bs.Children {
			if c != nil && depth <= maxMIMENesting {
				sanitizeStructure(c, depth+1)
				kept = append(kept, c)
			}
		}
		bs.Children = kept
		if len(bs.Children) == 0 {
			bs.Children = []imap.BodyStructure{emptyPart()}
		}
	}
}
