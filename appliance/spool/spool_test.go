package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func receive(t *testing.T, d *Dir, msg string) *File {
	t.Helper()
	f, err := d.Receive(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestAReceivedMessageIsOnDiskUntilClosed: it reads back whole, by its
// header and by its hash, and Close removes it.
func TestAReceivedMessageIsOnDiskUntilClosed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: hello\r\nFrom: a@example.org\r\n\r\n" + strings.Repeat("body line\r\n", 20000)
	f := receive(t, d, msg)
	if f.Size() != int64(len(msg)) {
		t.Fatalf("Size = %d, want %d", f.Size(), len(msg))
	}
	if names := files(t, dir); len(names) != 1 || !strings.HasPrefix(names[0], "msg-") {
		t.Fatalf("spool directory holds %v, want one msg- file", names)
	}
	got, err := io.ReadAll(f.Reader())
	if err != nil || string(got) != msg {
		t.Fatalf("Reader gave %d bytes (%v), want the message", len(got), err)
	}
	all, err := f.ReadAll([]byte("Received: x\r\n"))
	if want := "Received: x\r\n" + msg; err != nil || string(all) != want || cap(all) != len(want) {
		t.Fatalf("ReadAll: %d bytes, cap %d (%v)", len(all), cap(all), err)
	}
	if f.SHA256() != sha256.Sum256([]byte(msg)) {
		t.Fatalf("SHA256 is not the message's hash")
	}
	h, err := f.Header()
	if err != nil || string(h) != "Subject: hello\r\nFrom: a@example.org\r\n\r\n" {
		t.Fatalf("Header = %q, %v", h, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if names := files(t, dir); len(names) != 0 {
		t.Fatalf("after Close the directory holds %v", names)
	}
}

func TestOpenRemovesWhatACrashLeftAndNothingElse(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"msg-123", "msg-456", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if names := files(t, dir); len(names) != 1 || names[0] != "keep.txt" {
		t.Fatalf("after Open the directory holds %v", names)
	}
	made := filepath.Join(dir, "sub", "spool")
	if _, err := Open(made); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(made); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("made %s: %v %v, want mode 0700", made, st.Mode(), err)
	}
}

type failingReader struct{ n int }

var errClient = errors.New("client went away")

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errClient
	}
	n := min(len(p), r.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	r.n -= n
	return n, nil
}

func TestAReaderErrorRemovesTheFileAndIsReturnedAsItIs(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := d.Receive(&failingReader{n: 200 << 10})
	if f != nil || !errors.Is(err, errClient) || errors.Is(err, ErrWrite) {
		t.Fatalf("Receive from a failing client: %v, %v", f, err)
	}
	if names := files(t, dir); len(names) != 0 {
		t.Fatalf("the directory holds %v after a failed receive", names)
	}
}

func TestADiskErrorWrapsErrWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Receive(strings.NewReader("Subject: x\r\n\r\nbody\r\n")); !errors.Is(err, ErrWrite) {
		t.Fatalf("Receive into a vanished directory: %v, want ErrWrite", err)
	}
	if _, err := os.Stat("/dev/full"); err == nil {
		f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := (&writerOnly{f: f}).Write([]byte("x")); err == nil {
			t.Fatal("writing to /dev/full succeeded")
		}
	}
}

func TestHeaderSection(t *testing.T) {
	long := strings.Repeat("X-Long: "+strings.Repeat("y", 70)+"\r\n", MaxHeaderBytes/80+10)
	for _, c := range []struct{ name, msg, want string }{
		{"CRLF", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\n"},
		{"LF", "A: 1\nB: 2\n\nbody\n", "A: 1\nB: 2\n\n"},
		{"no body", "A: 1\r\nB: 2\r\n", "A: 1\r\nB: 2\r\n"},
		{"empty first line", "\r\nbody\r\n", "\r\n"},
		{"empty message", "", ""},
		{"blank line past the limit", long + "\r\nbody\r\n", long[:strings.LastIndex(long[:MaxHeaderBytes], "\n")+1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			h, err := receive(t, d, c.msg).Header()
			if err != nil {
				t.Fatal(err)
			}
			if string(h) != c.want {
				t.Fatalf("Header = %q (%d bytes), want %d bytes", h, len(h), len(c.want))
			}
			if len(h) > MaxHeaderBytes {
				t.Fatalf("Header is %d bytes, over MaxHeaderBytes", len(h))
			}
		})
	}
}

// FuzzHeaderSection checks that the header section is always a prefix of
// the message, ends with a line end or is the whole message, and holds at
// most one empty line (its last).
func FuzzHeaderSection(f *testing.F) {
	for _, s := range []string{"A: 1\r\n\r\nbody", "A: 1\n\nb", "\n", "\r\n\r\n", "no end", "A: 1\r\nB", ""} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, msg []byte, more bool) {
		h := headerSection(msg, more)
		if !bytes.HasPrefix(msg, h) {
			t.Fatalf("%q is not a prefix of %q", h, msg)
		}
		if len(h) < len(msg) && (len(h) == 0 || h[len(h)-1] != '\n') && !(more && bytes.IndexByte(msg, '\n') < 0) {
			t.Fatalf("%q is cut in the middle of a line of %q", h, msg)
		}
		for i := 0; i < len(h); {
			j := bytes.IndexByte(h[i:], '\n')
			if j < 0 {
				break
			}
			empty := j == 0 || (j == 1 && h[i] == '\r')
			i += j + 1
			if empty && i != len(h) {
				t.Fatalf("%q holds an empty line before its end", h)
			}
		}
	})
}

func TestCheckStopsAMessageThatWouldFillTheDisk(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("disk nearly full")
	calls, allowed := 0, 2
	d.Check = func() error {
		calls++
		if calls > allowed {
			return errFull
		}
		return nil
	}
	f, err := d.Receive(&failingReader{n: 10 * CheckEvery})
	if f != nil || !errors.Is(err, ErrWrite) || !errors.Is(err, errFull) {
		t.Fatalf("Receive past the check: %v, %v; want ErrWrite wrapping the check's error", f, err)
	}
	if names := files(t, d.Path()); len(names) != 0 {
		t.Fatalf("the directory holds %v after a refused message", names)
	}
	calls, allowed = 0, 100
	small := receive(t, d, "Subject: small\r\n\r\nbody\r\n")
	if small.Size() == 0 || calls != 0 {
		t.Fatalf("a small message: %d bytes, %d checks", small.Size(), calls)
	}
}
