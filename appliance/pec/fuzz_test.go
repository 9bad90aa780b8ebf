package pec

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzOriginal feeds arbitrary messages to what the access and reception
// points read from a user's message: the header parser and the Message-ID
// replacement. Neither may panic; the replacement keeps the body byte for
// byte and leaves exactly one Message-ID field.
func FuzzOriginal(f *testing.F) {
	f.Add([]byte("From: a@a.test\r\nTo: b@b.test\r\nSubject: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"))
	f.Add([]byte("From: =?utf-8?q?Al=C3=AC?= <a@a.test>\nTo: b@b.test,\n c@c.test\nCc: \nBcc: d@d.test\nX-TipoRicevuta: BREVE\n\nbody"))
	f.Add([]byte("Message-ID: <1@x>\r\nmessage-id: <2@x>\r\n X-cont\r\n\r\n"))
	f.Add([]byte("no header at all"))
	f.Add([]byte("\r\n\r\nbody only"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		o := readOriginal(msg)
		_ = o.inCc("b@b.test")
		out := withMessageID(msg, "id@x", o.msgID)
		n := 0
		for _, fl := range rawFields(out) {
			if strings.EqualFold(fl.name, "Message-ID") {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d Message-ID fields in %q", n, out)
		}
		var hdrLen int
		for _, fl := range rawFields(msg) {
			hdrLen += len(fl.raw)
		}
		if !bytes.HasSuffix(out, msg[hdrLen:]) {
			t.Fatalf("the body changed: %q → %q", msg, out)
		}
	})
}
