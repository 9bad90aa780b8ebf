package signer

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
)

// Limits that keep a hostile message from costing more than a bounded
// amount of memory and time. They are far above anything a gestore writes.
const (
	// MaxMessageSize is the largest entity VerifyMIME looks at (the law
	// asks a gestore to carry 30 MB × recipients; a single stored message
	// is smaller).
	MaxMessageSize = 128 << 20
	maxHeaderBytes = 1 << 20  // one header block
	maxHeaderLines = 10000    // fields plus continuation lines in one block
	maxBoundaryLen = 200      // RFC 2046 says 70; be lenient, not unbounded
	maxSignature   = 1 << 20  // decoded smime.p7s
	maxDecodeInput = 16 << 20 // encoded bytes fed to a decoder (or twice its output limit)
	maxBERDepth    = 64       // ASN.1 nesting of a signature (a CMS signature with certificates nests about 15 deep)
)

// Field is one header field: the name in lower case, the value unfolded
// and trimmed.
type Field struct {
	Name, Value string
}

// Header is the header fields of a MIME entity, in order.
type Header []Field

// Get returns the value of the first field with that name (any case).
func (h Header) Get(name string) string {
	name = strings.ToLower(name)
	for _, f := range h {
		if f.Name == name {
			return strings.TrimSpace(f.Value)
		}
	}
	return ""
}

// ParseHeader splits an entity into its header fields and its body. The
// body is a sub-slice of b, so its bytes are exactly those of the input. A
// missing blank line means the whole entity is header. Lines that are
// neither fields nor continuations are skipped (an mbox "From " line, for
// one). A header block longer than 1 MB or 10000 lines is an error.
func ParseHeader(b []byte) (Header, []byte, error) {
	var h Header
	// The value being unfolded, appended to in place: a field folded over
	// many lines costs linear time, not quadratic.
	var cur []byte
	flush := func() {
		if len(h) > 0 && cur != nil {
			h[len(h)-1].Value = string(cur)
		}
		cur = nil
	}
	pos, lines := 0, 0
	for pos < len(b) {
		if pos > maxHeaderBytes {
			flush()
			return h, nil, fmt.Errorf("header longer than %d bytes", maxHeaderBytes)
		}
		lines++
		if lines > maxHeaderLines {
			flush()
			return h, nil, fmt.Errorf("header has more than %d lines", maxHeaderLines)
		}
		next := len(b)
		line := b[pos:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
			next = pos + i + 1
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			flush()
			return h, b[next:], nil
		}
		pos = next
		if line[0] == ' ' || line[0] == '\t' {
			if len(h) > 0 {
				if cur == nil {
					cur = append([]byte(nil), h[len(h)-1].Value...)
				}
				cur = append(append(cur, ' '), bytes.TrimSpace(line)...)
			}
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || bytes.ContainsAny(bytes.TrimRight(line[:colon], " \t"), " \t") {
			continue // not a field (an mbox "From " line, say)
		}
		flush()
		name := strings.ToLower(string(bytes.TrimSpace(line[:colon])))
		h = append(h, Field{Name: name, Value: string(bytes.TrimSpace(line[colon+1:]))})
	}
	flush()
	return h, nil, nil
}

// MediaType returns the entity's media type in lower case ("text/plain"
// when there is no usable Content-Type) and its parameters.
func MediaType(h Header) (string, map[string]string) {
	mt, params := ParseParams(h.Get("content-type"))
	if !strings.Contains(mt, "/") {
		return "text/plain", nil
	}
	return mt, params
}

// ParseParams parses a "value; name=value; …" field such as Content-Type
// or Content-Disposition. When mime.ParseMediaType refuses it (a duplicate
// or malformed parameter, as sloppy writers produce) it falls back to a
// plain split, so that a boundary or file name is still found.
func ParseParams(v string) (string, map[string]string) {
	if v == "" {
		return "", nil
	}
	if mt, params, err := mime.ParseMediaType(v); err == nil {
		return mt, params
	}
	segs := strings.Split(v, ";")
	params := map[string]string{}
	for _, seg := range segs[1:] {
		k, val, ok := strings.Cut(seg, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		if _, dup := params[k]; !dup {
			params[k] = val
		}
	}
	return strings.ToLower(strings.TrimSpace(segs[0])), params
}

// errTooManyParts is returned by SplitMultipart when its budget runs out.
var errTooManyParts = errors.New("too many body parts")

// SplitMultipart returns the raw bytes of each body part of a multipart
// body, headers included, as sub-slices of body. A delimiter is a line
// "--"+boundary (a close delimiter, "--"+boundary+"--"), then only spaces,
// tabs or CRs. Following RFC 2046 §5.1.1 the line break before a delimiter
// belongs to the delimiter, not to the part, so the first part of a
// multipart/signed comes back exactly as it was signed (or, in an LF-only
// file, as it was signed but for the line ends). A body without a closing
// delimiter (a truncated message) ends its last part at the end of the
// input. Each part costs one from *budget; when it runs out, the parts so
// far are returned with an error.
func SplitMultipart(body []byte, boundary string, budget *int) ([][]byte, error) {
	if boundary == "" {
		return nil, errors.New("multipart without boundary")
	}
	if len(boundary) > maxBoundaryLen {
		return nil, fmt.Errorf("boundary longer than %d bytes", maxBoundaryLen)
	}
	dash := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // where the current part's content begins; -1 before the first delimiter
	seen := false
	for pos := 0; pos < len(body); {
		next := len(body)
		line := body[pos:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
			next = pos + i + 1
		}
		if bytes.HasPrefix(line, dash) {
			rest := bytes.TrimRight(line[len(dash):], " \t\r")
			closing := string(rest) == "--"
			if len(rest) == 0 || closing {
				seen = true
				if start >= 0 {
					end := pos
					if end > start && body[end-1] == '\n' {
						end--
						if end > start && body[end-1] == '\r' {
							end--
						}
					}
					if *budget <= 0 {
						return parts, errTooManyParts
					}
					*budget--
					parts = append(parts, body[start:end])
				}
				if closing {
					return parts, nil
				}
				start = next
			}
		}
		pos = next
	}
	if !seen {
		return nil, fmt.Errorf("boundary %q not found", boundary)
	}
	if start >= 0 && start < len(body) {
		if *budget <= 0 {
			return parts, errTooManyParts
		}
		*budget--
		parts = append(parts, body[start:])
	}
	return parts, nil
}

// DecodeBody undoes a Content-Transfer-Encoding (base64, lenient about
// white space and padding; quoted-printable; anything else as is). It
// returns at most limit bytes and an error when the content is longer or
// malformed; what could be decoded before a base64 error is returned too.
func DecodeBody(cte string, b []byte, limit int) ([]byte, error) {
	if len(b) > max(maxDecodeInput, 2*limit) {
		return nil, fmt.Errorf("encoded body longer than %d bytes", max(maxDecodeInput, 2*limit))
	}
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64(b, limit)
	case "quoted-printable":
		out, err := io.ReadAll(io.LimitReader(quotedprintable.NewReader(bytes.NewReader(b)), int64(limit)+1))
		if err != nil {
			return out, fmt.Errorf("quoted-printable: %v", err)
		}
		if len(out) > limit {
			return out[:limit], fmt.Errorf("decoded body longer than %d bytes", limit)
		}
		return out, nil
	default: // 7bit, 8bit, binary, none, or unknown: the bytes as they are
		if len(b) > limit {
			return b[:limit], fmt.Errorf("body longer than %d bytes", limit)
		}
		return b, nil
	}
}

// decodeBase64 decodes base64 text ignoring white space and tolerating
// missing padding, as mail readers do.
func decodeBase64(b []byte, limit int) ([]byte, error) {
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			clean = append(clean, c)
		}
	}
	clean = bytes.TrimRight(clean, "=")
	if base64.RawStdEncoding.DecodedLen(len(clean)) > limit {
		return nil, fmt.Errorf("decoded body longer than %d bytes", limit)
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		return out[:n], fmt.Errorf("base64: %v", err)
	}
	return out[:n], nil
}

// toCRLF returns b with every bare LF made CRLF, the canonical form S/MIME
// signs (b itself when there is none).
func toCRLF(b []byte) []byte {
	n := 0
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	if n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+n)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// checkEntity checks that part looks like a MIME entity: header fields,
// an empty line, a body.
func checkEntity(part []byte) error {
	blank := false
	n := 0
	for line := range bytes.Lines(part) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			blank = true
			break
		}
		n++
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return errors.New("the part's header has a line that is not a header field: " + truncate(string(line), 60))
		}
	}
	if n == 0 {
		return errors.New("the part has no header fields")
	}
	if !blank {
		return errors.New("the part has no empty line after its header fields")
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// checkBER walks one BER/DER element iteratively and fails on nesting
// deeper than maxBERDepth or on lengths that do not fit. It guards
// pkcs7.Parse, whose BER-to-DER conversion recurses once per level: a
// megabyte of "30 80" would otherwise grow a goroutine stack to half a
// gigabyte.
func checkBER(b []byte) error {
	type frame struct {
		end        int // end of a definite-length element
		indefinite bool
	}
	var stack []frame
	pos := 0
	for started := false; ; started = true {
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if top.indefinite {
				if pos+1 < len(b) && b[pos] == 0 && b[pos+1] == 0 {
					pos += 2
					stack = stack[:len(stack)-1]
					continue
				}
				break
			}
			if pos > top.end {
				return errors.New("BER: element overruns its parent")
			}
			if pos < top.end {
				break
			}
			stack = stack[:len(stack)-1]
		}
		if started && len(stack) == 0 {
			return nil
		}
		if pos >= len(b) {
			return errors.New("BER: truncated")
		}
		tag := b[pos]
		pos++
		if tag&0x1f == 0x1f { // high tag number
			n := 0
			for pos < len(b) && b[pos]&0x80 != 0 {
				pos++
				if n++; n > 4 {
					return errors.New("BER: tag number too long")
				}
			}
			pos++
		}
		if pos >= len(b) {
			return errors.New("BER: truncated")
		}
		l := int(b[pos])
		pos++
		constructed := tag&0x20 != 0
		if l == 0x80 {
			if !constructed {
				return errors.New("BER: indefinite length on a primitive element")
			}
			if len(stack) >= maxBERDepth {
				return fmt.Errorf("BER: nested deeper than %d", maxBERDepth)
			}
			stack = append(stack, frame{indefinite: true})
			continue
		}
		length := l
		if l > 0x80 {
			n := l & 0x7f
			if n > 4 || pos+n > len(b) {
				return errors.New("BER: bad length")
			}
			length = 0
			for i := 0; i < n; i++ {
				length = length<<8 | int(b[pos])
				pos++
			}
		}
		if length < 0 || length > len(b)-pos {
			return errors.New("BER: length beyond the data")
		}
		if constructed {
			if len(stack) >= maxBERDepth {
				return fmt.Errorf("BER: nested deeper than %d", maxBERDepth)
			}
			stack = append(stack, frame{end: pos + length})
		} else {
			pos += length
		}
	}
}
