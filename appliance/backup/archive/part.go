package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// maxWindow bounds the zstd window a part may ask for when decompressed, so that a damaged or
// hostile part cannot make OpenPart allocate much. Write's encoder uses at most 8 MiB.
const maxWindow = 32 << 20

// CheckPart reads a stored part and checks its length and SHA-256 against the manifest without
// decrypting it. The error names the set and the part, e.g.
// `snapshot 20261202T212300Z-48213: part sigillo.db: SHA-256 mismatch (stored …, manifest …)`,
// and wraps ErrDamaged when the part does not match.
func CheckPart(ctx context.Context, st Store, m Manifest, part string) error {
	cr, err := openStored(ctx, st, m, part)
	if err != nil {
		return err
	}
	defer cr.Close()
	if _, err := io.Copy(io.Discard, cr); err != nil {
		if cr.verdict != nil {
			return cr.verdict
		}
		return fmt.Errorf("%s: part %s: read from %s: %w", m.setName(), part, st, err)
	}
	return nil
}

// OpenPart opens a part for reading its raw bytes: decrypted (identities needed when m.Encrypted) and
// decompressed, with stored and raw length/SHA-256 checked as it streams; a mismatch (or an age/zstd
// error) is returned by Read, at the latest at EOF, naming the set and the part. Read to EOF before
// trusting what you wrote. Close releases the stored object and the decompressor.
func OpenPart(ctx context.Context, st Store, m Manifest, part string, ids []age.Identity) (io.ReadCloser, error) {
	if m.Encrypted && len(ids) == 0 {
		return nil, fmt.Errorf("%s: part %s: the backup is encrypted (for %s): an age identity is needed to read it",
			m.setName(), part, recipientList(m))
	}
	cr, err := openStored(ctx, st, m, part)
	if err != nil {
		return nil, err
	}
	r := &partReader{ctx: ctx, m: m, stored: cr, raw: sha256.New()}
	r.info, _ = m.Part(part)
	var plain io.Reader = cr
	if m.Encrypted {
		plain, err = age.Decrypt(cr, ids...)
		if err != nil {
			var nomatch *age.NoIdentityMatchError
			if errors.As(err, &nomatch) && !anyRecipientListed(ids, m.Recipients) {
				cr.Close()
				return nil, fmt.Errorf("%s: part %s: no identity matches this backup's recipients (%s): %w",
					m.setName(), part, recipientList(m), err)
			}
			err = r.explain(err, "decrypt")
			cr.Close()
			return nil, err
		}
	}
	r.zr, err = zstd.NewReader(plain, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		err = r.explain(err, "decompress")
		cr.Close()
		return nil, err
	}
	return r, nil
}

// partReader is what OpenPart returns: the decompressed stream, its raw length and SHA-256
// checked against the manifest, over a checkedReader of the stored bytes.
type partReader struct {
	ctx    context.Context
	m      Manifest
	info   PartInfo
	stored *checkedReader
	zr     *zstd.Decoder
	raw    hash.Hash
	n      int64
	err    error // sticky: once a Read failed, every later one fails the same
}

func (r *partReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.zr.Read(p)
	r.raw.Write(p[:n])
	r.n += int64(n)
	switch {
	case r.n > r.info.RawBytes:
		r.err = r.explain(damaged(nil, "%s: part %s: longer than the manifest says once decompressed (more than %d bytes)",
			r.m.setName(), r.info.Name, r.info.RawBytes), "")
		return 0, r.err
	case err == io.EOF:
		r.err = r.finish()
		return n, r.err
	case err != nil:
		r.err = r.explain(err, "decompress")
		return n, r.err
	}
	return n, nil
}

// finish runs at the raw stream's end: the stored bytes must end too and match, then the raw ones.
func (r *partReader) finish() error {
	if _, err := io.Copy(io.Discard, r.stored); err != nil {
		if r.stored.verdict != nil {
			return r.stored.verdict
		}
		return fmt.Errorf("%s: part %s: %w", r.m.setName(), r.info.Name, err)
	}
	if r.n != r.info.RawBytes {
		return damaged(nil, "%s: part %s: %d bytes once decompressed, manifest says %d",
			r.m.setName(), r.info.Name, r.n, r.info.RawBytes)
	}
	if got := hex.EncodeToString(r.raw.Sum(nil)); got != r.info.RawSHA256 {
		return damaged(nil, "%s: part %s: SHA-256 mismatch once decompressed (read %s, manifest %s)",
			r.m.setName(), r.info.Name, got, r.info.RawSHA256)
	}
	return io.EOF
}

// explain turns an error of age or zstd (or of the raw stream's length) into one naming the set
// and the part. When the stored
// bytes themselves do not match the manifest, that is the better explanation: it reads the rest of
// the stored part to find out (unless ctx has ended).
func (r *partReader) explain(err error, stage string) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("%s: part %s: %w", r.m.setName(), r.info.Name, r.ctx.Err())
	}
	if r.stored.verdict == nil && !r.stored.done {
		_, _ = io.Copy(io.Discard, r.stored)
	}
	if r.stored.verdict != nil {
		return r.stored.verdict
	}
	if errors.Is(err, ErrDamaged) {
		return err
	}
	return damaged(err, "%s: part %s: %s: %v", r.m.setName(), r.info.Name, stage, err)
}

func (r *partReader) Close() error {
	if r.zr != nil {
		r.zr.Close()
	}
	return r.stored.Close()
}

// openStored opens a part as stored, behind a checkedReader.
func openStored(ctx context.Context, st Store, m Manifest, part string) (*checkedReader, error) {
	info, ok := m.Part(part)
	if !ok {
		names := make([]string, len(m.Parts))
		for i, p := range m.Parts {
			names[i] = p.Name
		}
		return nil, fmt.Errorf("%s: no part %q (it has %s)", m.setName(), part, strings.Join(names, ", "))
	}
	rc, err := st.Get(ctx, dir(m.Kind, m.ID)+part)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, damaged(err, "%s: part %s: missing on %s", m.setName(), part, st)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: part %s: open on %s: %w", m.setName(), part, st, err)
	}
	return &checkedReader{ctx: ctx, rc: rc, set: m.setName(), info: info, h: sha256.New()}, nil
}

// checkedReader reads a stored part and checks it against the manifest as it goes: more bytes than
// the manifest says fail at once, too few or another SHA-256 fail at EOF. The failure is kept in
// verdict, so that callers above (age, zstd) can tell damage from their own errors.
type checkedReader struct {
	ctx     context.Context
	rc      io.ReadCloser
	set     string
	info    PartInfo
	h       hash.Hash
	n       int64
	done    bool  // EOF seen, or verdict given
	verdict error // the stored bytes do not match the manifest
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.verdict != nil {
		return 0, c.verdict
	}
	if c.done {
		return 0, io.EOF
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.rc.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.info.Bytes {
		c.done = true
		c.verdict = damaged(nil, "%s: part %s: longer than the manifest says (more than %d bytes stored)", c.set, c.info.Name, c.info.Bytes)
		return 0, c.verdict
	}
	if err != io.EOF {
		return n, err
	}
	c.done = true
	if c.n < c.info.Bytes {
		c.verdict = damaged(nil, "%s: part %s: truncated: %d bytes stored, manifest says %d", c.set, c.info.Name, c.n, c.info.Bytes)
		return n, c.verdict
	}
	if got := hex.EncodeToString(c.h.Sum(nil)); got != c.info.SHA256 {
		c.verdict = damaged(nil, "%s: part %s: SHA-256 mismatch (stored %s, manifest %s)", c.set, c.info.Name, got, c.info.SHA256)
		return n, c.verdict
	}
	return n, io.EOF
}

func (c *checkedReader) Close() error { return c.rc.Close() }

// anyRecipientListed says whether one of ids is the identity of a recipient the manifest lists.
func anyRecipientListed(ids []age.Identity, recipients []string) bool {
	for _, id := range ids {
		var pub string
		switch id := id.(type) {
		case *age.X25519Identity:
			pub = id.Recipient().String()
		case *age.HybridIdentity:
			pub = id.Recipient().String()
		default:
			return true // cannot tell: assume it might match
		}
		if slices.Contains(recipients, pub) {
			return true
		}
	}
	return false
}

func recipientList(m Manifest) string {
	if len(m.Recipients) == 0 {
		return "recipients not listed"
	}
	return strings.Join(m.Recipients, ", ")
}
