package pec

import (
	"fmt"
	"strings"
	"time"
)

// The human-readable texts of the system messages: Italian first, as real
// gestori write them, then an English translation, as Legalmail does
// (PEC.md §3; the English follows the RFC 6109 templates).

const separator = "\n\n--------------------------------------------------------------------\n\n"

type textData struct {
	at         time.Time
	subject    string
	sender     string
	recipients []Destinatario
	recipient  string // the one recipient a per-recipient notice is about
	id         string
	errText    string
	tipo       string // completa, breve, sintetica
}

func (d textData) when() (string, string, string) { return when(d.at) }

// oneLine is d with each value on one line (see oneLine), so that a subject
// or an address from outside cannot add lines of its own to a text we sign.
func (d textData) oneLine() textData {
	d.subject, d.sender, d.recipient, d.id, d.errText = oneLine(d.subject), oneLine(d.sender), oneLine(d.recipient), oneLine(d.id), oneLine(d.errText)
	rs := make([]Destinatario, len(d.recipients))
	for i, r := range d.recipients {
		rs[i] = Destinatario{Address: oneLine(r.Address), Certificato: r.Certificato}
	}
	d.recipients = rs
	return d
}

func (d textData) rcptList(certified, external string) string {
	var b strings.Builder
	for _, r := range d.recipients {
		kind := external
		if r.Certificato {
			kind = certified
		}
		fmt.Fprintf(&b, "%s (\"%s\")\n", r.Address, kind)
	}
	return b.String()
}

func textAccettazione(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Ricevuta di accettazione\n\nIl giorno %s alle ore %s (%s) il messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a:\n%s\nè stato accettato dal sistema ed inoltrato.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.id)
	en := fmt.Sprintf("Acceptance receipt\n\nOn %s at %s (%s) the message\n\"%s\" originating from \"%s\"\nand addressed to:\n%s\nwas accepted by the system and forwarded.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.id)
	return it + separator + en
}

func textNonAccettazione(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Avviso di non accettazione\n\nErrore nell'accettazione del messaggio\nIl giorno %s alle ore %s (%s) nel messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a:\n%s\nè stato rilevato un problema che ne impedisce l'accettazione\na causa di: %s\nIl messaggio non è stato accettato.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.errText, d.id)
	en := fmt.Sprintf("Non-acceptance notice\n\nError in message acceptance\nOn %s at %s (%s) in the message\n\"%s\" originating from \"%s\"\nand addressed to:\n%s\na problem was detected that prevents its acceptance\nbecause of: %s\nThe message was not accepted.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.errText, d.id)
	return it + separator + en
}

func textBusta(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Messaggio di posta certificata\n\nIl giorno %s alle ore %s (%s) il messaggio\n\"%s\" è stato inviato da \"%s\"\nindirizzato a:\n%s\nIl messaggio originale è incluso in allegato.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.id)
	en := fmt.Sprintf("Certified mail message\n\nOn %s at %s (%s) the message\n\"%s\" was sent by \"%s\"\nand addressed to:\n%s\nThe original message is included in attachment.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.id)
	return it + separator + en
}

func textPresaInCarico(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Ricevuta di presa in carico\n\nIl giorno %s alle ore %s (%s) il messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a:\n%s\nè stato accettato dal sistema.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.id)
	en := fmt.Sprintf("Server-server acceptance notification\n\nOn %s at %s (%s) the message\n\"%s\" originating from \"%s\"\nand addressed to:\n%s\nwas accepted by the system.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.id)
	return it + separator + en
}

func textConsegna(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	var notaIT, notaEN string
	switch d.tipo {
	case "breve":
		notaIT = "\nIn allegato il messaggio originale, con gli allegati sostituiti dalla loro impronta SHA-1 (ricevuta breve)."
		notaEN = "\nThe original message is attached, its attachments replaced by their SHA-1 digest (short receipt)."
	case "sintetica":
		notaIT = "\nRicevuta sintetica: il messaggio originale non è allegato."
		notaEN = "\nSynthetic receipt: the original message is not attached."
	default:
		notaIT = "\nIl messaggio originale è incluso in allegato (ricevuta completa)."
		notaEN = "\nThe original message is included in attachment (complete receipt)."
	}
	it := fmt.Sprintf("Ricevuta di avvenuta consegna\n\nIl giorno %s alle ore %s (%s) il messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nè stato correttamente consegnato al destinatario.\nIdentificativo messaggio: %s%s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.id, notaIT)
	en := fmt.Sprintf("Delivery receipt\n\nOn %s at %s (%s) the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\nwas delivered to the recipient.\nMessage identifier: %s%s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.id, notaEN)
	return it + separator + en
}

func textMancataConsegna(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Avviso di mancata consegna\n\nIl giorno %s alle ore %s (%s) nel messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nè stato rilevato un errore: %s\nIl messaggio è stato rifiutato dal sistema.\nIdentificativo messaggio: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	en := fmt.Sprintf("Non-delivery notification\n\nOn %s at %s (%s) in the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\nan error was detected: %s\nThe message was refused by the system.\nMessage identifier: %s",
		day, clock, zone, d.subject, d.sender, d.recipient, d.errText, d.id)
	return it + separator + en
}

func textAnomalia(d textData) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	it := fmt.Sprintf("Anomalia nel messaggio\n\nIl giorno %s alle ore %s (%s) è stato ricevuto\nil messaggio \"%s\" proveniente da \"%s\"\ned indirizzato a:\n%s\nTali dati non sono stati certificati per il seguente errore:\n%s\nIl messaggio originale è incluso in allegato.",
		day, clock, zone, d.subject, d.sender, d.rcptList("posta certificata", "posta ordinaria"), d.errText)
	en := fmt.Sprintf("Message anomaly\n\nOn %s at %s (%s) the message\n\"%s\" originating from \"%s\"\nand addressed to:\n%s\nwas received. The data has not been certified due to the following error:\n%s\nThe original message is attached.",
		day, clock, zone, d.subject, d.sender, d.rcptList("certified mail", "ordinary mail"), d.errText)
	return it + separator + en
}

func textPreavviso(d textData, final bool) string {
	d = d.oneLine()
	day, clock, zone := d.when()
	var it, en string
	if !final {
		it = fmt.Sprintf("Avviso di mancata consegna per superamento dei tempi massimi\n\nIl giorno %s alle ore %s (%s) si è riscontrato che il messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nnon è stato consegnato nelle prime 12 ore dal suo invio.\nIl sistema invierà un ulteriore avviso se nelle successive 12 ore\nnon riceverà la conferma di avvenuta consegna.\nIdentificativo messaggio: %s",
			day, clock, zone, d.subject, d.sender, d.recipient, d.id)
		en = fmt.Sprintf("Notice of non-delivery for maximum time exceeded\n\nOn %s at %s (%s) it was found that the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\nhas not been delivered within the first 12 hours of its dispatch.\nThe system will send another notice if in the following twelve hours\nno delivery confirmation is received.\nMessage identifier: %s",
			day, clock, zone, d.subject, d.sender, d.recipient, d.id)
	} else {
		it = fmt.Sprintf("Avviso di mancata consegna per superamento dei tempi massimi\n\nIl giorno %s alle ore %s (%s) si è riscontrato che il messaggio\n\"%s\" proveniente da \"%s\"\ned indirizzato a \"%s\"\nnon è stato consegnato entro 24 ore dal suo invio.\nLa transazione si considera conclusa con esito negativo.\nIdentificativo messaggio: %s",
			day, clock, zone, d.subject, d.sender, d.recipient, d.id)
		en = fmt.Sprintf("Notice of non-delivery for maximum time exceeded\n\nOn %s at %s (%s) it was found that the message\n\"%s\" originating from \"%s\"\nand addressed to \"%s\"\nhas not been delivered within 24 hours of its dispatch.\nThe transaction is deemed terminated with a negative outcome.\nMessage identifier: %s",
			day, clock, zone, d.subject, d.sender, d.recipient, d.id)
	}
	return it + separator + en
}
