package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
)

const (
	// maxLine is the longest command line accepted, CRLF included. RFC
	// 2449 allows 255 octets of arguments; we are lenient because AUTH
	// PLAIN initial responses from some clients are longer.
	maxLine = 1000
	// maxSASLLine bounds a SASL continuation line (base64 of
	// authzid, authcid and password).
	maxSASLLine = 4096
	// maxDiscard is how much of an overlong line we read and throw away
	// before deciding the client is abusive and closing.
	maxDiscard = 64 << 10
	// maxKeyword is the longest keyword the parser accepts; POP3 keywords
	// are 3 or 4 characters, longer ones are reported as unknown.
	maxKeyword = 16
)

var (
	errLineTooLong = errors.New("line too long")
	errLineAbuse   = errors.New("line far too long")
	errEmptyLine   = errors.New("empty command line")
	errBadChar     = errors.New("control character in command line")
	errBadKeyword  = errors.New("malformed command keyword")
)

// command is one parsed command line.
type command struct {
	// name is the keyword, upper-cased.
	name string
	// args are the space-separated arguments; runs of spaces are treated
	// as one separator.
	args []string
	// rest is the line after the keyword and one space, verbatim. PASS
	// uses it, since a password may contain spaces (RFC 1939, section 7).
	rest string
}

// parseCommand parses a command line without its line terminator. It
// accepts any run of ASCII letters as keyword; whether the keyword is known
// is decided by the caller.
func parseCommand(line []byte) (command, error) {
	if len(line) == 0 {
		return command{}, errEmptyLine
	}
	for _, b := range line {
		if b < 0x20 || b == 0x7f {
			return command{}, errBadChar
		}
	}
	kw := line
	var rest []byte
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		kw, rest = line[:i], line[i+1:]
	}
	if len(kw) == 0 || len(kw) > maxKeyword {
		return command{}, errBadKeyword
	}
	for _, b := range kw {
		if (b < 'A' || b > 'Z') && (b < 'a' || b > 'z') {
			return command{}, errBadKeyword
		}
	}
	cmd := command{name: strings.ToUpper(string(kw)), rest: string(rest)}
	for a := range strings.SplitSeq(cmd.rest, " ") {
		if a != "" {
			cmd.args = append(cmd.args, a)
		}
	}
	return cmd, nil
}

// parseMsgNum parses a message number: decimal digits only, at least 1.
func parseMsgNum(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// parseLineCount parses TOP's line count: a non-negative decimal number.
// Values too large for an int mean "all lines".
func parseLineCount(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		// Only range errors are possible here.
		return math.MaxInt, true
	}
	return n, true
}

// readLine reads one line of at most max octets (terminator included) and
// returns it without its CRLF or LF. A longer line is read and discarded up
// to its end and reported as errLineTooLong, so the caller can answer and
// keep going; past maxDiscard octets it gives up with errLineAbuse.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	total := 0
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		total += len(chunk)
		if !tooLong {
			if len(line)+len(chunk) > max {
				tooLong = true
				line = nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if total > maxDiscard {
				return nil, errLineAbuse
			}
			continue
		}
		return nil, err
	}
	if tooLong {
		return nil, errLineTooLong
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}
