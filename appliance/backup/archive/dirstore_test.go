package archive_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// dirStore is the smallest Store over a directory, for these tests only (the real one is
// target.File): Put writes a temp file, fsyncs and renames it.
type dirStore struct{ root string }

func (d dirStore) String() string { return "file://" + filepath.ToSlash(d.root) }

func (d dirStore) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

func (d dirStore) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	p := d.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	return n, err
}

func (d dirStore) Get(_ context.Context, name string) (io.ReadCloser, error) {
	return os.Open(d.path(name))
}

func (d dirStore) List(_ context.Context, prefix string, fn func(string, int64) error) error {
	type obj struct {
		name string
		size int64
	}
	var objs []obj
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || strings.HasPrefix(e.Name(), ".put-") {
			return err
		}
		rel, _ := filepath.Rel(d.root, p)
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		objs = append(objs, obj{name, info.Size()})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(objs, func(a, b obj) int { return strings.Compare(a.name, b.name) })
	for _, o := range objs {
		if err := fn(o.name, o.size); err != nil {
			return err
		}
	}
	return nil
}

func (d dirStore) Delete(_ context.Context, name string) error {
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
