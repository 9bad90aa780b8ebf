package mailtext

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

const multi = "From: Bob <bob@example.org>\r\n" +
	"Subject: =?utf-8?q?Caf=C3=A9_cr=C3=A8me?=\r\n" +
	"Content-Type: multipart/mixed; boundary=\"BB\"\r\n" +
	"\r\n" +
	"This is a multi-part message in MIME format.\r\n" +
	"--BB\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Un caff=C3=A8 lungo, per favore, e una bri=\r\n" +
	"oche calda.\r\n" +
	"--BB\r\n" +
	"Content-Type: text/plain; charset=iso-8859-1\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"R2z8Y2t3dW5zY2ggenVtIEdlYnVydHN0YWc=\r\n" + // "Glückwunsch zum Geburtstag" in Latin-1
	"--BB\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"\r\n" +
	"<html><head><style>p { colour: hidden-style }</style><script>var hiddenScript = 1;</script></head>\r\n" +
	"<body><p>Hello <b>wor</b>ld</p><div>fish&amp;chips</div><p>last\r\n   line</p></body></html>\r\n" +
	"--BB\r\n" +
	"Content-Type: application/pdf\r\n" +
	"Content-Disposition: attachment; filename=\"quarterly-report.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"c2VjcmV0LWluc2lkZS10aGUtcGRm\r\n" + // "secret-inside-the-pdf"
	"--BB\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: the forwarded one\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"words of the forwarded message\r\n" +
	"--BB--\r\n"

// TestWhatASearchFinds: the text a search looks in is the decoded text a
// reader sees, whatever the encoding it travelled in.
func TestWhatASearchFinds(t *testing.T) {
	got := Extract([]byte(multi), Index())
	if !got.Complete {
		t.Errorf("a small message was cut: %v", got)
	}
	for _, want := range []string{
		"From: Bob <bob@example.org>",               // the raw header
		"Subject: =?utf-8?q?Caf=C3=A9_cr=C3=A8me?=", // as it is
		"Subject: Café crème",                       // and decoded
	} {
		if !strings.Contains(got.Header, want) {
			t.Errorf("header text lacks %q:\n%s", want, got.Header)
		}
	}
	for _, want := range []string{
		"Un caffè lungo, per favore, e una brioche calda.", // quoted-printable with a soft break
		"Glückwunsch zum Geburtstag",                       // base64 in Latin-1
		"Hello world\nfish&chips\nlast line",               // HTML: tags gone, entities decoded, blocks on lines
		"filename=\"quarterly-report.pdf\"",                // a part's header fields
		"Content-Type: text/html",
		"Subject: the forwarded one", // an attached message's header and text
		"words of the forwarded message",
	} {
		if !strings.Contains(got.Body, want) {
			t.Errorf("body text lacks %q:\n%s", want, got.Body)
		}
	}
	for _, not := range []string{"hidden-style", "hiddenScript", "<b>", "secret-inside-the-pdf", "c2VjcmV0", "=C3=A8", "MIME format", "\r"} {
		if strings.Contains(got.Body, not) {
			t.Errorf("body text has %q:\n%s", not, got.Body)
		}
	}
	if strings.Contains(got.Header, "\r") {
		t.Errorf("header text keeps CR")
	}
}

func TestMessagesThatAreNotMIME(t *testing.T) {
	for _, c := range []struct {
		name, msg, body string
		complete        bool
	}{
		{"plain", "Subject: hi\r\n\r\njust text\r\n", "just text\n", true},
		{"no header", "\r\nonly a body", "only a body\n", true},
		{"header only", "Subject: header only", "", true},
		{"empty", "", "", true},
		{"broken header", " leading space\nno colon here\n\nthe \x00body\xff\n", "the  body\uFFFD\n", true},
		{"unknown charset", "Content-Type: text/plain; charset=x-klingon\r\n\r\nqapla'\r\n", "qapla'\n", true},
		{"latin-1", "Content-Type: text/plain; charset=ISO-8859-1\r\n\r\ncaf\xe9\r\n", "café\n", true},
		{"unknown encoding", "Content-Transfer-Encoding: rot13\r\n\r\nobql\r\n", "obql\n", true},
		{"garbage type", "Content-Type: ;;;===\r\n\r\nbody\r\n", "", true},
		{"unterminated multipart", "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\nContent-Type: text/html\r\n\r\n<b>no end",
			"Content-Type: text/plain\nfirst part\nContent-Type: text/html\nno end\n", true},
	} {
		got := Extract([]byte(c.msg), Index())
		if got.Body != c.body || got.Complete != c.complete {
			t.Errorf("%s: body %q complete %v, want %q %v", c.name, got.Body, got.Complete, c.body, c.complete)
		}
	}
}

// TestLimitsHold: a huge message gives at most the limits, says it was
// cut, and is cut on a character boundary.
func TestLimitsHold(t *testing.T) {
	big := "Subject: big\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.Repeat("è", 3<<20)
	lim := Limits{Header: 10, Body: 1001}
	got := Extract([]byte(big), lim)
	if got.Complete || len(got.Header) > lim.Header || len(got.Body) > lim.Body || !utf8.ValidString(got.Body) {
		t.Fatalf("cut wrongly: %v", got)
	}
	if got := Extract([]byte(big), Full()); !got.Complete || len(got.Body) < 6<<20 {
		t.Fatalf("full extraction: %v", got)
	}
	html := "Content-Type: text/html\r\n\r\n" + strings.Repeat("<span class=\"a\"></span>", 1<<16) + "<p>late text</p>"
	if got := Extract([]byte(html), Limits{Header: 100, Body: 100}); got.Complete || strings.Contains(got.Body, "late") {
		t.Fatalf("markup beyond the limit was read: %v", got)
	}
	if got := Extract([]byte(nested(300)), Index()); strings.Contains(got.Body, "deep") {
		t.Fatalf("300 nested multiparts were walked: %v", got)
	}
	if got := Extract([]byte(nested(10)), Index()); !got.Complete || !strings.Contains(got.Body, "deep") {
		t.Fatalf("10 nested multiparts: %v %q", got, got.Body)
	}
}

func nested(depth int) string {
	var b strings.Builder
	for i := 0; i < depth; i++ {
		b.WriteString("Content-Type: multipart/mixed; boundary=\"b" + strconv.Itoa(i) + "\"\r\n\r\n--b" + strconv.Itoa(i) + "\r\n")
	}
	b.WriteString("Content-Type: text/plain\r\n\r\ndeep\r\n")
	return b.String()
}

var fuzzSeeds = []string{
	multi,
	"Subject: hi\r\n\r\njust text\r\n",
	"",
	" leading space\nno colon here\n\nthe \x00body\xff\n",
	"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--XX\r\nContent-Type: text/html\r\n\r\n<b>no end",
	"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: text/html; charset=shift_jis\r\n\r\n<p>\x82\xa0</p>",
	"Subject: =?iso-8859-1?b?Y2Fm6Q==?= =?bogus?Q?x?=\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=80 =E9t=E9=\r\n",
	nested(25),
}

// FuzzExtract: any bytes give valid UTF-8 within the limits, the same
// every time, without panicking.
func FuzzExtract(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		lim := Limits{Header: 512, Body: 2048}
		a := Extract(msg, lim)
		if len(a.Header) > lim.Header || len(a.Body) > lim.Body {
			t.Fatalf("over the limits: %v", a)
		}
		for _, s := range []string{a.Header, a.Body} {
			if !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\r") {
				t.Fatalf("not clean text: %q", s)
			}
		}
		if b := Extract(bytes.Clone(msg), lim); b != a {
			t.Fatalf("not deterministic: %v then %v", a, b)
		}
	})
}

// TestWriteFuzzCorpus writes the seeds to testdata/fuzz/FuzzExtract when
// MAILTEXT_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MAILTEXT_WRITE_CORPUS") != "1" {
		t.Skip("set MAILTEXT_WRITE_CORPUS=1 to regenerate testdata/fuzz/FuzzExtract")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzExtract")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
