// Package spool keeps messages on disk while they are received (SMTP DATA
// and BDAT, IMAP APPEND), so that a client sending a large message slowly,
// or many clients holding before the final dot, cost disk and not memory.
// A spool file lives in one directory of the data directory, is removed
// when the transaction ends, and whatever a crash left there is removed at
// the next start.
//
// A spooled message is read back in three ways: its header section alone
// (small, bounded: for checks on From:, Message-ID:, ...), as an
// io.SectionReader (for the virus scanner, and for storage.Encode to copy it
// straight into the raft log entry), or whole into one buffer of exactly its
// size, trace fields first (for the PEC gestore, which works on the message in
// memory). Its SHA-256 is computed as it is written (for the SMTP server's
// duplicate check).
//
// It is not a queue: nothing in it is durable or acknowledged. A message is
// only safe once the store has it (raft), and the spool file is then
// removed.
package spool

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxHeaderBytes bounds the header section Header returns (Postfix's
// header_size_limit): a longer one is cut there, the rest being body.
const MaxHeaderBytes = 100 << 10

// prefix names spool files, so that cleaning the directory at start
// removes nothing else.
const prefix = "msg-"

// Dir is a spool directory.
type Dir struct {
	path string
	// Check, if set, is asked every CheckEvery bytes of a message whether
	// the spool may grow (free disk space, say); its error stops the
	// message, wrapped in ErrWrite, so that clients holding large messages
	// cannot fill the disk that the raft log and the database need. Set it
	// before the first Receive.
	Check func() error
}

// CheckEvery is how often, in bytes of a message, Dir.Check is asked.
const CheckEvery = 1 << 20

// Open makes the directory path (mode 0700) if needed and removes the
// spool files a previous process left there.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(path, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("spool: remove a leftover: %w", err)
			}
		}
	}
	return &Dir{path: path}, nil
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// Receive copies r to a new spool file until r ends. On any error (r's, or
// the disk's) the file is removed and the error returned as it is, so that
// a caller can tell the protocol's errors (message too big) from the
// disk's (which wrap ErrWrite).
func (d *Dir) Receive(r io.Reader) (*File, error) {
	f, err := os.CreateTemp(d.path, prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	sf := &File{f: f}
	h := sha256.New()
	w := bufio.NewWriterSize(&writerOnly{f: f, check: d.Check, hash: h}, 64<<10)
	n, err := io.Copy(w, r)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sf.Close()
		var we *writeError
		if errors.As(err, &we) {
			return nil, fmt.Errorf("%w: %w", ErrWrite, we.err)
		}
		return nil, err
	}
	sf.size = n
	h.Sum(sf.sum[:0])
	return sf, nil
}

// ErrWrite wraps failures of the spool's own disk (full, read-only).
var ErrWrite = errors.New("spool: cannot write the message to disk")

// writerOnly hides os.File's ReadFrom (which would bypass the buffer),
// asks check every CheckEvery bytes, and marks its errors, so Receive can
// tell them from the reader's.
type writerOnly struct {
	f       *os.File
	check   func() error
	hash    hash.Hash // of what was written
	written int64
}

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

func (w *writerOnly) Write(p []byte) (int, error) {
	if w.check != nil && (w.written+int64(len(p)))/CheckEvery > w.written/CheckEvery {
		if err := w.check(); err != nil {
			return 0, &writeError{err}
		}
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	if w.hash != nil {
		w.hash.Write(p[:n])
	}
	if err != nil {
		return n, &writeError{err}
	}
	return n, nil
}

// File is one spooled message. Its methods are for one goroutine at a time,
// except that the SectionReaders it hands out may be read concurrently.
type File struct {
	f      *os.File
	size   int64
	sum    [sha256.Size]byte
	header []byte // read on first use
	read   bool
}

// Size is the message's length in bytes.
func (f *File) Size() int64 { return f.size }

// SHA256 is the hash of the message as received, computed as it was
// written (the SMTP server's duplicate check, storage.Dedupe).
func (f *File) SHA256() [sha256.Size]byte { return f.sum }

// Reader reads the message from the file; it is an io.ReaderAt with a
// Size, as storage.Source wants.
func (f *File) Reader() *io.SectionReader { return io.NewSectionReader(f.f, 0, f.size) }

// Header returns the message's header section: the header fields and the
// empty line that ends them (CRLF or LF), or the whole message when it has
// no empty line; at most MaxHeaderBytes, cut at the end of a line when it is
// longer. It is read from the file once and kept.
func (f *File) Header() ([]byte, error) {
	if f.read {
		return f.header, nil
	}
	n := min(f.size, MaxHeaderBytes)
	buf := make([]byte, n)
	if _, err := f.f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("spool: read the header: %w", err)
	}
	f.header, f.read = headerSection(buf, f.size > n), true
	return f.header, nil
}

// headerSection cuts b after the empty line that ends the header fields.
// When there is none and b is not the whole message, it is cut after its
// last complete line.
func headerSection(b []byte, more bool) []byte {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		line := b[i : i+j+1]
		i += j + 1
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return b[:i:i]
		}
	}
	if more {
		if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
			return b[: k+1 : k+1]
		}
	}
	return b
}

// ReadAll returns prefix followed by the whole message, in one buffer of
// exactly that size.
func (f *File) ReadAll(prefix []byte) ([]byte, error) {
	buf := make([]byte, int64(len(prefix))+f.size)
	copy(buf, prefix)
	if n, err := f.f.ReadAt(buf[len(prefix):], 0); int64(n) != f.size {
		return nil, fmt.Errorf("spool: read the message: %d of %d bytes: %w", n, f.size, err)
	}
	return buf, nil
}

// Close closes and removes the file. It may be called more than once.
func (f *File) Close() error {
	if f == nil || f.f == nil {
		return nil
	}
	name := f.f.Name()
	err := f.f.Close()
	if rerr := os.Remove(name); rerr != nil && err == nil {
		err = rerr
	}
	f.f = nil
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}
