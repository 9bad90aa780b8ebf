package storage

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

type failingSource struct{ size int64 }

func (f failingSource) Size() int64 { return f.size }
func (f failingSource) ReadAt(p []byte, off int64) (int, error) {
	return 0, errors.New("disk read error")
}

func TestADeliverFromASpoolFileIsEncodedInOneExactBuffer(t *testing.T) {
	content := strings.Repeat("line of a spooled message\r\n", 10000)
	trace := []byte("Received: from x by y; Mon, 1 Jan 2026 00:00:00 +0000\r\n")
	in := &Deliver{Targets: []Target{{MailboxID: 3}}, InternalDate: 5, Data: trace,
		Tail: io.NewSectionReader(strings.NewReader(content), 0, int64(len(content)))}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	if cap(b) != len(b) {
		t.Errorf("encoded in %d bytes of a %d-byte buffer, want exactly sized", len(b), cap(b))
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	d := out.(*Deliver)
	if want := string(trace) + content; string(d.Data) != want || d.Tail != nil {
		t.Fatalf("decoded %d bytes (Tail %v), want %d", len(d.Data), d.Tail, len(want))
	}
	// The same message in memory encodes to the same entry.
	same, err := Encode(&Deliver{Targets: in.Targets, InternalDate: 5, Data: []byte(string(trace) + content)})
	if err != nil || !bytes.Equal(same, b) {
		t.Fatalf("in-memory and spooled encodings differ (%v)", err)
	}

	if _, err := Encode(&Deliver{Targets: in.Targets, Tail: failingSource{size: 10}}); err == nil {
		t.Fatal("a Tail that cannot be read was encoded")
	}
	if _, err := Encode(&Deliver{Targets: in.Targets, Tail: io.NewSectionReader(strings.NewReader("short"), 0, 10)}); err == nil {
		t.Fatal("a Tail shorter than its Size was encoded")
	}
	if _, err := Encode(&Batch{Deliveries: []*Deliver{{Targets: in.Targets, Tail: in.Tail}}}); err == nil {
		t.Fatal("a batch with a spooled delivery was encoded (its sizes would be wrong)")
	}
}
