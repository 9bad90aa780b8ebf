package pecdir

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of ParseLDIF. The Italian directory holds some tens of gestori with
// a few certificates each: these bounds are far above it and far below what
// would hurt.
const (
	MaxInputBytes     = 32 << 20  // the whole LDIF
	MaxLineBytes      = 256 << 10 // one logical line, after unfolding continuation lines
	MaxEntries        = 100000    // records, providers or not
	MaxValuesPerEntry = 10000     // attribute values in one record
)

// LineWidth is the width at which WriteLDIF folds lines (RFC 2849 allows
// any; 76 is customary and fits base64 of certificates nicely).
const LineWidth = 76

// ParseError is an error of ParseLDIF: the line (1-based, of the physical
// line where the offending logical line starts) and, for an error in an
// entry's content, the entry's dn.
type ParseError struct {
	Line int
	DN   string // "" when the error is not inside an identified entry
	Err  error
}

func (e *ParseError) Error() string {
	if e.DN != "" {
		return fmt.Sprintf("ldif: line %d: entry %q: %v", e.Line, e.DN, e.Err)
	}
	return fmt.Sprintf("ldif: line %d: %v", e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// logical is one unfolded line and the physical line where it starts.
type logical struct {
	no   int
	text string
}

// pending is a logical line being unfolded.
type pending struct {
	no int
	b  strings.Builder
}

// ParseLDIF reads an LDIF file (RFC 2849, content records only) and returns
// the entries of object class "provider" (RFC 6109 §4.5.9), in file order;
// other entries (the "o=postacert" root, with its LDIFLocationURL) are
// skipped. An entry without any objectClass is taken as a provider when it
// has a providerName.
//
// It accepts: an optional "version: 1" line; comments ('#' lines, folded
// or not); folded lines (a continuation line starts with one space);
// base64 values ("attr:: …"); attribute options ("providerCertificate;binary");
// LF or CRLF line ends; and, as in RFC 6109 §4.5.10's example, a "dn:" line
// starting a new entry without a blank line before it. It rejects change
// records, values given by URL ("attr:< …"), and every provider entry that
// Provider.Validate rejects (missing required attribute, malformed address
// or domain, a certificate hash that does not match the entry's
// certificates, …). Errors are *ParseError, with the line number. Input
// beyond the limits above is an error; no input makes it panic.
func ParseLDIF(r io.Reader) ([]Provider, error) {
	p := &parser{br: bufio.NewReaderSize(io.LimitReader(r, MaxInputBytes+1), 64<<10)}
	return p.run()
}

type parser struct {
	br      *bufio.Reader
	read    int64
	lineNo  int
	records int
	first   bool // the next record is the first of the file
	out     []Provider
}

// readLine returns the next physical line without its line end, and false
// at the end of input.
func (p *parser) readLine() (string, bool, error) {
	var buf []byte
	for {
		chunk, err := p.br.ReadSlice('\n')
		p.read += int64(len(chunk))
		if p.read > MaxInputBytes {
			return "", false, &ParseError{Line: p.lineNo + 1, Err: fmt.Errorf("input larger than %d bytes", MaxInputBytes)}
		}
		if len(buf)+len(chunk) > MaxLineBytes+2 {
			return "", false, &ParseError{Line: p.lineNo + 1, Err: fmt.Errorf("line longer than %d bytes", MaxLineBytes)}
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			p.lineNo++
			buf = bytes.TrimSuffix(buf[:len(buf)-1], []byte("\r"))
			return string(buf), true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				return "", false, nil
			}
			p.lineNo++
			return string(bytes.TrimSuffix(buf, []byte("\r"))), true, nil
		default:
			return "", false, &ParseError{Line: p.lineNo + 1, Err: err}
		}
	}
}

func (p *parser) run() ([]Provider, error) {
	p.first = true
	var (
		rec       []logical
		cur       *pending // the logical line being unfolded
		inComment bool     // the last physical line was (part of) a comment
		lastBlank = true
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		l := logical{no: cur.no, text: cur.b.String()}
		cur = nil
		if len(l.text) > MaxLineBytes {
			return &ParseError{Line: l.no, Err: fmt.Errorf("logical line longer than %d bytes", MaxLineBytes)}
		}
		// RFC 6109's example starts entries without a blank line before
		// "dn:": accept it as the start of a new record.
		if len(rec) > 0 && hasAttrPrefix(l.text, "dn") {
			if err := p.record(rec); err != nil {
				return err
			}
			rec = nil
		}
		rec = append(rec, l)
		if len(rec) > MaxValuesPerEntry+1 {
			return &ParseError{Line: l.no, Err: fmt.Errorf("more than %d attribute values in one entry", MaxValuesPerEntry)}
		}
		return nil
	}
	for {
		line, ok, err := p.readLine()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch {
		case line == "":
			if err := finish(); err != nil {
				return nil, err
			}
			inComment, lastBlank = false, true
			if len(rec) > 0 {
				if err := p.record(rec); err != nil {
					return nil, err
				}
				rec = nil
			}
		case line[0] == ' ':
			switch {
			case inComment:
			case cur != nil:
				if cur.b.Len()+len(line)-1 > MaxLineBytes {
					return nil, &ParseError{Line: cur.no, Err: fmt.Errorf("logical line longer than %d bytes", MaxLineBytes)}
				}
				cur.b.WriteString(line[1:])
			case lastBlank && strings.TrimSpace(line) == "":
				// a line of spaces between records: take it as blank
			default:
				return nil, &ParseError{Line: p.lineNo, Err: errors.New("continuation line (starting with a space) before any attribute")}
			}
		case line[0] == '#':
			if err := finish(); err != nil {
				return nil, err
			}
			inComment, lastBlank = true, false
		default:
			if err := finish(); err != nil {
				return nil, err
			}
			cur = &pending{no: p.lineNo}
			cur.b.WriteString(line)
			inComment, lastBlank = false, false
		}
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(rec) > 0 {
		if err := p.record(rec); err != nil {
			return nil, err
		}
	}
	return p.out, nil
}

// hasAttrPrefix: the line is "name:" or "name::" or "name;opts:" for the
// attribute name (case-insensitive).
func hasAttrPrefix(line, name string) bool {
	if len(line) <= len(name) || !strings.EqualFold(line[:len(name)], name) {
		return false
	}
	return line[len(name)] == ':'
}

// attrval is one parsed "attr: value" line.
type attrval struct {
	no    int
	name  string // lower case, without options
	desc  string // as written, with options
	value []byte
	b64   bool
}

func parseAttrval(l logical) (attrval, error) {
	i := strings.IndexByte(l.text, ':')
	if i < 0 {
		return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("%q is not of the form \"attribute: value\"", abbrev(l.text))}
	}
	desc := l.text[:i]
	if desc == "" {
		return attrval{}, &ParseError{Line: l.no, Err: errors.New("empty attribute name before ':'")}
	}
	for j := 0; j < len(desc); j++ {
		c := desc[j]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == ';' || c == '.') {
			return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("attribute description %q: character %q not allowed", abbrev(desc), rune(c))}
		}
	}
	name, _, _ := strings.Cut(desc, ";")
	if name == "" {
		return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("attribute description %q has no name", desc)}
	}
	a := attrval{no: l.no, name: strings.ToLower(name), desc: desc}
	rest := l.text[i+1:]
	switch {
	case strings.HasPrefix(rest, ":"):
		s := strings.Trim(rest[1:], " ")
		v, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("bad base64 value of %s: %v", desc, err)}
		}
		a.value, a.b64 = v, true
	case strings.HasPrefix(rest, "<"):
		return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("value of %s given by URL: not supported", desc)}
	default:
		v := strings.TrimLeft(rest, " ")
		for j := 0; j < len(v); j++ {
			if v[j] == 0 || v[j] == '\r' {
				return attrval{}, &ParseError{Line: l.no, Err: fmt.Errorf("value of %s contains a %q character (use base64, \"%s:: …\")", desc, rune(v[j]), desc)}
			}
		}
		a.value = []byte(v)
	}
	return a, nil
}

func abbrev(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// record turns one LDIF record into a Provider (appended to p.out) or skips
// it.
func (p *parser) record(rec []logical) error {
	p.records++
	if p.records > MaxEntries {
		return &ParseError{Line: rec[0].no, Err: fmt.Errorf("more than %d entries", MaxEntries)}
	}
	if p.first {
		p.first = false
		if hasAttrPrefix(rec[0].text, "version") {
			a, err := parseAttrval(rec[0])
			if err != nil {
				return err
			}
			if a.b64 || string(a.value) != "1" {
				return &ParseError{Line: rec[0].no, Err: fmt.Errorf("LDIF version %q, want 1", a.value)}
			}
			rec = rec[1:]
			if len(rec) == 0 {
				p.records--
				return nil
			}
		}
	}
	first, err := parseAttrval(rec[0])
	if err != nil {
		return err
	}
	if !strings.EqualFold(first.desc, "dn") {
		return &ParseError{Line: rec[0].no, Err: fmt.Errorf("entry does not start with \"dn:\" (first line is %q)", abbrev(rec[0].text))}
	}
	if !utf8.Valid(first.value) {
		return &ParseError{Line: rec[0].no, Err: errors.New("dn is not valid UTF-8")}
	}
	dn := string(first.value)
	perr := func(no int, format string, args ...any) error {
		return &ParseError{Line: no, DN: dn, Err: fmt.Errorf(format, args...)}
	}

	var (
		pr          Provider
		objectClass []string
		seen        = map[string]int{} // single-valued attribute -> line
	)
	single := func(a attrval, dst *string) error {
		if no, ok := seen[a.name]; ok {
			return perr(a.no, "%s given twice (also on line %d); it is single-valued", a.desc, no)
		}
		seen[a.name] = a.no
		if !utf8.Valid(a.value) {
			return perr(a.no, "value of %s is not valid UTF-8", a.desc)
		}
		*dst = string(a.value)
		return nil
	}
	multi := func(a attrval, dst *[]string) error {
		if !utf8.Valid(a.value) {
			return perr(a.no, "value of %s is not valid UTF-8", a.desc)
		}
		*dst = append(*dst, string(a.value))
		return nil
	}
	for _, l := range rec[1:] {
		a, err := parseAttrval(l)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				pe.DN = dn
			}
			return err
		}
		switch a.name {
		case "dn":
			return perr(a.no, "second dn in one entry")
		case "changetype":
			return perr(a.no, "change records are not supported (only content records)")
		case "objectclass":
			if err := multi(a, &objectClass); err != nil {
				return err
			}
		case "providername":
			err = single(a, &pr.Name)
		case "providerunit":
			err = single(a, &pr.Unit)
		case "providershortname":
			err = single(a, &pr.ShortName)
		case "mailreceipt":
			err = single(a, &pr.MailReceipt)
		case "ldiflocationurl":
			err = single(a, &pr.LDIFLocationURL)
		case "managedomains", "manageddomains":
			err = multi(a, &pr.ManagedDomains)
		case "description":
			err = multi(a, &pr.Description)
		case "providercertificatehash":
			err = multi(a, &pr.CertificateHash)
		case "providercertificate":
			if !a.b64 {
				return perr(a.no, "%s must be base64 DER (\"providerCertificate;binary:: …\")", a.desc)
			}
			c, cerr := x509.ParseCertificate(a.value)
			if cerr != nil {
				return perr(a.no, "%s: not a DER X.509 certificate: %v", a.desc, cerr)
			}
			pr.Certificates = append(pr.Certificates, c)
		}
		if err != nil {
			return err
		}
	}

	isProvider := false
	for _, oc := range objectClass {
		if strings.EqualFold(strings.TrimSpace(oc), "provider") {
			isProvider = true
		}
	}
	if len(objectClass) == 0 && pr.Name != "" {
		isProvider = true
	}
	if !isProvider {
		return nil
	}
	if err := pr.Validate(); err != nil {
		return &ParseError{Line: rec[0].no, DN: dn, Err: err}
	}
	p.out = append(p.out, pr)
	return nil
}

// WriteLDIF writes ps as LDIF content records (after "version: 1"), one
// entry per provider with dn "providerName=…,o=postacert" (with
// "providerUnit=…," in front for a secondary environment), object classes
// top and provider, and every attribute of Provider that is set.
// Certificates, and every value that is not a plain ASCII SAFE-STRING of
// RFC 2849 (non-ASCII, leading space, ':' or '<', trailing space), are
// written in base64; lines are folded at LineWidth columns. ParseLDIF reads
// the result back identically. Every provider must pass Validate; nothing
// is written otherwise.
func WriteLDIF(w io.Writer, ps []Provider) error {
	for i := range ps {
		if err := ps[i].Validate(); err != nil {
			return fmt.Errorf("pecdir: provider #%d (%q): %w", i+1, ps[i].Name, err)
		}
	}
	bw := bufio.NewWriter(w)
	writeLine(bw, "version: 1")
	for _, p := range ps {
		bw.WriteString("\n")
		writeAttr(bw, "dn", entryDN(p))
		writeAttr(bw, "objectClass", "top")
		writeAttr(bw, "objectClass", "provider")
		writeAttr(bw, "providerName", p.Name)
		if p.Unit != "" {
			writeAttr(bw, "providerUnit", p.Unit)
		}
		if p.ShortName != "" {
			writeAttr(bw, "providerShortName", p.ShortName)
		}
		for _, h := range p.CertificateHash {
			writeAttr(bw, "providerCertificateHash", h)
		}
		for _, c := range p.Certificates {
			writeLine(bw, "providerCertificate;binary:: "+base64.StdEncoding.EncodeToString(c.Raw))
		}
		writeAttr(bw, "mailReceipt", p.MailReceipt)
		if p.LDIFLocationURL != "" {
			writeAttr(bw, "LDIFLocationURL", p.LDIFLocationURL)
		}
		for _, d := range p.ManagedDomains {
			writeAttr(bw, "managedDomains", d)
		}
		for _, d := range p.Description {
			writeAttr(bw, "description", d)
		}
	}
	return bw.Flush()
}

// entryDN is the dn WriteLDIF gives p: "providerName=<name>,o=postacert",
// preceded by "providerUnit=<unit>," for a secondary environment (RFC 6109
// §4.5, §4.5.7), values escaped as RFC 4514 says.
func entryDN(p Provider) string {
	dn := "providerName=" + escapeDNValue(p.Name) + ",o=postacert"
	if p.Unit != "" {
		dn = "providerUnit=" + escapeDNValue(p.Unit) + "," + dn
	}
	return dn
}

// escapeDNValue escapes an attribute value for a DN string (RFC 4514 §2.4).
func escapeDNValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case strings.IndexByte(`,+"\<>;=`, c) >= 0,
			i == 0 && (c == ' ' || c == '#'),
			i == len(v)-1 && c == ' ':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == 0:
			b.WriteString(`\00`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isSafeString: RFC 2849 SAFE-STRING, and no trailing space (which some
// readers strip).
func isSafeString(v string) bool {
	if v == "" {
		return true
	}
	if c := v[0]; c == ' ' || c == ':' || c == '<' {
		return false
	}
	if v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == 0 || c == '\n' || c == '\r' || c >= 0x80 {
			return false
		}
	}
	return true
}

func writeAttr(bw *bufio.Writer, name, value string) {
	if isSafeString(value) {
		if value == "" {
			writeLine(bw, name+":")
			return
		}
		writeLine(bw, name+": "+value)
		return
	}
	writeLine(bw, name+":: "+base64.StdEncoding.EncodeToString([]byte(value)))
}

// writeLine writes one logical line folded at LineWidth columns: the first
// physical line holds LineWidth bytes, the continuation lines a space and
// LineWidth-1 bytes. Only ASCII reaches it, so no character is split.
func writeLine(bw *bufio.Writer, s string) {
	n := LineWidth
	for len(s) > n {
		bw.WriteString(s[:n])
		bw.WriteString("\n ")
		s = s[n:]
		n = LineWidth - 1
	}
	bw.WriteString(s)
	bw.WriteString("\n")
}
