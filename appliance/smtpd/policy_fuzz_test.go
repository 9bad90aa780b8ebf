package smtpd

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzHeaderPolicy: reading a message's header for the sender checks never
// panics; the header block is a prefix of the message; asking for From:
// alone gives the From: fields of the whole list; every address found in
// From: has an "@" and no line break; and the fields added on submission,
// put in front, make a header with exactly one Message-ID: and one Date:.
// The committed corpus is in testdata/fuzz/FuzzHeaderPolicy.
func FuzzHeaderPolicy(f *testing.F) {
	for _, s := range []string{
		"From: alice@example.test\r\nTo: bob@example.test\r\n\r\nbody\r\n",
		"From: \"A, B\" <a@x.test>, =?utf-8?q?C?= <c@y.test>\r\nSender: s@x.test\r\nDate: x\r\n\r\n",
		"From: Bob\r\n <bob@example.test>\nmessage-id: <1@x>\n\nbody",
		"From: <<bob@example.test\r\nFrom: group: a@x.test, b@y.test;\r\n\r\n",
		"From: =?bogus?Q?=ZZ?= <a@b.test>\r\nHeader without colon\r\n\tcontinued\r\n\r\n",
		"no header at all",
		"\r\n\r\nFrom: a@b.test",
		" leading continuation\r\nFrom:@@@\r\nFrom: a@@b.test (c@d.test)\r\n",
		"From: \"x@evil.test\" <a@b.test>\r\nDATE: now\r\nMessage-Id: <x@y>\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	sess := &session{srv: &Server{Hostname: "mx.example.test"}, mode: Submission}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h := headerBlock(msg)
		if !bytes.HasPrefix(msg, h) {
			t.Fatalf("header block %q is not a prefix of the message", h)
		}
		var froms []headerField
		for _, fl := range headerFields(h) {
			if fl.name == "" || strings.ContainsAny(fl.name, " \t:\r\n") {
				t.Fatalf("field name %q", fl.name)
			}
			if !strings.EqualFold(fl.name, "From") {
				continue
			}
			froms = append(froms, fl)
			for _, a := range fieldAddresses(fl.value) {
				if !strings.Contains(a, "@") || strings.ContainsAny(a, "\r\n") {
					t.Fatalf("address %q from %q", a, fl.value)
				}
			}
		}
		if only := headerFields(h, "from"); !reflect.DeepEqual(only, froms) {
			t.Fatalf("the From: fields alone %q, among all %q", only, froms)
		}
		added := sess.addedFields(h, "ABCDEFGHIJKLMNOP", now)
		var ids, dates int
		for _, fl := range headerFields(headerBlock(append(added, msg...))) {
			if strings.EqualFold(fl.name, "Message-ID") {
				ids++
			}
			if strings.EqualFold(fl.name, "Date") {
				dates++
			}
		}
		// A header that already has them keeps its own (even twice).
		if ids == 0 || dates == 0 {
			t.Fatalf("after adding %q: %d Message-ID, %d Date", added, ids, dates)
		}
		if bytes.Contains(added, []byte("Message-ID")) && ids != 1 || bytes.Contains(added, []byte("Date")) && dates != 1 {
			t.Fatalf("added %q to a header that had one: %d Message-ID, %d Date", added, ids, dates)
		}
	})
}

// headerBlock returns (as spool.File.Header does for a spooled message) the header of msg: up to and including the line
// ending of its last field (the empty line after it excluded); all of msg
// if there is no empty line.
func headerBlock(msg []byte) []byte {
	pos := 0
	for pos < len(msg) {
		end := bytes.IndexByte(msg[pos:], '\n')
		if end < 0 {
			return msg
		}
		line := msg[pos : pos+end+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return msg[:pos]
		}
		pos += len(line)
	}
	return msg
}
