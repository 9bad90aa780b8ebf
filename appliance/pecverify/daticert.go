package pecverify

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Daticert is the content of a daticert.xml (PEC.md §5; the element and
// attribute names are those of the official DTD). Text is trimmed of
// surrounding white space. Attributes the DTD gives a default take it when
// absent: errore "nessuno", destinatari tipo "certificato".
type Daticert struct {
	Tipo             string         `json:"tipo"`   // postacert/@tipo: accettazione, posta-certificata, avvenuta-consegna, …
	Errore           string         `json:"errore"` // postacert/@errore: nessuno, no-dest, no-dominio, virus, altro
	Mittente         string         `json:"mittente"`
	Destinatari      []Destinatario `json:"destinatari"`
	Risposte         string         `json:"risposte,omitempty"`
	Oggetto          string         `json:"oggetto,omitempty"`
	GestoreEmittente string         `json:"gestore-emittente,omitempty"`
	Giorno           string         `json:"giorno,omitempty"` // dati/data/giorno, "gg/mm/aaaa"
	Ora              string         `json:"ora,omitempty"`    // dati/data/ora, local "hh:mm:ss"
	Zona             string         `json:"zona,omitempty"`   // dati/data/@zona, "[+|-]hhmm"
	Identificativo   string         `json:"identificativo,omitempty"`
	MsgID            string         `json:"msgid,omitempty"`    // with its angle brackets, as gestori write it
	Ricevuta         string         `json:"ricevuta,omitempty"` // dati/ricevuta/@tipo: completa, breve, sintetica
	Consegna         string         `json:"consegna,omitempty"`
	Ricezione        []string       `json:"ricezione,omitempty"`
	ErroreEsteso     string         `json:"errore-esteso,omitempty"`
}

// Destinatario is one <destinatari> element: a recipient of the original
// message and whether it is a PEC mailbox ("certificato") or not ("esterno").
type Destinatario struct {
	Tipo    string `json:"tipo"`
	Address string `json:"address"`
}

// Time returns the certified date and time (giorno, ora, zona) as a time.Time.
func (d *Daticert) Time() (time.Time, error) {
	return time.Parse("02/01/2006 15:04:05 -0700", d.Giorno+" "+d.Ora+" "+d.Zona)
}

// xmlPostacert mirrors the DTD for encoding/xml.
type xmlPostacert struct {
	XMLName      xml.Name
	Tipo         string `xml:"tipo,attr"`
	Errore       string `xml:"errore,attr"`
	Intestazione struct {
		Mittente    string `xml:"mittente"`
		Destinatari []struct {
			Tipo    string `xml:"tipo,attr"`
			Address string `xml:",chardata"`
		} `xml:"destinatari"`
		Risposte string `xml:"risposte"`
		Oggetto  string `xml:"oggetto"`
	} `xml:"intestazione"`
	Dati struct {
		GestoreEmittente string `xml:"gestore-emittente"`
		Data             struct {
			Zona   string `xml:"zona,attr"`
			Giorno string `xml:"giorno"`
			Ora    string `xml:"ora"`
		} `xml:"data"`
		Identificativo string `xml:"identificativo"`
		MsgID          string `xml:"msgid"`
		Ricevuta       *struct {
			Tipo string `xml:"tipo,attr"`
		} `xml:"ricevuta"`
		Consegna     string   `xml:"consegna"`
		Ricezione    []string `xml:"ricezione"`
		ErroreEsteso string   `xml:"errore-esteso"`
	} `xml:"dati"`
}

var xmlEncodingDecl = regexp.MustCompile(`^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']`)

// ParseDaticert parses a daticert.xml whose transfer encoding (base64,
// quoted-printable) the MIME layer has already undone. The document may be
// UTF-8 or declare ISO-8859-1 (also latin1, windows-1252, us-ascii); a
// document declaring UTF-8, or nothing, that is not valid UTF-8 is read as
// ISO-8859-1, which is what such a file always turns out to be, and one
// declaring a single-byte charset whose bytes are valid UTF-8 is read as
// UTF-8. The root element must be postacert; when it has no tipo the parsed
// content is returned together with an error.
func ParseDaticert(data []byte) (*Daticert, error) {
	if len(data) > maxDaticert {
		return nil, fmt.Errorf("daticert.xml longer than %d bytes", maxDaticert)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		enc := ""
		if m := xmlEncodingDecl.FindSubmatch(data); m != nil {
			enc = strings.ToLower(string(m[1]))
		}
		if enc == "" || enc == "utf-8" || enc == "utf8" {
			data = latin1ToUTF8(data)
		}
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	d.CharsetReader = charsetReader
	d.Entity = xml.HTMLEntity
	var x xmlPostacert
	if err := d.Decode(&x); err != nil {
		return nil, fmt.Errorf("daticert.xml: %v", err)
	}
	if x.XMLName.Local != "postacert" {
		return nil, fmt.Errorf("daticert.xml: root element is <%s>, want <postacert>", x.XMLName.Local)
	}
	t := strings.TrimSpace
	dc := &Daticert{
		Tipo:             t(x.Tipo),
		Errore:           t(x.Errore),
		Mittente:         t(x.Intestazione.Mittente),
		Destinatari:      []Destinatario{},
		Risposte:         t(x.Intestazione.Risposte),
		Oggetto:          t(x.Intestazione.Oggetto),
		GestoreEmittente: t(x.Dati.GestoreEmittente),
		Giorno:           t(x.Dati.Data.Giorno),
		Ora:              t(x.Dati.Data.Ora),
		Zona:             t(x.Dati.Data.Zona),
		Identificativo:   t(x.Dati.Identificativo),
		MsgID:            t(x.Dati.MsgID),
		Consegna:         t(x.Dati.Consegna),
		ErroreEsteso:     t(x.Dati.ErroreEsteso),
	}
	if dc.Errore == "" {
		dc.Errore = "nessuno"
	}
	for _, de := range x.Intestazione.Destinatari {
		tipo := t(de.Tipo)
		if tipo == "" {
			tipo = "certificato"
		}
		dc.Destinatari = append(dc.Destinatari, Destinatario{Tipo: tipo, Address: t(de.Address)})
	}
	if x.Dati.Ricevuta != nil {
		dc.Ricevuta = t(x.Dati.Ricevuta.Tipo)
	}
	for _, r := range x.Dati.Ricezione {
		dc.Ricezione = append(dc.Ricezione, t(r))
	}
	if dc.Tipo == "" {
		return dc, errors.New("daticert.xml: postacert has no tipo")
	}
	return dc, nil
}

// charsetReader gives encoding/xml the single-byte charsets a daticert may
// declare; encoding/xml handles UTF-8 itself.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	var table *[128]rune
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819", "iso-ir-100",
		"us-ascii", "ascii":
		table = nil
	case "windows-1252", "cp1252", "x-cp1252":
		table = &cp1252High
	default:
		return nil, fmt.Errorf("unsupported charset %q", label)
	}
	b, err := io.ReadAll(io.LimitReader(in, maxDaticert+1))
	if err != nil {
		return nil, err
	}
	if utf8.Valid(b) {
		// Declared single-byte but written in UTF-8 (a multi-byte UTF-8
		// sequence is all but impossible in real Latin-1 text): take the bytes.
		return bytes.NewReader(b), nil
	}
	if table == nil {
		return bytes.NewReader(latin1ToUTF8(b)), nil
	}
	out := make([]byte, 0, len(b)+len(b)/8)
	for _, c := range b {
		if c < 0x80 {
			out = append(out, c)
		} else {
			out = utf8.AppendRune(out, table[c-0x80])
		}
	}
	return bytes.NewReader(out), nil
}

func latin1ToUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/8)
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return out
}

// cp1252High maps bytes 0x80–0xFF of windows-1252 to Unicode; it differs from
// ISO-8859-1 only in 0x80–0x9F.
var cp1252High = func() [128]rune {
	var t [128]rune
	for i := range t {
		t[i] = rune(0x80 + i)
	}
	copy(t[:32], []rune{
		0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
		0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
	})
	return t
}()
