package pec

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// The 8-bit charsets of Italian mail beyond the UTF-8, ISO-8859-1 and
// US-ASCII that package mime decodes by itself: Windows-1252 (Outlook's)
// and ISO-8859-15 (Latin-9, with the euro sign).

// cp1252High maps the bytes 0x80–0x9F of Windows-1252; 0 where it has no
// character (they become '?').
var cp1252High = [32]rune{
	0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017D, 0,
	0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
}

// latin9 are the code points where ISO-8859-15 differs from ISO-8859-1.
var latin9 = map[byte]rune{0xA4: 0x20AC, 0xA6: 0x0160, 0xA8: 0x0161, 0xB4: 0x017D, 0xB8: 0x017E, 0xBC: 0x0152, 0xBD: 0x0153, 0xBE: 0x0178}

func cp1252Rune(c byte) rune {
	if c >= 0x80 && c < 0xA0 {
		if r := cp1252High[c-0x80]; r != 0 {
			return r
		}
		return '?'
	}
	return rune(c)
}

func latin9Rune(c byte) rune {
	if r, ok := latin9[c]; ok {
		return r
	}
	return rune(c)
}

func decode8bit(b []byte, conv func(byte) rune) string {
	var out strings.Builder
	out.Grow(len(b) + len(b)/4)
	for _, c := range b {
		out.WriteRune(conv(c))
	}
	return out.String()
}

// decodeCP1252Invalid decodes s as UTF-8 where it is, and each byte that is
// not as Windows-1252.
func decodeCP1252Invalid(s string) string {
	var out strings.Builder
	out.Grow(len(s) + len(s)/4)
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n <= 1 {
			out.WriteRune(cp1252Rune(s[0]))
			s = s[1:]
			continue
		}
		out.WriteString(s[:n])
		s = s[n:]
	}
	return out.String()
}

// charsetReader is a mime.WordDecoder's CharsetReader for Windows-1252 and
// ISO-8859-15; other charsets are an error (the encoded word is then kept
// as it is, which loses nothing).
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	var conv func(byte) rune
	switch strings.ToLower(charset) {
	case "windows-1252", "cp1252", "x-cp1252", "cp-1252":
		conv = cp1252Rune
	case "iso-8859-15", "iso8859-15", "iso_8859-15", "latin-9", "latin9", "l9":
		conv = latin9Rune
	default:
		return nil, fmt.Errorf("unsupported charset %q", charset)
	}
	b, err := io.ReadAll(io.LimitReader(input, 1<<20))
	if err != nil {
		return nil, err
	}
	return strings.NewReader(decode8bit(b, conv)), nil
}

// lenientCharsetReader is charsetReader reading any other charset as
// US-ASCII, '?' for each 8-bit byte: for the display names of addresses,
// which the checks do not look at.
func lenientCharsetReader(charset string, input io.Reader) (io.Reader, error) {
	if r, err := charsetReader(charset, input); err == nil {
		return r, nil
	}
	b, err := io.ReadAll(io.LimitReader(input, 1<<20))
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(bytes.Map(func(r rune) rune {
		if r >= 0x80 || r == utf8.RuneError {
			return '?'
		}
		return r
	}, b)), nil
}
