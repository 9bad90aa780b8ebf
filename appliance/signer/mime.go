package signer

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
)

// toCRLF returns b with every bare LF made CRLF (b itself when there is
// none).
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

// splitEntity splits a MIME entity at its first empty line (CRLF or LF
// line ends) into the header and the body. Without an empty line it is all
// header.
func splitEntity(b []byte) (header, body []byte) {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return nil, b[2:]
	}
	if bytes.HasPrefix(b, []byte("\n")) {
		return nil, b[1:]
	}
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return b, nil
		}
		i += j + 1
		switch {
		case bytes.HasPrefix(b[i:], []byte("\r\n")):
			return b[:i], b[i+2:]
		case bytes.HasPrefix(b[i:], []byte("\n")):
			return b[:i], b[i+1:]
		}
	}
}

// headerValue returns the unfolded value of the first header field named
// name (case-insensitive), and whether there is one. Lines that are not
// fields are skipped.
func headerValue(header []byte, name string) (string, bool) {
	var val []byte
	in := false
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if in {
				val = append(val, ' ')
				val = append(val, bytes.TrimSpace(line)...)
			}
			continue
		}
		if in {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			in = true
			val = append(val, bytes.TrimSpace(v)...)
		}
	}
	return string(val), in
}

// checkEntity checks that part looks like a MIME entity: header fields,
// an empty line, a body.
func checkEntity(part []byte) error {
	header, body := splitEntity(part)
	if len(header) == 0 {
		return errors.New("the part has no header fields")
	}
	if body == nil {
		return errors.New("the part has no empty line after its header fields")
	}
	for line := range bytes.Lines(header) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); !ok || len(k) == 0 || bytes.ContainsAny(k, " \t") {
			return errors.New("the part's header has a line that is not a header field: " + truncate(string(line), 60))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// delimiter finds, at or after from, the next line of body that is the
// boundary delimiter "--"+boundary (or the close delimiter, with "--"
// after it), followed by nothing but spaces and tabs. The line must start
// body or follow a line break. It returns where the line break before the
// delimiter starts (the end of the content before it; the line's start
// when it has none), where the next line starts, and whether it is the
// close delimiter.
func delimiter(body []byte, from int, boundary string) (end, next int, closing, ok bool) {
	delim := "--" + boundary
	for i := from; i <= len(body); {
		k := bytes.Index(body[i:], []byte(delim))
		if k < 0 {
			return 0, 0, false, false
		}
		k += i
		i = k + 1
		if k > 0 && body[k-1] != '\n' {
			continue
		}
		p := k + len(delim)
		closing = bytes.HasPrefix(body[p:], []byte("--"))
		if closing {
			p += 2
		}
		for p < len(body) && (body[p] == ' ' || body[p] == '\t') {
			p++
		}
		switch {
		case p == len(body):
		case body[p] == '\n':
			p++
		case body[p] == '\r' && p+1 < len(body) && body[p+1] == '\n':
			p += 2
		default:
			continue
		}
		end = k
		if k > 0 {
			end = k - 1
			if end > 0 && body[end-1] == '\r' {
				end--
			}
		}
		return end, p, closing, true
	}
	return 0, 0, false, false
}

// decodeBody decodes an entity body by its Content-Transfer-Encoding:
// base64 (lenient about line lengths, spaces and missing padding), or
// anything else as is.
func decodeBody(header, body []byte) ([]byte, error) {
	cte, _ := headerValue(header, "Content-Transfer-Encoding")
	if !strings.EqualFold(strings.TrimSpace(cte), "base64") {
		return body, nil
	}
	clean := make([]byte, 0, len(body))
	for _, c := range body {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		}
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		return nil, errors.New("bad base64")
	}
	return out[:n], nil
}
