package pop3d

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
)

// errReadMessage marks errors reading the message, as opposed to writing
// it to the client.
var errReadMessage = errors.New("read message")

// writeMessage copies a message from r to w as the body of a multi-line
// response: every line ends in CRLF (a bare LF becomes CRLF), a line
// starting with "." gets another "." in front, and a final line without a
// terminator gets one. The terminating ".\r\n" is left to the caller.
//
// bodyLines limits the body: all header lines, the empty line after them,
// and then at most bodyLines lines of body are written (TOP). A negative
// bodyLines means the whole message (RETR).
func writeMessage(w *bufio.Writer, r io.Reader, bodyLines int) error {
	if bodyLines < 0 {
		bodyLines = math.MaxInt
	}
	br := bufio.NewReaderSize(r, 32<<10)
	inBody := false
	sent := 0
	for !inBody || sent < bodyLines {
		// Read one line in chunks; only its first chunk can need a dot.
		first, empty := true, false
		for {
			chunk, err := br.ReadSlice('\n')
			eof := errors.Is(err, io.EOF)
			if err != nil && !eof && !errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("%w: %w", errReadMessage, err)
			}
			complete := err == nil
			content := chunk
			if complete {
				content = content[:len(content)-1]
				if n := len(content); n > 0 && content[n-1] == '\r' {
					content = content[:n-1]
				}
			}
			if first && len(chunk) > 0 {
				empty = complete && len(content) == 0
				if len(content) > 0 && content[0] == '.' {
					if err := w.WriteByte('.'); err != nil {
						return err
					}
				}
				first = false
			}
			if _, err := w.Write(content); err != nil {
				return err
			}
			if complete {
				break
			}
			if eof {
				if !first {
					// Terminate a last line that lacks its newline.
					if _, err := w.WriteString("\r\n"); err != nil {
						return err
					}
				}
				return nil
			}
			// bufio.ErrBufferFull: the line goes on. (A CR split from
			// its LF across chunks is kept and the line ends CR CR LF;
			// harmless, and only for lines longer than 32 KiB.)
		}
		if _, err := w.WriteString("\r\n"); err != nil {
			return err
		}
		if inBody {
			sent++
		} else if empty {
			inBody = true
		}
	}
	return nil
}

// uidlString returns the unique-id listing for a backend UID: the UID
// itself if RFC 1939 allows it (1 to 70 characters 0x21-0x7E), otherwise a
// stable digest of it.
func uidlString(uid string) string {
	ok := len(uid) >= 1 && len(uid) <= 70
	for i := 0; ok && i < len(uid); i++ {
		ok = uid[i] >= 0x21 && uid[i] <= 0x7e
	}
	if ok {
		return uid
	}
	sum := sha256.Sum256([]byte(uid))
	return "h" + hex.EncodeToString(sum[:24])
}
