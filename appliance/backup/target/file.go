package target

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// File is a backup target in a local directory (a disk, an NFS mount). Names
// are slash paths under its root; directories are made 0700 and files 0600.
// The root itself must exist: a missing root (say an unmounted disk) is an
// error, not a directory to create.
type File struct {
	root string // absolute, cleaned
}

// NewFile returns the target rooted at dir, an absolute path: what Open
// gives for "file://"+dir.
func NewFile(dir string) (*File, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("backup target directory %q is not absolute", dir)
	}
	return &File{root: filepath.Clean(dir)}, nil
}

func newFile(u *url.URL) (*File, error) {
	if u.Opaque != "" {
		return nil, fmt.Errorf(`backup target %s: the path must be absolute ("file:///abs/dir")`, redacted(u))
	}
	if h := strings.ToLower(u.Host); h != "" && h != "localhost" {
		return nil, fmt.Errorf(`backup target %s: host %q: a file target is on this machine (write "file:///dir")`, redacted(u), u.Host)
	}
	if u.RawQuery != "" {
		return nil, fmt.Errorf("backup target %s: a file target takes no parameters", redacted(u))
	}
	if u.Path == "" || !path.IsAbs(u.Path) {
		return nil, fmt.Errorf(`backup target %s: the path must be absolute ("file:///abs/dir")`, redacted(u))
	}
	if strings.ContainsRune(u.Path, 0) {
		return nil, fmt.Errorf("backup target %s: the path holds a NUL", redacted(u))
	}
	return NewFile(filepath.FromSlash(u.Path))
}

// String is "file:///root".
func (f *File) String() string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(f.root)}).String()
}

func (f *File) path(name string) string {
	return filepath.Join(f.root, filepath.FromSlash(name))
}

// checkRoot reports a missing root as its own clear error.
func (f *File) checkRoot() error {
	st, err := os.Stat(f.root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: directory %s does not exist (the target does not create it)", f, f.root)
		}
		return fmt.Errorf("%s: %w", f, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", f, f.root)
	}
	return nil
}

// Put writes r to a temporary file next to name, fsyncs it, renames it to
// name and fsyncs the directory (and any directory it had to create). On
// error or when ctx ends, the temporary file is removed and name untouched.
func (f *File) Put(ctx context.Context, name string, r io.Reader) (n int64, err error) {
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("%s: put: %w", f, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	if err := f.checkRoot(); err != nil {
		return 0, err
	}
	dst := f.path(name)
	dir := filepath.Dir(dst)
	created, err := f.mkdirs(dir)
	if err != nil {
		return 0, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes files 0600 already; say it, in case that changes.
	if err := tmp.Chmod(0o600); err != nil {
		return 0, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	n, err = io.Copy(tmp, ctxReader{ctx, r})
	if err != nil {
		return n, fmt.Errorf("%s: put %s: after %d bytes: %w", f, name, n, err)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("%s: put %s: fsync: %w", f, name, err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	if err := ctx.Err(); err != nil {
		return n, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return n, fmt.Errorf("%s: put %s: %w", f, name, err)
	}
	// The rename is durable once the directory is; a directory made for
	// this file is durable once its parent is.
	for _, d := range append([]string{dir}, created...) {
		if err := syncDir(d); err != nil {
			return n, fmt.Errorf("%s: put %s: fsync directory: %w", f, name, err)
		}
	}
	return n, nil
}

// mkdirs makes dir (under the root) and its missing parents, 0700, and
// returns the parents of the directories it made, deepest first: those to
// fsync so that the new entries survive a crash.
func (f *File) mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; d != f.root && len(d) > len(f.root); d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	parents := make([]string, 0, len(missing))
	for _, d := range missing {
		parents = append(parents, filepath.Dir(d))
	}
	return parents, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Get opens name for reading; when absent the error wraps fs.ErrNotExist.
func (f *File) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%s: get: %w", f, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: get %s: %w", f, name, err)
	}
	if err := f.checkRoot(); err != nil {
		return nil, err
	}
	fh, err := os.Open(f.path(name))
	if err != nil {
		return nil, fmt.Errorf("%s: get %s: %w", f, name, err)
	}
	st, err := fh.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("not a regular file: %w", fs.ErrNotExist)
	}
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: get %s: %w", f, name, err)
	}
	return fh, nil
}

// Delete removes name, then the directories it leaves empty (up to, not
// including, the root). An absent name is not an error.
func (f *File) Delete(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return fmt.Errorf("%s: delete: %w", f, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: delete %s: %w", f, name, err)
	}
	if err := f.checkRoot(); err != nil {
		return err
	}
	p := f.path(name)
	if st, err := os.Lstat(p); err == nil && st.IsDir() {
		return fmt.Errorf("%s: delete %s: is a directory, not an object", f, name)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: delete %s: %w", f, name, err)
	}
	d := filepath.Dir(p)
	for ; d != f.root && len(d) > len(f.root); d = filepath.Dir(d) {
		if os.Remove(d) != nil { // not empty (or gone): stop
			break
		}
	}
	if err := syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: delete %s: fsync directory: %w", f, name, err)
	}
	return nil
}

// List calls fn for every file whose name starts with prefix, in lexical
// order of name. It reads one directory at a time: the listing of a large
// target is not held in memory. Temporary files of Puts under way are not
// listed.
func (f *File) List(ctx context.Context, prefix string, fn func(name string, size int64) error) error {
	if err := checkPrefix(prefix); err != nil {
		return fmt.Errorf("%s: list: %w", f, err)
	}
	if err := f.checkRoot(); err != nil {
		return err
	}
	// Start at the deepest directory the prefix names.
	dir, _ := path.Split(prefix)
	start := strings.TrimSuffix(dir, "/")
	if err := f.walk(ctx, start, prefix, fn); err != nil {
		return fmt.Errorf("%s: list %q: %w", f, prefix, err)
	}
	return nil
}

// walk visits the directory rel (slash path, "" for the root). Entries are
// sorted as the names they lead to would sort: a directory "a" as "a/", so
// that "a.txt" comes before "a/b" as in lexical order of full names.
func (f *File) walk(ctx context.Context, rel, prefix string, fn func(string, int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(f.path(rel))
	if err != nil {
		if rel != "" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
			return nil // nothing there (or deleted meanwhile)
		}
		return err
	}
	type entry struct {
		key string // sort key: name, plus "/" for a directory
		de  fs.DirEntry
	}
	list := make([]entry, 0, len(entries))
	for _, de := range entries {
		if strings.HasPrefix(de.Name(), ".") {
			continue // a Put under way
		}
		k := de.Name()
		if de.IsDir() {
			k += "/"
		}
		list = append(list, entry{k, de})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].key < list[j].key })
	for _, e := range list {
		name := e.de.Name()
		if rel != "" {
			name = rel + "/" + name
		}
		if e.de.IsDir() {
			// Descend only where names under prefix can be.
			if d := name + "/"; strings.HasPrefix(d, prefix) || strings.HasPrefix(prefix, d) {
				if err := f.walk(ctx, name, prefix, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !e.de.Type().IsRegular() || !strings.HasPrefix(name, prefix) {
			continue
		}
		info, err := e.de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if err := fn(name, info.Size()); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader fails a Read once ctx is done: a long copy stops promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
