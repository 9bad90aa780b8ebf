package backup

import (
	"context"
	"io"
	"path"
	"sync"
	"sync/atomic"

	"sigillo/appliance/backup/archive"
)

// Progress is how far Now has got with one target.
type Progress struct {
	Target string
	// Bytes is what has been stored on the target so far (compressed,
	// encrypted).
	Bytes int64
	// Read is how much of the parts has been read so far, of Total: the
	// size of the database copy and the config file (for a percentage;
	// secrets.tar, a few kilobytes, is not in Total).
	Read, Total int64
	// Done is set on the target's last report, with Err when it failed.
	Done bool
	Err  error
}

// progressStep is how many bytes (read or stored) pass between two reports.
const progressStep = 1 << 20

// reporter serialises the reports of every target to one callback.
type reporter struct {
	mu sync.Mutex
	fn func(Progress)
}

func (r *reporter) target(name string, total int64) *tracker {
	return &tracker{r: r, name: name, total: total}
}

// tracker counts the bytes of one target and reports them every
// progressStep. Its counters are updated from whichever goroutines the
// archive reads and stores with.
type tracker struct {
	r     *reporter
	name  string
	total int64

	stored, read atomic.Int64
	last         atomic.Int64 // stored+read at the last report
}

func (t *tracker) add(stored, read int64) {
	if t == nil || t.r.fn == nil {
		return
	}
	s, r := t.stored.Add(stored), t.read.Add(read)
	if n, l := s+r, t.last.Load(); n-l >= progressStep && t.last.CompareAndSwap(l, n) {
		t.report(false, nil)
	}
}

func (t *tracker) done(err error) {
	if t == nil || t.r.fn == nil {
		return
	}
	t.report(true, err)
}

func (t *tracker) report(done bool, err error) {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.fn(Progress{Target: t.name, Bytes: t.stored.Load(), Read: t.read.Load(), Total: t.total, Done: done, Err: err})
}

// store wraps st so that what its Put reads of the parts is counted as
// stored.
func (t *tracker) store(st archive.Store) archive.Store {
	if t == nil || t.r.fn == nil {
		return st
	}
	return countingStore{Store: st, t: t}
}

// sources wraps every part so that what is read of it is counted.
func (t *tracker) sources(parts []archive.Source) []archive.Source {
	if t == nil || t.r.fn == nil {
		return parts
	}
	out := make([]archive.Source, len(parts))
	for i, p := range parts {
		open := p.Open
		p.Open = func(ctx context.Context) (io.ReadCloser, error) {
			rc, err := open(ctx)
			if err != nil {
				return nil, err
			}
			return countingReadCloser{ReadCloser: rc, add: func(n int64) { t.add(0, n) }}, nil
		}
		out[i] = p
	}
	return out
}

type countingStore struct {
	archive.Store
	t *tracker
}

func (c countingStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	if path.Base(name) == archive.ManifestName {
		return c.Store.Put(ctx, name, r) // the parts' bytes are the figure
	}
	return c.Store.Put(ctx, name, countingReader{r: r, add: func(n int64) { c.t.add(n, 0) }})
}

type countingReader struct {
	r   io.Reader
	add func(int64)
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.add(int64(n))
	return n, err
}

type countingReadCloser struct {
	io.ReadCloser
	add func(int64)
}

func (c countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.add(int64(n))
	return n, err
}
