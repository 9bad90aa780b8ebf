package pec

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
	_ "time/tzdata" // Europe/Rome on machines without a zoneinfo database
	"unicode/utf8"
)

// rome is the legal time of Italy, in which gestori write dates (PEC.md §2.4).
var rome = func() *time.Location {
	loc, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		panic("pec: no Europe/Rome time zone: " + err.Error())
	}
	return loc
}()

// Signer signs a MIME entity as S/MIME multipart/signed (signer.Signer).
type Signer interface {
	SignMIME(part []byte) (contentType string, body []byte, err error)
}

// field is one header field of a message we write, its value ready for
// the wire (ASCII, encoded words where needed).
type field struct {
	name, value string
	raw         []byte // when set: the field as received, written unchanged
}

// message is a system message before signing.
type message struct {
	header   []field
	text     string // Italian, then English
	daticert []byte // nil: none (busta di anomalia)
	original []byte // postacert.eml, or the original of a busta di anomalia; nil: none
	origName string // its file name
}

// build writes m signed: the header fields, then the multipart/signed
// whose first part is the multipart/mixed of text, daticert.xml and
// postacert.eml.
func (m message) build(s Signer) ([]byte, error) {
	mixed := newBoundary()
	var p bytes.Buffer
	p.WriteString("Content-Type: multipart/mixed; boundary=\"" + mixed + "\"\r\n\r\n")
	p.WriteString("This is a multi-part message in MIME format.\r\n")

	alt := newBoundary()
	p.WriteString("--" + mixed + "\r\n")
	p.WriteString("Content-Type: multipart/alternative; boundary=\"" + alt + "\"\r\n\r\n")
	p.WriteString("--" + alt + "\r\n")
	p.WriteString("Content-Type: text/plain; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	p.Write(qp(latin1(m.text)))
	p.WriteString("\r\n--" + alt + "\r\n")
	p.WriteString("Content-Type: text/html; charset=\"iso-8859-1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	p.Write(qp(latin1(htmlOf(m.text))))
	p.WriteString("\r\n--" + alt + "--\r\n")

	if m.daticert != nil {
		p.WriteString("\r\n--" + mixed + "\r\n")
		p.WriteString("Content-Type: application/xml; name=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-Disposition: inline; filename=\"daticert.xml\"\r\n\r\n")
		p.Write(base64Lines(m.daticert))
	}
	if m.original != nil {
		p.WriteString("\r\n--" + mixed + "\r\n")
		fmt.Fprintf(&p, "Content-Type: message/rfc822; name=\"%s\"\r\nContent-Transfer-Encoding: %s\r\n"+
			"Content-Disposition: inline; filename=\"%s\"\r\n\r\n", m.origName, transferEncoding(m.original), m.origName)
		p.Write(toCRLF(m.original))
		if !bytes.HasSuffix(m.original, []byte("\n")) {
			p.WriteString("\r\n")
		}
	}
	p.WriteString("\r\n--" + mixed + "--\r\n")

	ct, body, err := s.SignMIME(p.Bytes())
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Grow(len(body) + 1024)
	for _, f := range m.header {
		if f.raw != nil {
			out.Write(cleanRaw(f.raw))
			continue
		}
		writeField(&out, f.name, f.value)
	}
	out.WriteString("MIME-Version: 1.0\r\n")
	out.WriteString("Content-Type: " + ct + "\r\n\r\n")
	out.Write(body)
	return out.Bytes(), nil
}

// writeField writes one header field, folded at spaces so that no line is
// longer than 78 characters where that is possible, and never longer than
// 998 when no word is. Whatever value holds, it is one field: control
// characters (CR and LF among them) become spaces, and bytes that are not
// UTF-8 question marks.
func writeField(b *bytes.Buffer, name, value string) {
	value = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(value, "?"))
	b.WriteString(name + ":")
	width := len(name) + 1
	for i, w := range strings.Split(value, " ") {
		if w != "" && width+1+len(w) > 78 && (i > 0 || width+1+len(w) > maxLine) {
			b.WriteString("\r\n")
			width = 0
		}
		b.WriteByte(' ')
		b.WriteString(w)
		width += 1 + len(w)
	}
	b.WriteString("\r\n")
}

// maxLine is the longest header line RFC 5322 allows (§2.1.1), CRLF
// excluded.
const maxLine = 998

// cleanRaw returns a header field as received, for a header we write: its
// lines CRLF-terminated (the last one too), with no control character but
// tab, and not starting with white space (which would make it a
// continuation of the field before). A field whose first line has no
// colon is dropped (nil).
func cleanRaw(raw []byte) []byte {
	raw = bytes.TrimLeft(bytes.TrimRight(raw, "\r\n"), " \t")
	if k, _, ok := bytes.Cut(raw, []byte(":")); !ok || len(bytes.TrimSpace(k)) == 0 || bytes.ContainsAny(k, "\r\n") {
		return nil
	}
	out := make([]byte, 0, len(raw)+8)
	for i, line := range bytes.Split(raw, []byte("\n")) {
		if i > 0 {
			out = append(out, '\r', '\n')
		}
		for _, c := range bytes.TrimSuffix(line, []byte("\r")) {
			if c < 0x20 && c != '\t' || c == 0x7f {
				c = ' '
			}
			out = append(out, c)
		}
	}
	return append(out, '\r', '\n')
}

// transferEncoding is the Content-Transfer-Encoding that describes a
// message/rfc822 part carried as it is (RFC 2046 §5.2.1 allows 7bit, 8bit
// and binary only).
func transferEncoding(b []byte) string {
	enc := "7bit"
	lineLen := 0
	for _, c := range b {
		switch {
		case c == '\n':
			lineLen = 0
			continue
		case c >= 0x80 || c == 0:
			if enc == "7bit" {
				enc = "8bit"
			}
		}
		lineLen++
		if lineLen > 998 {
			return "binary"
		}
	}
	return enc
}

// toCRLF makes every line end CRLF.
func toCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	var out bytes.Buffer
	out.Grow(len(b) + len(b)/40)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	return out.Bytes()
}

func base64Lines(data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	var b bytes.Buffer
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.Bytes()
}

// latin1 converts UTF-8 text to ISO-8859-1, writing '?' for what it cannot
// represent, with CRLF line ends.
func latin1(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		switch {
		case r == '\n':
			out = append(out, '\r', '\n')
		case r == '\r':
		case r < 0x100:
			out = append(out, byte(r))
		default:
			out = append(out, '?')
		}
	}
	return out
}

func qp(b []byte) []byte {
	var out bytes.Buffer
	w := quotedprintable.NewWriter(&out)
	w.Write(b)
	w.Close()
	return toCRLF(out.Bytes())
}

// htmlOf renders the text as HTML carrying the same information, with no
// reference to any resource and no active content (RFC 6109 §4.3.1).
func htmlOf(text string) string {
	var b strings.Builder
	b.WriteString("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"></head><body>\n")
	for _, para := range strings.Split(text, "\n\n") {
		if strings.TrimSpace(para) == "" {
			continue
		}
		b.WriteString("<p>")
		b.WriteString(strings.ReplaceAll(html.EscapeString(para), "\n", "<br>\n"))
		b.WriteString("</p>\n")
	}
	b.WriteString("</body></html>\n")
	return b.String()
}

func newBoundary() string {
	var r [12]byte
	rand.Read(r[:])
	return "----=_sigillo_part_" + hex.EncodeToString(r[:])
}

// newID makes a PEC identificativo (or a Message-ID's content) at t:
// "sigillo.<yyyymmddhhmmss>.<random>@<domain>", like the opec ids of Aruba
// and Namirial carry their time of acceptance.
func newID(t time.Time, domain string) string {
	var r [8]byte
	rand.Read(r[:])
	return fmt.Sprintf("sigillo.%s.%s@%s", t.In(rome).Format("20060102150405"), hex.EncodeToString(r[:]), domain)
}

// rfc5322Date is the Date: field value at t, in Italian legal time.
func rfc5322Date(t time.Time) string {
	return t.In(rome).Format("Mon, 02 Jan 2006 15:04:05 -0700")
}

// when is t as the texts write it: "23/11/2026", "15:04:05", "+0100".
func when(t time.Time) (day, clock, zone string) {
	t = t.In(rome)
	return t.Format("02/01/2006"), t.Format("15:04:05"), t.Format("-0700")
}

// encodeText is a header value for text: as it is when it is printable
// ASCII whose words all fit in a header line, else RFC 2047 encoded words.
func encodeText(s string) string {
	if needsEncoding(s) || hasLongWord(s) {
		return encodeWords(s)
	}
	return s
}

// hasLongWord reports whether a word of s would not fit in a header line.
func hasLongWord(s string) bool {
	for w := range strings.SplitSeq(s, " ") {
		if len(w) > maxLine-100 {
			return true
		}
	}
	return false
}

// encodeWords encodes s (made valid UTF-8) as RFC 2047 "Q" encoded words of
// at most 75 characters each, separated by spaces, where writeField may
// fold: a subject of any length stays within the line limits. Only
// letters, digits and "!*+-/" stay literal, which suits any header text.
func encodeWords(s string) string {
	const head, tail = "=?utf-8?q?", "?="
	const room = 75 - len(head) - len(tail)
	var words []string
	var cur strings.Builder
	var buf [utf8.UTFMax]byte
	for _, r := range strings.ToValidUTF8(s, "?") {
		var enc string
		switch {
		case r == ' ':
			enc = "_"
		case r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!*+-/", r)):
			enc = string(r)
		default:
			n := utf8.EncodeRune(buf[:], r)
			for _, c := range buf[:n] {
				enc += fmt.Sprintf("=%02X", c)
			}
		}
		if cur.Len()+len(enc) > room {
			words = append(words, head+cur.String()+tail)
			cur.Reset()
		}
		cur.WriteString(enc)
	}
	if cur.Len() > 0 || len(words) == 0 {
		words = append(words, head+cur.String()+tail)
	}
	return strings.Join(words, " ")
}

// quoteDisplay quotes a display name: "Per conto di: user@example.it".
func quoteDisplay(s string) string {
	if needsEncoding(s) {
		return mime.QEncoding.Encode("utf-8", strings.ToValidUTF8(s, "?"))
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func needsEncoding(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] < 0x20 {
			return true
		}
	}
	return false
}

// subjectField is the Subject: of a system message: the prefix (always
// as it is, for the programs that sort receipts by it) and the
// original subject as it was on the wire (encoded words kept) when that is
// ASCII and fits in header lines, otherwise the decoded subject
// re-encoded.
func subjectField(prefix, rawSubject, decoded string) string {
	if !needsEncoding(rawSubject) && !hasLongWord(rawSubject) {
		return prefix + rawSubject
	}
	return prefix + encodeWords(decoded)
}
