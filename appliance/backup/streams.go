package backup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// errReaderClosed ends a producer whose reader was closed before the end.
var errReaderClosed = errors.New("backup: stream closed by its reader")

// pipeStream is the read end of a pipe filled by a goroutine it owns:
// Close stops the goroutine and waits for it.
type pipeStream struct {
	*io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
}

// produce starts fill writing into a pipe and returns its read end. What
// fill returns ends the stream: nil is EOF, an error is the reader's error.
func produce(ctx context.Context, fill func(ctx context.Context, w io.Writer) error) *pipeStream {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	s := &pipeStream{PipeReader: pr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		pw.CloseWithError(fill(ctx, pw))
	}()
	return s
}

func (s *pipeStream) Close() error {
	s.cancel()
	s.PipeReader.CloseWithError(errReaderClosed)
	<-s.done
	return nil
}

// openSecrets streams a tar of the files that exist among files. Each is
// stored under its absolute path without the leading slash
// ("var/lib/sigillo/acme-storage.key"), with its mode.
func openSecrets(ctx context.Context, files []string) io.ReadCloser {
	return produce(ctx, func(ctx context.Context, w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, path := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := addToTar(tw, path); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}

func addToTar(tw *tar.Writer, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("secret file %s: not a regular file", path)
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(filepath.ToSlash(abs), "/"),
		Size:     fi.Size(),
		Mode:     int64(fi.Mode().Perm()),
		ModTime:  fi.ModTime(),
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if n, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	} else if n != fi.Size() {
		return fmt.Errorf("secret file %s: changed while read", path)
	}
	return nil
}
