package pec

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"time"
)

// Daticert is the certification data of one PEC message (daticert.xml,
// PEC.md §5): what this gestore writes. The reader is pecverify.
type Daticert struct {
	Tipo         string // accettazione, posta-certificata, avvenuta-consegna, ...
	Errore       string // nessuno (default), no-dest, no-dominio, virus, altro
	Mittente     string
	Destinatari  []Destinatario
	Risposte     string
	Oggetto      string
	Gestore      string
	Time         time.Time
	ID           string // the PEC identificativo, without angle brackets
	MsgID        string // the original Message-ID, with its angle brackets
	Ricevuta     string // completa, breve, sintetica (bustas and consegne)
	Consegna     string
	Ricezione    []string
	ErroreEsteso string
}

// Destinatario is one recipient of the original, certified (of a PEC
// domain) or not.
type Destinatario struct {
	Address     string
	Certificato bool
}

// XML renders d the way real gestori write it: UTF-8, no DOCTYPE, in the
// element order of the DTD.
func (d Daticert) XML() []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	errore := d.Errore
	if errore == "" {
		errore = "nessuno"
	}
	fmt.Fprintf(&b, "<postacert tipo=\"%s\" errore=\"%s\">\n", esc(d.Tipo), esc(errore))
	b.WriteString("    <intestazione>\n")
	elem(&b, 8, "mittente", d.Mittente)
	for _, r := range d.Destinatari {
		tipo := "esterno"
		if r.Certificato {
			tipo = "certificato"
		}
		fmt.Fprintf(&b, "        <destinatari tipo=\"%s\">%s</destinatari>\n", tipo, esc(r.Address))
	}
	elem(&b, 8, "risposte", d.Risposte)
	elem(&b, 8, "oggetto", d.Oggetto)
	b.WriteString("    </intestazione>\n    <dati>\n")
	elem(&b, 8, "gestore-emittente", d.Gestore)
	t := d.Time.In(rome)
	fmt.Fprintf(&b, "        <data zona=\"%s\">\n", t.Format("-0700"))
	elem(&b, 12, "giorno", t.Format("02/01/2006"))
	elem(&b, 12, "ora", t.Format("15:04:05"))
	b.WriteString("        </data>\n")
	elem(&b, 8, "identificativo", d.ID)
	if d.MsgID != "" {
		elem(&b, 8, "msgid", d.MsgID)
	}
	if d.Ricevuta != "" {
		fmt.Fprintf(&b, "        <ricevuta tipo=\"%s\" />\n", esc(d.Ricevuta))
	}
	if d.Consegna != "" {
		elem(&b, 8, "consegna", d.Consegna)
	}
	for _, r := range d.Ricezione {
		elem(&b, 8, "ricezione", r)
	}
	if d.ErroreEsteso != "" {
		elem(&b, 8, "errore-esteso", d.ErroreEsteso)
	}
	b.WriteString("    </dati>\n</postacert>\n")
	return b.Bytes()
}

func elem(b *bytes.Buffer, indent int, name, value string) {
	for range indent {
		b.WriteByte(' ')
	}
	fmt.Fprintf(b, "<%s>%s</%s>\n", name, esc(value), name)
}

// esc escapes text for XML, dropping what XML 1.0 cannot carry at all.
func esc(s string) string {
	var b bytes.Buffer
	clean := []rune{}
	for _, r := range s {
		if r == 0x9 || r == 0xA || r == 0xD || (r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF) {
			clean = append(clean, r)
		}
	}
	_ = xml.EscapeText(&b, []byte(string(clean)))
	return b.String()
}
