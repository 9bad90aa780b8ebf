package archive_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/backup/archive"
)

func sampleEntries() []archive.Entry {
	return []archive.Entry{
		{Index: 48214, Term: 3, Type: 0, AppendedAt: time.Date(2026, 12, 2, 21, 23, 1, 123456789, time.UTC), Data: []byte(`{"op":"deliver"}`)},
		{Index: 48215, Term: 3, Type: 2, Data: nil}, // no AppendedAt, no data (a no-op entry)
		{Index: 48216, Term: 4, Type: 1, AppendedAt: time.Unix(0, -5).UTC(), Data: bytes.Repeat([]byte{0xff}, 70000)},
		{Index: 1<<63 + 5, Term: 1<<64 - 1, Type: 255, AppendedAt: time.Unix(1<<32, 1).UTC(), Data: []byte{0}},
	}
}

func encodeEntries(t testing.TB, es []archive.Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := archive.NewEntryWriter(&buf)
	for _, e := range es {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decodeEntries(b []byte) ([]archive.Entry, error) {
	r := archive.NewEntryReader(bytes.NewReader(b))
	var out []archive.Entry
	for {
		e, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func sameEntry(a, b archive.Entry) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && a.AppendedAt.Equal(b.AppendedAt) &&
		a.AppendedAt.IsZero() == b.AppendedAt.IsZero() && bytes.Equal(a.Data, b.Data)
}

// Raft entries written to the "entries" part come back the same, in order.
func TestEntriesRoundTrip(t *testing.T) {
	want := sampleEntries()
	b := encodeEntries(t, want)
	if !bytes.HasPrefix(b, []byte("SGLOG\x01")) {
		t.Errorf("header %q", b[:6])
	}
	got, err := decodeEntries(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries back, wrote %d", len(got), len(want))
	}
	for i := range want {
		if !sameEntry(got[i], want[i]) {
			t.Errorf("entry %d: got %+v, wrote %+v", i, got[i], want[i])
		}
	}
	// An empty log part still has its header, and reads as no entries.
	empty := encodeEntries(t, nil)
	if got, err := decodeEntries(empty); err != nil || len(got) != 0 || string(empty) != "SGLOG\x01" {
		t.Errorf("empty: %q → %v, %v", empty, got, err)
	}
}

// Damaged or foreign streams give errors that say what and where, never a crash or a huge allocation.
func TestEntriesBadInput(t *testing.T) {
	good := encodeEntries(t, sampleEntries())
	for _, tc := range []struct {
		name, input, says string
	}{
		{"empty", "", "header: unexpected EOF"},
		{"foreign", "PK\x03\x04zipfile", "not a Sigillo log"},
		{"future version", "SGLOG\x02", "version 2"},
		{"cut in a record", string(good[:len(good)-1]), "record 4 (after index 48216): data: unexpected EOF"},
		{"cut in the first", string(good[:9]), "record 1: "},
		{"huge length", "SGLOG\x01\x01\x01\x00\x00\xff\xff\xff\xff\x0f", "more than 1073741824"},
		{"lying length", "SGLOG\x01\x01\x01\x00\x00\x80\x80\x80\x80\x01abc", "data: unexpected EOF"},
		{"overlong varint", "SGLOG\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "record 1: index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeEntries([]byte(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v, want it to say %q", err, tc.says)
			}
		})
	}
	_, err := decodeEntries(good[:len(good)-1])
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v is not io.ErrUnexpectedEOF", err)
	}
	var buf bytes.Buffer
	if err := archive.NewEntryWriter(&buf).Write(archive.Entry{AppendedAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Error("a time past 2262 was written")
	}
}

// FuzzEntryReader: any input either fails cleanly or decodes to entries that encode back to a
// stream decoding to the same entries.
func FuzzEntryReader(f *testing.F) {
	f.Add(encodeEntries(f, sampleEntries()[:2]))
	f.Add(encodeEntries(f, nil))
	f.Add([]byte("SGLOG\x01\x01\x01\x00\x00\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeEntries(b)
		if err != nil {
			return
		}
		again, err := decodeEntries(encodeEntries(t, got))
		if err != nil {
			t.Fatalf("re-encoded entries do not decode: %v", err)
		}
		if len(again) != len(got) {
			t.Fatalf("%d entries, %d after a round trip", len(got), len(again))
		}
		for i := range got {
			if !sameEntry(got[i], again[i]) {
				t.Fatalf("entry %d: %+v became %+v", i, got[i], again[i])
			}
		}
	})
}
