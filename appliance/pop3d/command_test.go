package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		name    string
		args    []string
		rest    string
		wantErr error
	}{
		{line: "STAT", name: "STAT"},
		{line: "list 2", name: "LIST", args: []string{"2"}, rest: "2"},
		{line: "Top 1  10", name: "TOP", args: []string{"1", "10"}, rest: "1  10"},
		{line: "PASS with spaces  in it ", name: "PASS", args: []string{"with", "spaces", "in", "it"}, rest: "with spaces  in it "},
		{line: "QUIT ", name: "QUIT", rest: ""},
		{line: "", wantErr: errEmptyLine},
		{line: " STAT", wantErr: errBadKeyword},
		{line: "ST4T", wantErr: errBadKeyword},
		{line: "STAT\x00", wantErr: errBadChar},
		{line: "USER a\tb", wantErr: errBadChar},
		{line: "PASS caf\xc3\xa9", name: "PASS", args: []string{"caf\xc3\xa9"}, rest: "caf\xc3\xa9"},
		{line: strings.Repeat("A", maxKeyword+1), wantErr: errBadKeyword},
	}
	for _, tt := range tests {
		cmd, err := parseCommand([]byte(tt.line))
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("parseCommand(%q) error = %v, want %v", tt.line, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseCommand(%q): %v", tt.line, err)
			continue
		}
		if cmd.name != tt.name || !slices.Equal(cmd.args, tt.args) || cmd.rest != tt.rest {
			t.Errorf("parseCommand(%q) = %q %q %q, want %q %q %q", tt.line, cmd.name, cmd.args, cmd.rest, tt.name, tt.args, tt.rest)
		}
	}
}

func TestParseNumbers(t *testing.T) {
	for s, want := range map[string]int{"1": 1, "42": 42, "007": 7, "999999999": 999999999} {
		if n, ok := parseMsgNum(s); !ok || n != want {
			t.Errorf("parseMsgNum(%q) = %d, %v", s, n, ok)
		}
	}
	for _, s := range []string{"", "0", "-1", "+1", "1x", "1.0", "1234567890", " 1"} {
		if n, ok := parseMsgNum(s); ok {
			t.Errorf("parseMsgNum(%q) = %d, want failure", s, n)
		}
	}
	if n, ok := parseLineCount("0"); !ok || n != 0 {
		t.Errorf("parseLineCount(0) = %d, %v", n, ok)
	}
	if n, ok := parseLineCount("123456789012345678901234567890"); !ok || n != math.MaxInt {
		t.Errorf("parseLineCount(huge) = %d, %v", n, ok)
	}
	for _, s := range []string{"", "-1", "+1", "x"} {
		if _, ok := parseLineCount(s); ok {
			t.Errorf("parseLineCount(%q) accepted", s)
		}
	}
}

func TestReadLine(t *testing.T) {
	in := "STAT\r\nLIST\n" + strings.Repeat("x", 5000) + "\r\nNOOP\r\n" + strings.Repeat("y", 100<<10)
	br := bufio.NewReaderSize(strings.NewReader(in), 4096)
	want := []struct {
		line string
		err  error
	}{{"STAT", nil}, {"LIST", nil}, {"", errLineTooLong}, {"NOOP", nil}, {"", errLineAbuse}}
	for i, w := range want {
		line, err := readLine(br, maxLine)
		if string(line) != w.line || !errors.Is(err, w.err) {
			t.Fatalf("line %d: got %q, %v; want %q, %v", i, line, err, w.line, w.err)
		}
	}
	// A partial line at EOF is not a command.
	br = bufio.NewReader(strings.NewReader("QUI"))
	if _, err := readLine(br, maxLine); !errors.Is(err, io.EOF) {
		t.Fatalf("partial line: err = %v, want EOF", err)
	}
}

func TestWriteMessage(t *testing.T) {
	long := strings.Repeat("z", 70<<10)
	tests := []struct {
		name  string
		in    string
		lines int
		want  string
	}{
		{"empty", "", -1, ""},
		{"crlf", "A: b\r\n\r\nbody\r\n", -1, "A: b\r\n\r\nbody\r\n"},
		{"bare lf", "A: b\n\nbody\n", -1, "A: b\r\n\r\nbody\r\n"},
		{"no final newline", "A: b\n\nbody", -1, "A: b\r\n\r\nbody\r\n"},
		{"dots", ".\n..\n.x\nx.\n", -1, "..\r\n...\r\n..x\r\nx.\r\n"},
		{"lone CR kept", "a\rb\n", -1, "a\rb\r\n"},
		{"top 0", "A: b\nC: d\n\n1\n2\n", 0, "A: b\r\nC: d\r\n\r\n"},
		{"top 1", "A: b\n\n.1\n2\n", 1, "A: b\r\n\r\n..1\r\n"},
		{"top beyond end", "A: b\n\n1", 5, "A: b\r\n\r\n1\r\n"},
		{"top without body", "A: b\nC: d", 0, "A: b\r\nC: d\r\n"},
		{"long line", "." + long + "\n.end\n", -1, ".." + long + "\r\n..end\r\n"},
		{"long last line", long, -1, long + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				var buf bytes.Buffer
				w := bufio.NewWriter(&buf)
				if err := writeMessage(w, r, tt.lines); err != nil {
					t.Fatal(err)
				}
				w.Flush()
				if got := buf.String(); got != tt.want {
					t.Errorf("got %q, want %q", trunc(got), trunc(tt.want))
				}
			}
		})
	}
	w := bufio.NewWriter(io.Discard)
	err := writeMessage(w, iotest.ErrReader(errors.New("boom")), -1)
	if !errors.Is(err, errReadMessage) {
		t.Errorf("read error = %v, want errReadMessage", err)
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:40] + "..." + s[len(s)-40:]
	}
	return s
}

func TestUIDLString(t *testing.T) {
	if got := uidlString("abc-123"); got != "abc-123" {
		t.Errorf("valid uid changed to %q", got)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 71), "caf\xc3\xa9"} {
		got := uidlString(bad)
		if got == bad || len(got) > 70 || got != uidlString(bad) || strings.ContainsAny(got, " \r\n") {
			t.Errorf("uidlString(%q) = %q", bad, got)
		}
	}
}
