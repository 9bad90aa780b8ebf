package archive

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// The "entries" part of a log set holds raft log entries: a header (entriesMagic, then a version
// byte), then one record per entry:
//
//	uvarint index, uvarint term, type byte, varint AppendedAt (Unix nanoseconds; 0 = zero time),
//	uvarint length, data
//
// The codec keeps entries as given: that indexes follow each other is for the restore to check.
const (
	entriesMagic   = "SGLOG"
	entriesVersion = 1
	// MaxEntryData bounds one entry's data; a record claiming more is refused.
	MaxEntryData = 1 << 30
)

// Entry is one raft log entry as stored in a log set.
type Entry struct {
	Index, Term uint64
	Type        uint8
	AppendedAt  time.Time // zero when raft did not record it
	Data        []byte
}

// minNanoTime and maxNanoTime are the times Unix nanoseconds in an int64 can hold.
var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// EntryWriter encodes entries to a stream. Close flushes it (it does not close the writer below).
type EntryWriter struct {
	w      *bufio.Writer
	header bool
	buf    []byte
	err    error
}

// NewEntryWriter returns a writer of entries to w.
func NewEntryWriter(w io.Writer) *EntryWriter {
	return &EntryWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

// Write appends one entry.
func (ew *EntryWriter) Write(e Entry) error {
	if ew.err != nil {
		return ew.err
	}
	if len(e.Data) > MaxEntryData {
		return fmt.Errorf("entry %d: %d bytes of data, more than %d", e.Index, len(e.Data), MaxEntryData)
	}
	var nanos int64
	if !e.AppendedAt.IsZero() {
		if e.AppendedAt.Before(minNanoTime) || e.AppendedAt.After(maxNanoTime) {
			return fmt.Errorf("entry %d: time %s out of range", e.Index, e.AppendedAt)
		}
		nanos = e.AppendedAt.UnixNano()
	}
	ew.writeHeader()
	b := ew.buf[:0]
	b = binary.AppendUvarint(b, e.Index)
	b = binary.AppendUvarint(b, e.Term)
	b = append(b, e.Type)
	b = binary.AppendVarint(b, nanos)
	b = binary.AppendUvarint(b, uint64(len(e.Data)))
	ew.buf = b
	if _, err := ew.w.Write(b); err != nil {
		ew.err = err
		return err
	}
	if _, err := ew.w.Write(e.Data); err != nil {
		ew.err = err
		return err
	}
	return nil
}

func (ew *EntryWriter) writeHeader() {
	if ew.header {
		return
	}
	ew.header = true
	ew.buf = append(append(ew.buf[:0], entriesMagic...), entriesVersion)
	_, ew.err = ew.w.Write(ew.buf)
}

// Close writes the header if no entry did, and flushes.
func (ew *EntryWriter) Close() error {
	if ew.err != nil {
		return ew.err
	}
	ew.writeHeader()
	if ew.err != nil {
		return ew.err
	}
	ew.err = ew.w.Flush()
	if ew.err != nil {
		return ew.err
	}
	ew.err = errors.New("entries: writer closed")
	return nil
}

// EntryReader decodes entries from a stream written by EntryWriter.
type EntryReader struct {
	r      *bufio.Reader
	header bool
	n      int    // records read
	last   uint64 // index of the last record read
	err    error
}

// NewEntryReader returns a reader of the entries in r.
func NewEntryReader(r io.Reader) *EntryReader {
	return &EntryReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next entry, io.EOF after the last one, or an error saying what is wrong with
// the stream and where (a truncated record is io.ErrUnexpectedEOF, wrapped).
func (er *EntryReader) Next() (Entry, error) {
	if er.err != nil {
		return Entry{}, er.err
	}
	e, err := er.next()
	if err != nil {
		er.err = err
		return Entry{}, err
	}
	er.n++
	er.last = e.Index
	return e, nil
}

func (er *EntryReader) next() (Entry, error) {
	if !er.header {
		var h [len(entriesMagic) + 1]byte
		if _, err := io.ReadFull(er.r, h[:]); err != nil {
			return Entry{}, fmt.Errorf("entries: header: %w", eof(err))
		}
		if string(h[:len(entriesMagic)]) != entriesMagic {
			return Entry{}, errors.New("entries: not a Sigillo log (bad magic)")
		}
		if v := h[len(entriesMagic)]; v != entriesVersion {
			return Entry{}, fmt.Errorf("entries: version %d, this Sigillo reads %d", v, entriesVersion)
		}
		er.header = true
	}
	if _, err := er.r.Peek(1); err == io.EOF {
		return Entry{}, io.EOF
	}
	where := func(field string, err error) error {
		if er.n == 0 {
			return fmt.Errorf("entries: record 1: %s: %w", field, eof(err))
		}
		return fmt.Errorf("entries: record %d (after index %d): %s: %w", er.n+1, er.last, field, eof(err))
	}
	var e Entry
	var err error
	if e.Index, err = binary.ReadUvarint(er.r); err != nil {
		return Entry{}, where("index", err)
	}
	if e.Term, err = binary.ReadUvarint(er.r); err != nil {
		return Entry{}, where("term", err)
	}
	if e.Type, err = er.r.ReadByte(); err != nil {
		return Entry{}, where("type", err)
	}
	nanos, err := binary.ReadVarint(er.r)
	if err != nil {
		return Entry{}, where("time", err)
	}
	if nanos != 0 {
		e.AppendedAt = time.Unix(0, nanos).UTC()
	}
	size, err := binary.ReadUvarint(er.r)
	if err != nil {
		return Entry{}, where("length", err)
	}
	if size > MaxEntryData {
		return Entry{}, where("length", fmt.Errorf("%d bytes, more than %d", size, MaxEntryData))
	}
	if e.Data, err = readData(er.r, int64(size)); err != nil {
		return Entry{}, where("data", err)
	}
	return e, nil
}

// readData reads n bytes, growing the buffer as they arrive rather than trusting n up front, so a
// damaged length cannot make it allocate a gigabyte for nothing.
func readData(r io.Reader, n int64) ([]byte, error) {
	if n <= 64<<10 {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	var buf bytes.Buffer
	got, err := io.CopyN(&buf, r, n)
	if err == io.EOF || (err == nil && got < n) {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

// eof turns an end of stream inside a header or record into io.ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
