package imapd

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/encoding/charmap"

	"sigillo/storage"
)

// corpusWords are what the generated messages say: common English words,
// some Italian ones with accents, in a skewed distribution (a few words
// very common, most rare), as in real mail.
var corpusWords = strings.Fields(`the of and to in is it you that he was for on are with as his they be at one have
this from or had by hot word but what some we can out other were all there when up use your how said an each she
which do their time if will way about many then them write would like so these her long make thing see him two has
look more day could go come did number sound no most people my over know water than call first who may down side
been now find any new work part take get place made live where after back little only round man year came show
every good me give our under name very through just form sentence great think say help low line differ turn cause
much mean before move right boy old too same tell does set three want air well also play small end put home read
hand port large spell add even land here must big high such follow act why ask men change went light kind off need
house picture try us again animal point mother world near build self earth father head stand own page should
country found answer school grow study still learn plant cover food sun four between state keep eye never last let
thought city tree cross farm hard start might story saw far sea draw left late run while press close night real
life few north caffè perché città università però così già più lunedì martedì fattura pagamento riunione progetto
scadenza bilancio preventivo consegna ordine spedizione`)

// corpusMessage is the i-th message of a reproducible corpus: plain text,
// multipart/alternative with quoted-printable text and base64 HTML,
// Latin-1 quoted-printable, or text with a base64 PDF attached. Each says
// its own rare word, rare<i>x.
func corpusMessage(i int) []byte {
	rng := rand.New(rand.NewSource(int64(i)))
	var text strings.Builder
	n := 80 + rng.Intn(220)
	for j := 0; j < n; j++ {
		w := corpusWords[int(float64(len(corpusWords))*rng.Float64()*rng.Float64()*rng.Float64())]
		if j == n/2 {
			w = fmt.Sprintf("rare%dx", i)
		}
		text.WriteString(w)
		if j%12 == 11 {
			text.WriteString(".\r\n")
		} else {
			text.WriteByte(' ')
		}
	}
	body := text.String()
	subject := fmt.Sprintf("%s %s %d", corpusWords[rng.Intn(60)], corpusWords[rng.Intn(len(corpusWords))], i)
	head := fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: alice@example.test\r\nSubject: %s\r\n"+
		"Date: Tue, 05 Mar 2024 09:00:00 +0000\r\nMessage-ID: <m%d@example.org>\r\nMIME-Version: 1.0\r\n", i%97, i%97, subject, i)
	switch i % 4 {
	case 0:
		return []byte(head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)
	case 1:
		html := "<html><body><p>" + strings.ReplaceAll(body, ".\r\n", ".</p>\r\n<p>") + "</p></body></html>"
		return []byte(head + "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
			"--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp([]byte(body)) + "\r\n" +
			"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64([]byte(html)) +
			"--alt--\r\n")
	case 2:
		latin, err := charmap.ISO8859_1.NewEncoder().String(body)
		if err != nil {
			panic(err)
		}
		return []byte(head + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp([]byte(latin)))
	default:
		pdf := make([]byte, 2048+rng.Intn(4096))
		rng.Read(pdf)
		return []byte(head + "Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n" +
			"--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n" +
			"--mix\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"fattura-" + fmt.Sprint(i) + ".pdf\"\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + b64(pdf) + "--mix--\r\n")
	}
}

func qp(b []byte) string {
	var s strings.Builder
	w := quotedprintable.NewWriter(&s)
	w.Write(b)
	w.Close()
	return s.String()
}

func b64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}

// fillCorpus delivers messages from..to-1 of the corpus to the account's
// INBOX, in batches as raft applies them, and returns how long it took.
func (e *env) fillCorpus(tb testing.TB, from, to int) time.Duration {
	tb.Helper()
	start := time.Now()
	const batch = 256
	for i := from; i < to; i += batch {
		var cmds []storage.Command
		for j := i; j < to && j < i+batch; j++ {
			cmds = append(cmds, &storage.Deliver{
				Targets:      []storage.Target{{MailboxID: e.mailbox}},
				InternalDate: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix(),
				Data:         corpusMessage(j),
			})
		}
		res, err := e.proposer.ApplyAll(context.Background(), cmds)
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				tb.Fatal(r.Err)
			}
		}
		// The server's indexer (storage.RunTextIndexer) indexes the text
		// after each commit; the time to fill includes it.
		if err := e.store.IndexPendingText(context.Background()); err != nil {
			tb.Fatal(err)
		}
	}
	return time.Since(start)
}
