package pop3d

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigillo/appliance/authlimit"
)

// FuzzCommandLine feeds arbitrary client input to the command parser and
// to whole sessions (before login, over "TLS", and after a good login),
// checking the parser's invariants and that a session never panics and
// only ever writes CRLF-terminated lines.
func FuzzCommandLine(f *testing.F) {
	f.Add([]byte("STAT\r\n"))
	f.Add([]byte("USER alice\r\nPASS secret pw\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 2\r\nTOP 1 0\r\nDELE 1\r\nRSET\r\nDELE 3\r\nQUIT\r\n"))
	f.Add([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldCBwdw==\r\nRETR 1\r\n"))
	f.Add([]byte("AUTH PLAIN\r\nAGFsaWNlAHNlY3JldCBwdw==\r\nLIST 1\r\n"))
	f.Add([]byte("AUTH PLAIN\r\n*\r\nAUTH PLAIN =\r\nAUTH\r\n"))
	f.Add([]byte("CAPA\r\nSTLS\r\nSTLS extra\r\n"))
	f.Add([]byte("TOP 1 99999999999999999999999999\r\nTOP 0 1\r\nLIST -1\r\n"))
	f.Add([]byte("\x00\x01\xff\r\n\r\n \r\nA B C\n"))
	f.Add([]byte(strings.Repeat("x", 1500) + "\r\nNOOP\r\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			checkParse(t, bytes.TrimSuffix(line, []byte("\r")))
		}
		fuzzSession(t, data, false)
		fuzzSession(t, data, true)
		fuzzSession(t, append([]byte("USER alice\r\nPASS secret pw\r\n"), data...), true)
	})
}

func checkParse(t *testing.T, line []byte) {
	cmd, err := parseCommand(line)
	hasCTL := bytes.ContainsFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f })
	if err != nil {
		return
	}
	if hasCTL {
		t.Fatalf("parseCommand(%q) accepted control characters", line)
	}
	if cmd.name == "" || len(cmd.name) > maxKeyword || strings.ToUpper(cmd.name) != cmd.name {
		t.Fatalf("parseCommand(%q): bad keyword %q", line, cmd.name)
	}
	if !strings.EqualFold(cmd.name, string(line[:len(cmd.name)])) {
		t.Fatalf("parseCommand(%q): keyword %q is not the line's", line, cmd.name)
	}
	if len(line) > len(cmd.name) {
		if line[len(cmd.name)] != ' ' || cmd.rest != string(line[len(cmd.name)+1:]) {
			t.Fatalf("parseCommand(%q): rest %q", line, cmd.rest)
		}
	} else if cmd.rest != "" || len(cmd.args) != 0 {
		t.Fatalf("parseCommand(%q): arguments from nowhere", line)
	}
	for _, a := range cmd.args {
		if a == "" || strings.Contains(a, " ") {
			t.Fatalf("parseCommand(%q): bad argument %q", line, a)
		}
		if n, ok := parseMsgNum(a); ok && (n < 1 || strconv.Itoa(n) != strings.TrimLeft(a, "0")) {
			t.Fatalf("parseMsgNum(%q) = %d", a, n)
		}
	}
	if strings.Join(cmd.args, "") != strings.ReplaceAll(cmd.rest, " ", "") {
		t.Fatalf("parseCommand(%q): args %q do not cover rest %q", line, cmd.args, cmd.rest)
	}
}

// fuzzSession runs a whole session over an in-memory connection. A panic
// fails the fuzz target, since run is called without serve's recover.
func fuzzSession(t *testing.T, input []byte, tlsDone bool) {
	srv := &Server{
		Backend:  newMemBackend(),
		Limiter:  authlimit.New(nil, 0, 0, time.Minute),
		Hostname: "fuzz.example",
		Logger:   slog.New(slog.DiscardHandler),
	}
	conn := &fakeConn{in: bytes.NewReader(input)}
	s := newSession(srv, conn, false)
	s.tls = tlsDone
	s.run()
	s.close()
	out := conn.out.Bytes()
	if !bytes.HasPrefix(out, []byte("+OK ")) {
		t.Fatalf("session output does not start with a greeting: %q", out)
	}
	for i, b := range out {
		if b == '\n' && (i == 0 || out[i-1] != '\r') {
			t.Fatalf("bare LF in output at %d: %q", i, out)
		}
		if b == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
			t.Fatalf("bare CR in output at %d: %q", i, out)
		}
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		t.Fatalf("output does not end with CRLF: %q", out)
	}
}

// fakeConn is a net.Conn that reads a fixed input and records the output.
type fakeConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *fakeConn) Close() error                { return nil }
func (c *fakeConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 110} }
func (c *fakeConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
}
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
