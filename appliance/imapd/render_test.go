package imapd

import (
	"bytes"
	"math/rand"
	"testing"

	"github.com/emersion/go-imap/v2"

	"sigillo/storage/mailtext"
)

var renderSeeds = [][]byte{
	[]byte("From: a@b.c\r\nSubject: plain\r\n\r\nhello\r\n"),
	[]byte("Subject: mp\r\nContent-Type: multipart/mixed; boundary=\"A\"\r\n\r\npre\r\n--A\r\nContent-Type: text/plain\r\n\r\none\r\n--A\r\n" +
		"Content-Type: multipart/alternative; boundary=B\r\n\r\n--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--B--\r\n" +
		"--A\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n--C\r\n\r\ninner text\r\n--C--\r\n--A--\r\n"),
	[]byte("Content-Type: multipart/digest; boundary=D\r\n\r\n--D\r\n\r\nSubject: digest part\r\n\r\nx\r\n--D--\r\n"),
	[]byte("Content-Type: multipart/mixed; boundary=E\r\n\r\n--E\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Disposition: attachment; filename=\"a=\r\n b\"\r\n\r\n=ZZ=\r\n--E"),
}

var renderNoise = [][]byte{
	[]byte("\r\n"), []byte("\n"), []byte("--"), []byte("--A"), []byte("--A--"), []byte("\x00"), []byte("\xff\xfe"),
	[]byte("Content-Type: multipart/mixed; boundary="), []byte("Content-Type: message/rfc822\r\n\r\n"),
	[]byte(";;;=\"\""), []byte(": "), []byte(" "), []byte("=?utf-8?b?===?="),
}

func mutate(rng *rand.Rand, b []byte) []byte {
	b = append([]byte(nil), b...)
	for n := rng.Intn(4) + 1; n > 0; n-- {
		switch rng.Intn(4) {
		case 0: // truncate
			if len(b) > 0 {
				b = b[:rng.Intn(len(b))]
			}
		case 1: // cut a range
			if len(b) > 1 {
				i := rng.Intn(len(b))
				j := i + rng.Intn(len(b)-i)
				b = append(b[:i], b[j:]...)
			}
		case 2: // insert noise
			i := rng.Intn(len(b) + 1)
			noise := renderNoise[rng.Intn(len(renderNoise))]
			b = append(b[:i], append(append([]byte(nil), noise...), b[i:]...)...)
		case 3: // duplicate a range
			if len(b) > 1 {
				i := rng.Intn(len(b))
				j := i + rng.Intn(len(b)-i)
				k := rng.Intn(len(b) + 1)
				seg := append([]byte(nil), b[i:j]...)
				b = append(b[:k], append(seg, b[k:]...)...)
			}
		}
	}
	return b
}

// checkStructure asserts what imapserver's writer relies on.
func checkStructure(t *testing.T, bs imap.BodyStructure, msg []byte) {
	t.Helper()
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		if bs.Type == "" || bs.Subtype == "" || bs.Extended == nil {
			t.Fatalf("incomplete part %+v for %q", bs, msg)
		}
		if m := bs.MessageRFC822; m != nil {
			if m.Envelope == nil || m.BodyStructure == nil {
				t.Fatalf("incomplete message/rfc822 for %q", msg)
			}
			checkStructure(t, m.BodyStructure, msg)
		}
	case *imap.BodyStructureMultiPart:
		if len(bs.Children) == 0 || bs.Extended == nil || bs.Subtype == "" {
			t.Fatalf("incomplete multipart %+v for %q", bs, msg)
		}
		for _, c := range bs.Children {
			checkStructure(t, c, msg)
		}
	default:
		t.Fatalf("structure %T for %q", bs, msg)
	}
}

func renderAll(t *testing.T, msg []byte) {
	checkStructure(t, bodyStructure(msg), msg)
	if envelope(msg) == nil {
		t.Fatalf("nil envelope for %q", msg)
	}
	if got := bodySection(msg, &imap.FetchItemBodySection{}); !bytes.Equal(got, msg) {
		t.Fatalf("BODY[] is not the message")
	}
	h, txt := splitMessage(msg)
	if !bytes.Equal(append(append([]byte(nil), h...), txt...), msg) {
		t.Fatalf("header and text do not make the message")
	}
	for _, item := range []*imap.FetchItemBodySection{
		{Specifier: imap.PartSpecifierHeader}, {Specifier: imap.PartSpecifierText},
		{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "Content-Type"}},
		{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject"}},
		{Part: []int{1}}, {Part: []int{2}}, {Part: []int{1, 1}}, {Part: []int{2, 1}}, {Part: []int{3, 1, 1}},
		{Part: []int{1}, Specifier: imap.PartSpecifierMIME}, {Part: []int{3}, Specifier: imap.PartSpecifierHeader},
		{Part: []int{3}, Specifier: imap.PartSpecifierText}, {Partial: &imap.SectionPartial{Offset: 3, Size: 1 << 40}},
		{Partial: &imap.SectionPartial{Offset: 1 << 40, Size: 4}},
	} {
		bodySection(msg, item)
	}
	binarySection(msg, &imap.FetchItemBinarySection{Part: []int{1}})
	binarySectionSize(msg, &imap.FetchItemBinarySectionSize{Part: []int{2, 1}})
	mailtext.Extract(msg, mailtext.Full())
}

func TestRenderingSurvivesMalformedMIME(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, seed := range renderSeeds {
		renderAll(t, seed)
	}
	for i := 0; i < 3000; i++ {
		renderAll(t, mutate(rng, renderSeeds[rng.Intn(len(renderSeeds))]))
	}
	renderAll(t, nested(500))
	renderAll(t, nil)
}

func FuzzRendering(f *testing.F) {
	for _, s := range renderSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg []byte) { renderAll(t, msg) })
}

func TestSplitMessage(t *testing.T) {
	for _, c := range []struct{ in, header, text string }{
		{"A: b\r\n\r\nbody", "A: b\r\n\r\n", "body"},
		{"A: b\n\nbody\n", "A: b\n\n", "body\n"},
		{"\r\nbody", "\r\n", "body"},
		{"A: b", "A: b", ""},
		{"A: b\r\nC: d\r\n", "A: b\r\nC: d\r\n", ""},
		{"", "", ""},
	} {
		h, txt := splitMessage([]byte(c.in))
		if string(h) != c.header || string(txt) != c.text {
			t.Errorf("splitMessage(%q) = %q, %q", c.in, h, txt)
		}
	}
}
