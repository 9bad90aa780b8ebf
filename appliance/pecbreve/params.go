package pecbreve

import (
	"bytes"
	"mime"
	"strconv"
	"strings"
	"unicode/utf8"

	"sigillo/appliance/signer"
)

const (
	maxName     = 1024 // bytes of a file name kept (longer ones are cut, on a character boundary)
	maxLine     = 78   // the longest header line written (RFC 5322 §2.1.1 SHOULD)…
	maxLongLine = 998  // …or, for a quoted ASCII file name, MUST
	maxSegs     = 1000 // RFC 2231 continuations assembled
)

// fileName tells whether the part names itself, with a filename parameter
// of Content-Disposition or a name parameter of Content-Type in any form
// (plain, RFC 2231 extended or continued), and returns that name decoded
// and made safe to write: filename first, as RFC 2183 is the newer and the
// more specific, then name. The name is "" when both are empty.
func fileName(h signer.Header) (string, bool) {
	fn, okF := param(h.Get("content-disposition"), "filename")
	n, okN := param(h.Get("content-type"), "name")
	if name := cleanName(fn); name != "" {
		return name, true
	}
	return cleanName(n), okF || okN
}

// param returns the parameter key of a "value; k=v; …" field, and whether
// the field has it in any form. mime.ParseMediaType (through
// signer.ParseParams) decodes plain, quoted, RFC 2231 extended and
// continued values in us-ascii or utf-8; what it drops or refuses (another
// charset, a malformed field) is looked for in the raw parameters. RFC 2047
// encoded words, which many mailers put in a quoted name, are decoded when
// mime knows their charset. A value that cannot be decoded is returned raw.
func param(field, key string) (string, bool) {
	if field == "" {
		return "", false
	}
	if _, params := signer.ParseParams(field); params != nil {
		if v, ok := params[key]; ok {
			return decodeWords(v), true
		}
	}
	raw := rawParams(field)
	present := false
	for k := range raw {
		if isKeyForm(k, key) {
			present = true
			break
		}
	}
	if !present {
		return "", false
	}
	if v, ok := raw[key]; ok {
		return decodeWords(v), true
	}
	if v, ok := raw[key+"*"]; ok {
		return decode2231(v), true
	}
	// Continuations: key*0, key*1*, … in order, the first extended one
	// carrying the charset.
	var buf []byte
	var rawJoined strings.Builder
	charset, first := "", true
	for n := 0; n < maxSegs; n++ {
		k := key + "*" + strconv.Itoa(n)
		if v, ok := raw[k+"*"]; ok {
			rawJoined.WriteString(v)
			if first {
				var cs string
				cs, v = splitCharset(v)
				charset = cs
			}
			buf = append(buf, percentDecode(v)...)
		} else if v, ok := raw[k]; ok {
			rawJoined.WriteString(v)
			buf = append(buf, v...)
		} else {
			break
		}
		first = false
	}
	if s, ok := convert(charset, buf); ok {
		return decodeWords(s), true
	}
	return rawJoined.String(), true
}

// isKeyForm reports whether k is key in one of its RFC 2231 forms: key,
// key*, key*N or key*N*.
func isKeyForm(k, key string) bool {
	if k == key {
		return true
	}
	rest, ok := strings.CutPrefix(k, key+"*")
	if !ok {
		return false
	}
	rest = strings.TrimSuffix(rest, "*")
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

// rawParams splits the parameters of a "value; k=v; …" field, ";" inside
// a quoted string not splitting, with the keys in lower case and quoted
// values unquoted. The first of duplicate keys wins.
func rawParams(field string) map[string]string {
	params := map[string]string{}
	var segs []string
	inQuote, start := false, 0
	for i := 0; i < len(field); i++ {
		switch c := field[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ';' && !inQuote:
			segs = append(segs, field[start:i])
			start = i + 1
		}
	}
	segs = append(segs, field[start:])
	for _, seg := range segs[1:] {
		k, v, ok := strings.Cut(seg, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = unescape(v[1 : len(v)-1])
		}
		if _, dup := params[k]; !dup {
			params[k] = v
		}
	}
	return params
}

// unescape undoes the quoted-pair escapes of a quoted string.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// decode2231 decodes an RFC 2231 extended value charset'lang'%XX…; v as
// it is when the charset is not one convert knows.
func decode2231(v string) string {
	charset, rest := splitCharset(v)
	if s, ok := convert(charset, percentDecode(rest)); ok {
		return decodeWords(s)
	}
	return v
}

// splitCharset splits charset'lang'rest; without the two quotes the
// charset is empty and the whole value is the rest.
func splitCharset(v string) (charset, rest string) {
	parts := strings.SplitN(v, "'", 3)
	if len(parts) != 3 {
		return "", v
	}
	return strings.ToLower(strings.TrimSpace(parts[0])), parts[2]
}

// percentDecode decodes %XX escapes; a malformed one stays as it is.
func percentDecode(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return b
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// convert turns bytes in charset into a string: us-ascii and utf-8 (or no
// charset) as they are, iso-8859-1 by code point. Any other charset: false.
func convert(charset string, b []byte) (string, bool) {
	switch charset {
	case "", "us-ascii", "ascii", "utf-8", "utf8":
		return string(b), true
	case "iso-8859-1", "iso8859-1", "latin1", "latin-1":
		return latin1(b), true
	}
	return "", false
}

func latin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

// decodeWords decodes RFC 2047 encoded words; s as it is when there are
// none or mime does not know their charset.
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := new(mime.WordDecoder).DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// cleanName makes a decoded name safe to write back: bytes that are not
// UTF-8 are read as ISO-8859-1 (the commonest raw 8-bit file names), control
// characters become "_", surrounding space goes, and the name is cut to
// maxName bytes.
func cleanName(s string) string {
	if !utf8.ValidString(s) {
		s = latin1([]byte(s))
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '_'
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxName {
		cut := maxName
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	return s
}

// writeField writes prefix (a header field up to and including the ";"
// before the parameter) followed by key=value and a line end. A printable
// ASCII value is a quoted string, anything else an RFC 2231 utf-8 extended
// value. When the line would be longer than maxLine the parameter goes on
// a folded line of its own; when that too is too long (maxLine, or
// maxLongLine for a quoted string) the value is split into RFC 2231
// continuations, one per folded line.
func writeField(b *bytes.Buffer, prefix, key, value, eol string) {
	ascii := true
	for i := 0; i < len(value); i++ {
		if value[i] < 0x20 || value[i] > 0x7e {
			ascii = false
			break
		}
	}
	// The value as units that must not be split: an escaped character of a
	// quoted string, or one octet of an extended value.
	var units []string
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case ascii && (c == '"' || c == '\\'):
			units = append(units, `\`+string(c))
		case ascii || isAttrChar(c):
			units = append(units, string(c))
		default:
			units = append(units, "%"+hexByte(c))
		}
	}
	format := func(name string, units []string, charset bool) string {
		v := strings.Join(units, "")
		if ascii {
			return name + `="` + v + `"`
		}
		if charset {
			return name + "*=utf-8''" + v
		}
		return name + "*=" + v
	}
	single := format(key, units, true)
	switch {
	case len(prefix)+1+len(single) <= maxLine:
		b.WriteString(prefix + " " + single + eol)
		return
	case 1+len(single) <= maxLine || ascii && 1+len(single) <= maxLongLine:
		// On a line of its own; a quoted ASCII name rather on a long line
		// (RFC 5322 allows 998) than in continuations, which some readers
		// do not join.
		b.WriteString(prefix + eol + "\t" + single + eol)
		return
	}
	b.WriteString(prefix)
	const room = maxLine - 30 // what a continuation line has for its value
	for n := 0; len(units) > 0; n++ {
		size, k := 0, 0
		for k < len(units) && (k == 0 || size+len(units[k]) <= room) {
			size += len(units[k])
			k++
		}
		if n > 0 {
			b.WriteString(";")
		}
		b.WriteString(eol + "\t" + format(key+"*"+strconv.Itoa(n), units[:k], n == 0))
		units = units[k:]
	}
	b.WriteString(eol)
}

// isAttrChar reports whether c may stand unencoded in an RFC 2231
// extended value (attribute-char).
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}

// hexByte is c as two upper-case hex digits.
func hexByte(c byte) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[c>>4], digits[c&15]})
}
