package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// futureEntry encodes what a newer Sigillo could write: op with a JSON
// body in format version.
func futureEntry(version uint64, op, body string) []byte {
	b := []byte{versionMark}
	b = binary.AppendUvarint(b, version)
	b = binary.AppendUvarint(b, uint64(len(op)))
	b = append(b, op...)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// The raft logs of servers from before command versions hold unversioned
// entries (testdata/unversioned, written by that encoder): they still
// decode, and today's encoding of the same command is the same bytes
// behind the version mark.
func TestEntriesWrittenBeforeCommandVersionsStillDecode(t *testing.T) {
	want := map[string]Command{
		"add-domain.entry": &AddDomain{Name: "example.test"},
		"deliver.entry": &Deliver{Targets: []Target{{MailboxID: 3, Folder: "Sent", Flags: []string{`\Seen`}}},
			InternalDate: 1767225600, Data: []byte("Subject: hi\r\n\r\nbody\r\n")},
		"store-flags.entry": &StoreFlags{FolderID: 4, UIDs: []uint32{1, 2}, Mode: FlagsAdd, Flags: []string{`\Seen`}},
	}
	files, _ := filepath.Glob("testdata/unversioned/*.entry")
	if len(files) != len(want) {
		t.Fatalf("fixtures %v", files)
	}
	for _, f := range files {
		old, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if old[0] >= 0x80 {
			t.Fatalf("%s begins with %#x", f, old[0])
		}
		c, err := Decode(old)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		now, err := Encode(want[filepath.Base(f)])
		if err != nil {
			t.Fatal(err)
		}
		again, err := Encode(c)
		if err != nil || !bytes.Equal(again, now) {
			t.Fatalf("%s decoded to %+v, which encodes differently (%v)", f, c, err)
		}
		if !bytes.Equal(now, append([]byte{versionMark, CommandVersion}, old...)) {
			t.Fatalf("%s: today's encoding % x is not the old one % x behind the version", f, now[:8], old[:6])
		}
	}
	// Every op is short enough that an unversioned entry cannot begin
	// with the mark: its first byte is uvarint(len op).
	for _, op := range []string{"add-domain", "virus-store-purge", "pec-log-append"} {
		if len(op) >= 0x7f || newCommand(op) == nil {
			t.Fatalf("op %q", op)
		}
	}
}

func TestDecodeTellsNewerCommandsFromDamagedOnes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry []byte
		op    string
	}{
		{"a new op", futureEntry(CommandVersion, "from-the-future", `{}`), "from-the-future"},
		{"a known op in a newer format", futureEntry(CommandVersion+1, "add-domain", `{"name":"a.test","colour":"red"}`), "add-domain"},
		{"a newer format this binary cannot even parse", futureEntry(CommandVersion+1, "", "")[:3], ""},
		{"an unversioned new op", []byte("\x0ffrom-the-future\x02{}"), "from-the-future"},
	} {
		_, err := Decode(tc.entry)
		var u *UnknownCommandError
		if !errors.As(err, &u) || u.Op != tc.op || !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("%s: %v, want an unknown command %q", tc.name, err, tc.op)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	for _, bad := range [][]byte{{versionMark}, {versionMark, 0, 1, 'x'}, futureEntry(1, "add-domain", `{"name":`),
		futureEntry(1, "add-domain", `{}`)[:5]} {
		if _, err := Decode(bad); err == nil || errors.Is(err, ErrUnknownCommand) {
			t.Errorf("damaged % x: %v, want a plain error", bad, err)
		}
	}
}

// A command from a newer Sigillo in the middle of a batch: what comes
// before it is applied, it and what follows are not, however often the
// batch comes again; a binary that knows it then applies from there.
func TestAStoreStopsAtACommandItDoesNotKnowAndLosesNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	enc := func(c Command) []byte {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := []Entry{
		{Index: 1, Data: enc(&AddDomain{Name: "before.test"})},
		{Index: 2, Data: futureEntry(CommandVersion, "from-the-future", `{"name":"future.test"}`)},
		{Index: 3, Data: enc(&AddDomain{Name: "after.test"})},
	}
	for i := range 2 {
		res, err := s.Apply(ctx, batch)
		var u *UnknownCommandError
		if !errors.As(err, &u) || u.Index != 2 || u.Op != "from-the-future" {
			t.Fatalf("apply: %v", err)
		}
		// The second time, the entry before is skipped: applied already.
		if i == 0 && (res[0].Err != nil || res[0].Value == nil) {
			t.Fatalf("the entry before was not applied: %+v", res[0])
		}
		if idx, _ := s.AppliedIndex(ctx); idx != 1 {
			t.Fatalf("applied index %d, want 1", idx)
		}
		if ds, _ := s.Domains(ctx); len(ds) != 1 {
			t.Fatalf("domains %+v", ds)
		}
	}
	// The upgraded binary knows the command (here: a domain to add).
	batch[1].Data = enc(&AddDomain{Name: "future.test"})
	if res, err := s.Apply(ctx, batch); err != nil || res[1].Err != nil || res[2].Err != nil {
		t.Fatalf("after the upgrade: %+v, %v", res, err)
	}
	if ds, _ := s.Domains(ctx); len(ds) != 3 {
		t.Fatalf("domains %+v", ds)
	}
}

// A command with a field this version does not know comes from a newer
// binary: it is not applied without the field (which would apply it
// wrong) but stops the store like an unknown command.
func TestACommandWithAFieldFromANewerVersionIsUnknown(t *testing.T) {
	body := []byte(`{"name":"example.test","from_the_future":1}`)
	op := (&AddDomain{}).Op()
	data := []byte{versionMark}
	data = binary.AppendUvarint(data, CommandVersion)
	data = binary.AppendUvarint(data, uint64(len(op)))
	data = append(data, op...)
	data = binary.AppendUvarint(data, uint64(len(body)))
	data = append(data, body...)
	_, err := Decode(data)
	var unknown *UnknownCommandError
	if !errors.As(err, &unknown) || !strings.Contains(unknown.Op, "from_the_future") {
		t.Fatalf("decode with a newer field: %v, want an UnknownCommandError naming the field", err)
	}
	t.Logf("refused: %v", err)
	// The same without the field is an ordinary command.
	body = []byte(`{"name":"example.test"}`)
	data = data[:len(data)-len(`{"name":"example.test","from_the_future":1}`)-1]
	data = binary.AppendUvarint(data, uint64(len(body)))
	data = append(data, body...)
	if c, err := Decode(data); err != nil || c.(*AddDomain).Name != "example.test" {
		t.Fatalf("decode: %v, %v", c, err)
	}
}
