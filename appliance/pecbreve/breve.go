// Package pecbreve gives the original message in the form a "ricevuta di
// avvenuta consegna breve" carries it (RFC 6109 §3.3.2.2, PEC.md §3.7.2):
// the message with its MIME structure unaltered, but every MIME part that
// has a "name" parameter in Content-Type or a "filename" parameter in
// Content-Disposition, and every attached message/rfc822, replaced by a
// text/plain part whose body is the SHA-1 of the part's content as 40
// lower-case hex digits and whose file name is the original one + ".hash".
//
// It is only that transformation. It does not build the receipt (its text
// part, daticert.xml, its header fields), does not sign it, does not decide
// when a breve receipt is due (X-TipoRicevuta, To or Cc) and does not check
// the user's signature; it keeps no copy of what it replaced.
//
// What is hashed. The RFC says the hash is "calculated on the entire
// content of the part" and "SHOULD be calculated on base64 encoded parts",
// and warns that a server re-wrapping base64 lines would change it. Sigillo
// hashes the part's body exactly as transmitted: the bytes after the blank
// line that ends the part's header, still in their transfer encoding (the
// base64 text itself, with its line breaks as they are in the message),
// up to but not including the line break before the next delimiter, which
// RFC 2046 §5.1.1 makes part of the delimiter. The input is hashed as
// given, so a message stored with LF line ends hashes differently from its
// CRLF form on the wire: pass the message in the form whose hashes the
// sender is to check (the form the gestore received, CRLF).
//
// Where it applies:
//   - Only body parts are replaced, never the message itself: its header
//     fields (From, To, Subject…) are kept byte for byte, so a message that
//     is a single named part (Content-Type: application/pdf; name=…) at the
//     top level comes out as it is.
//   - multipart/* parts are followed (up to 32 levels, 10000 parts in all),
//     never replaced, even when they carry a name: the structure stays.
//   - multipart/signed (at the top or nested): only its first part is
//     followed, and hashed like any other body part; the signature part is
//     left byte for byte, so the user's signature no longer verifies, as
//     the RFC says it will not.
//   - application/pkcs7-mime or x-pkcs7-mime as the message itself (opaque
//     S/MIME) is not altered: the breve copy equals the completa one. Such a
//     part inside a multipart with a name (a signed file "x.pdf.p7m"
//     attached by the user) is an attachment and is hashed.
//   - message/rfc822 and message/global parts (and parts without a
//     Content-Type inside multipart/digest, whose default type that is) are
//     replaced whole, named after their own file name or "message.eml".
//
// The hash part. Its header is exactly
//
//	Content-Type: text/plain; charset=us-ascii; name="<file>.hash"
//	Content-Transfer-Encoding: 7bit
//	Content-Disposition: attachment; filename="<file>.hash"
//
// (the replaced part's other fields, Content-ID and the like, go with it),
// then a blank line and the 40 hex digits, in the line ends of the part it
// replaces. <file> is the filename parameter, else the name parameter
// (the order Python's email and most readers use too), decoded from RFC 2231
// (us-ascii, utf-8, iso-8859-1; continuations too) and RFC 2047 (the
// charsets package mime knows) where possible, else kept raw; bytes that
// are not UTF-8 are read as ISO-8859-1, control characters become "_", and
// names are cut at 1024 bytes. A name without extension still gets
// ".hash"; a name present but empty is "attachment". A printable ASCII
// name is written as a quoted string (folded onto a line of its own when
// long), any other as an RFC 2231 utf-8 value, in continuations when long.
//
// Everything that is not replaced comes out byte for byte: header fields,
// delimiters, preambles, epilogues, line ends. A message with nothing to
// replace comes back unchanged (the very slice passed in).
//
// Limits: 32 multipart levels, 10000 body parts, and 64 MB of copying to
// unfold header fields (signer.ParseHeader copies a field's value for each
// of its continuation lines) are followed; beyond them the rest of the
// message is left as it is. Transform never fails and never panics.
package pecbreve

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"

	"sigillo/appliance/signer"
)

// Limits that keep a hostile message from costing more than a bounded
// amount of time and memory. Beyond them the rest is left as it is.
const (
	maxDepth = 32    // multipart levels followed, the message's own counting as the first
	maxParts = 10000 // body parts split out, all levels together
	// maxUnfold bounds the bytes signer.ParseHeader may copy unfolding
	// header fields, all headers together. It appends each continuation
	// line to its field's value, so a field of n continuation lines costs
	// about n times its length: a 1 MB field of 10000 lines would take
	// most of a second, and a message could hold many. A real message
	// costs a few kilobytes per part.
	maxUnfold = 64 << 20
	maxHeader = 1<<20 + 1 // signer.ParseHeader refuses longer header blocks
)

// Replaced is one attachment that was replaced by its hash part.
type Replaced struct {
	// FileName is the attachment's file name, decoded from RFC 2231 or
	// RFC 2047 where that was possible ("message.eml" for a message/rfc822
	// without one). Its hash part is named FileName + ".hash".
	FileName string
	// SHA1 is the hash part's body: 40 lower-case hex digits.
	SHA1 string
	// Size is the number of bytes hashed: the body as transmitted.
	Size int
}

// Transform returns msg with every attachment replaced by its SHA-1 hash part.
// It never fails on malformed input: what it cannot parse it leaves as it is.
func Transform(msg []byte) []byte {
	out, _ := TransformReport(msg)
	return out
}

// TransformReport is Transform that also lists the attachments replaced, in
// the order they appear in the message.
func TransformReport(msg []byte) (out []byte, replaced []Replaced) {
	t := &transformer{budget: maxParts, unfold: maxUnfold, eol: lineEnd(msg, "\r\n")}
	h, body, err := t.parseHeader(msg)
	if err != nil || body == nil {
		return msg, nil
	}
	mt, params := signer.MediaType(h)
	if !strings.HasPrefix(mt, "multipart/") {
		return msg, nil // a single part message: its header is the message's
	}
	nb, changed := t.multipart(body, mt, params["boundary"], 1)
	if !changed {
		return msg, nil
	}
	head := msg[:len(msg)-len(body)]
	out = make([]byte, 0, len(head)+len(nb))
	out = append(out, head...)
	out = append(out, nb...)
	return out, t.replaced
}

type transformer struct {
	budget   int    // body parts SplitMultipart may still return
	unfold   int    // bytes header unfolding may still copy
	eol      string // the message's line end, for a part that shows none
	replaced []Replaced
}

var errUnfold = errors.New("header unfolding over budget")

// parseHeader is signer.ParseHeader within the unfolding budget: a header
// that would cost more than what is left is not parsed (an error).
func (t *transformer) parseHeader(b []byte) (signer.Header, []byte, error) {
	c := unfoldCost(b)
	if c > t.unfold {
		return nil, nil, errUnfold
	}
	t.unfold -= c
	return signer.ParseHeader(b)
}

// unfoldCost is about the number of bytes signer.ParseHeader copies to
// unfold the header block at the start of b: for each continuation line,
// the length of its field so far.
func unfoldCost(b []byte) int {
	cost, field := 0, 0
	for pos := 0; pos < len(b) && pos <= maxHeader; {
		line := b[pos:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
			pos += i + 1
		} else {
			pos = len(b)
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		switch {
		case len(line) == 0:
			return cost
		case line[0] == ' ' || line[0] == '\t':
			field += len(line)
			cost += field
		default:
			field = len(line)
		}
	}
	return cost
}

// multipart returns a multipart body with its parts transformed, and
// whether anything changed. depth is the level of this multipart.
func (t *transformer) multipart(body []byte, mt, boundary string, depth int) ([]byte, bool) {
	if depth > maxDepth {
		return body, false
	}
	// On an error (no boundary, budget spent) the parts split so far are
	// still transformed; the rest of the body is copied as it is.
	parts, _ := signer.SplitMultipart(body, boundary, &t.budget)
	defType := ""
	if mt == "multipart/digest" {
		defType = "message/rfc822" // RFC 2046 §5.1.5
	}
	var out []byte
	changed := false
	last := 0 // body[:last] is in out already
	for i, p := range parts {
		if mt == "multipart/signed" && i > 0 {
			break // the signature part, and anything after it, stays
		}
		if len(p) == 0 {
			continue
		}
		// p is a sub-slice of body: its offset follows from the capacities.
		start := cap(body) - cap(p)
		if start < last || start+len(p) > len(body) || &body[start] != &p[0] {
			break // not where it should be: leave the rest alone
		}
		np, ok := t.part(p, defType, depth)
		if !ok {
			continue
		}
		out = append(out, body[last:start]...)
		out = append(out, np...)
		last = start + len(p)
		changed = true
	}
	if !changed {
		return body, false
	}
	return append(out, body[last:]...), true
}

// part returns the transformed body part and true, or false when it stays
// as it is. depth is the level of the multipart that holds it.
func (t *transformer) part(p []byte, defType string, depth int) ([]byte, bool) {
	h, body, err := t.parseHeader(p)
	if err != nil {
		return nil, false
	}
	if body == nil {
		if len(h) == 0 {
			return nil, false // no header and no body: nothing to go by
		}
		// A header without the blank line: its empty body's line break
		// went to the delimiter (RFC 2046 allows a part without body).
		body = p[len(p):]
	}
	var mt string
	var params map[string]string
	if h.Get("content-type") == "" && defType != "" {
		mt = defType
	} else {
		mt, params = signer.MediaType(h)
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		nb, changed := t.multipart(body, mt, params["boundary"], depth+1)
		if !changed {
			return nil, false
		}
		head := p[:len(p)-len(body)]
		return append(append(make([]byte, 0, len(head)+len(nb)), head...), nb...), true
	case mt == "message/rfc822" || mt == "message/global":
		name, _ := fileName(h)
		if name == "" {
			name = "message.eml"
		}
		return t.replace(p, body, name), true
	}
	if name, ok := fileName(h); ok {
		if name == "" {
			name = "attachment" // name="" or the like: a name, but an empty one
		}
		return t.replace(p, body, name), true
	}
	return nil, false
}

// replace hashes body (the body of part p) and returns the hash part that
// takes p's place, in p's line ends.
func (t *transformer) replace(p, body []byte, name string) []byte {
	sum := sha1.Sum(body)
	hexsum := hex.EncodeToString(sum[:])
	t.replaced = append(t.replaced, Replaced{FileName: name, SHA1: hexsum, Size: len(body)})
	return hashPart(name+".hash", hexsum, lineEnd(p, t.eol))
}

// hashPart is a text/plain part named file whose body is hexsum.
func hashPart(file, hexsum, eol string) []byte {
	var b bytes.Buffer
	writeField(&b, "Content-Type: text/plain; charset=us-ascii;", "name", file, eol)
	b.WriteString("Content-Transfer-Encoding: 7bit" + eol)
	writeField(&b, "Content-Disposition: attachment;", "filename", file, eol)
	b.WriteString(eol)
	b.WriteString(hexsum)
	return b.Bytes()
}

// lineEnd is the line end of b's first line: "\r\n" or "\n"; def when b
// has no line break.
func lineEnd(b []byte, def string) string {
	i := bytes.IndexByte(b, '\n')
	switch {
	case i < 0:
		return def
	case i > 0 && b[i-1] == '\r':
		return "\r\n"
	default:
		return "\n"
	}
}
