package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// cleanupTimeout bounds the deletes that follow a failed Write, which run even when ctx has ended.
const cleanupTimeout = time.Minute

// Write streams every part through zstd (and age when Recipients), hashing as it goes, to
// "<kind>s/<id>/<name>" (stored name gets no extra suffix), then writes the manifest LAST: a set
// without a manifest is incomplete and invisible to Sets. It fills Format, Parts, Encrypted,
// Recipients and Signature and returns the manifest as stored.
//
// It refuses a set whose manifest already exists on st. When a part or the manifest cannot be
// written, it deletes what it wrote of the set and returns the error naming the part and st.
func Write(ctx context.Context, st Store, m Manifest, parts []Source, opt Options) (Manifest, error) {
	m.Format = FormatVersion
	m.Time = m.Time.UTC()
	m.Parts = nil
	m.Signature = nil
	m.Encrypted = len(opt.Recipients) > 0
	m.Recipients = nil
	for _, r := range opt.Recipients {
		if s, ok := r.(fmt.Stringer); ok {
			m.Recipients = append(m.Recipients, s.String())
		}
	}
	if err := checkWrite(&m, parts, opt); err != nil {
		return Manifest{}, fmt.Errorf("write %s to %s: %w", m.setName(), st, err)
	}
	prefix := dir(m.Kind, m.ID)
	if rc, err := st.Get(ctx, prefix+ManifestName); err == nil {
		rc.Close()
		return Manifest{}, fmt.Errorf("write %s to %s: the set is there already: %w", m.setName(), st, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("write %s to %s: look for an existing manifest: %w", m.setName(), st, err)
	}

	var written []string
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		// Newest first: a manifest whose Put failed late (but landed) goes before its parts.
		// Best effort: the error returned is the one that made Write fail.
		for i := len(written) - 1; i >= 0; i-- {
			_ = st.Delete(cctx, written[i])
		}
	}
	for _, src := range parts {
		written = append(written, prefix+src.Name)
		info, err := writePart(ctx, st, prefix+src.Name, src, opt.Recipients)
		if err != nil {
			cleanup()
			return Manifest{}, fmt.Errorf("write %s to %s: part %s: %w", m.setName(), st, src.Name, err)
		}
		m.Parts = append(m.Parts, info)
	}
	if opt.Signer != nil {
		sig, err := sign(&m, opt)
		if err != nil {
			cleanup()
			return Manifest{}, fmt.Errorf("write %s to %s: sign the manifest: %w", m.setName(), st, err)
		}
		m.Signature = sig
	}
	body, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		cleanup()
		return Manifest{}, fmt.Errorf("write %s to %s: encode the manifest: %w", m.setName(), st, err)
	}
	body = append(body, '\n')
	written = append(written, prefix+ManifestName)
	if _, err := st.Put(ctx, prefix+ManifestName, bytes.NewReader(body)); err != nil {
		cleanup()
		return Manifest{}, fmt.Errorf("write %s to %s: %s: %w", m.setName(), st, ManifestName, err)
	}
	return m, nil
}

// checkWrite refuses a manifest or parts that cannot make a valid set.
func checkWrite(m *Manifest, parts []Source, opt Options) error {
	if err := checkKind(m.Kind); err != nil {
		return err
	}
	if err := checkName("set id", m.ID); err != nil {
		return err
	}
	if len(parts) == 0 {
		return errors.New("no parts")
	}
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		if err := checkName("part name", p.Name); err != nil {
			return err
		}
		if p.Name == ManifestName {
			return fmt.Errorf("part name %q is the manifest's", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("part %q given twice", p.Name)
		}
		seen[p.Name] = true
		if p.Open == nil {
			return fmt.Errorf("part %s: no Open", p.Name)
		}
	}
	if opt.Signer != nil {
		if _, err := signAlgorithm(opt.Signer.Public()); err != nil {
			return err
		}
		if len(opt.Chain) == 0 {
			return errors.New("a signer without its certificate (Options.Chain is empty)")
		}
		if !samePublicKey(opt.Chain[0].PublicKey, opt.Signer.Public()) {
			return errors.New("the first certificate of Options.Chain is not the signer's")
		}
	}
	return nil
}

// writePart streams one part: Source → raw hash → zstd → age (when recipients) → stored hash →
// st.Put, through a pipe fed by a goroutine that writePart stops before it returns.
func writePart(ctx context.Context, st Store, name string, src Source, recipients []age.Recipient) (PartInfo, error) {
	rc, err := src.Open(ctx)
	if err != nil {
		return PartInfo{}, fmt.Errorf("open: %w", err)
	}
	defer rc.Close()

	raw := newHashCounter()
	stored := newHashCounter()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := encode(ctx, io.MultiWriter(pw, stored), io.TeeReader(rc, raw), recipients)
		pw.CloseWithError(err) // nil: Put reads io.EOF
		done <- err
	}()
	n, putErr := st.Put(ctx, name, pr)
	// Put may return before reading everything (an error): unblock the encoder, then wait for it.
	pr.CloseWithError(errPutReturned)
	encErr := <-done
	switch {
	case encErr != nil && !errors.Is(encErr, errPutReturned):
		return PartInfo{}, encErr
	case putErr != nil:
		return PartInfo{}, putErr // the Store's errors name the store and the object
	case encErr != nil:
		return PartInfo{}, fmt.Errorf("put %s: stopped reading before the end", name)
	case n != stored.n:
		return PartInfo{}, fmt.Errorf("put %s: stored %d bytes of %d", name, n, stored.n)
	}
	return PartInfo{
		Name:      src.Name,
		Kind:      src.Kind,
		Bytes:     stored.n,
		SHA256:    stored.sum(),
		RawBytes:  raw.n,
		RawSHA256: raw.sum(),
	}, nil
}

var errPutReturned = errors.New("archive: Put returned")

// encode compresses r, encrypts it when recipients, and writes the result to w.
func encode(ctx context.Context, w io.Writer, r io.Reader, recipients []age.Recipient) error {
	out := io.WriteCloser(nopCloser{w})
	if len(recipients) > 0 {
		aw, err := age.Encrypt(w, recipients...)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		out = aw
	}
	zw, err := zstd.NewWriter(out, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if _, err := io.Copy(zw, sourceReader{ctx, r}); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// hashCounter is an io.Writer that counts and hashes what goes through it.
type hashCounter struct {
	h hash.Hash
	n int64
}

func newHashCounter() *hashCounter { return &hashCounter{h: sha256.New()} }

func (c *hashCounter) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

func (c *hashCounter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// sourceReader reads a part's Source: it stops when ctx ends and says "read" in a read error, so
// that it is told from an error of the compressor or the store.
type sourceReader struct {
	ctx context.Context
	r   io.Reader
}

func (s sourceReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read: %w", err)
	}
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
