// Package target is where Sigillo's backups are kept: a directory (file://)
// or an S3 bucket (s3://), the URL that names one, the credentials an S3
// target signs with, and the retention rule that says which snapshots stay.
//
// A target stores named objects and nothing else: it knows neither the
// format of a backup set (package archive) nor when backups are taken
// (package backup). It never creates the place it writes to: the directory
// of a file:// target and the bucket of an s3:// target must exist.
package target

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"
)

// Store is the method set File and S3 share; it is archive.Store's, written
// here so that this package does not depend on the format's package.
type Store interface {
	// Put writes r to name; the object appears under name only once complete,
	// and on error nothing is left under name. It returns the bytes written.
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	// Get opens name; when absent the error wraps fs.ErrNotExist.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List calls fn for every object whose name starts with prefix, in
	// lexical order of name; an error from fn stops it and is returned.
	List(ctx context.Context, prefix string, fn func(name string, size int64) error) error
	// Delete removes name; absent is not an error.
	Delete(ctx context.Context, name string) error
	// String names the target without credentials.
	String() string
}

var (
	_ Store = (*File)(nil)
	_ Store = (*S3)(nil)
)

// Open parses the url of a [[backup.target]]: "file:///abs/dir" or
// "s3://bucket/prefix?endpoint=host:port&region=us-east-1&tls=false" (tls
// defaults to true; without endpoint the target is AWS, s3.amazonaws.com).
// S3 credentials come from credentialsFile when it is not "" (see
// readCredentials), else from the environment (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN); neither is an error. Open does
// no I/O except reading the credentials file. The result is a *File or an *S3.
func Open(rawURL, credentialsFile string) (Store, error) {
	return open(rawURL, credentialsFile, os.Getenv)
}

func open(rawURL, credentialsFile string, getenv func(string) string) (Store, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "file":
		if credentialsFile != "" {
			return nil, fmt.Errorf("backup target %s: a credentials file is for s3:// targets only", redacted(u))
		}
		return newFile(u)
	case "s3":
		return newS3(u, credentialsFile, getenv)
	}
	return nil, fmt.Errorf("backup target %s: scheme %q is not file or s3", redacted(u), u.Scheme)
}

// parseURL parses a target URL, refusing what no target takes: user
// information (credentials never go in the URL) and fragments.
func parseURL(rawURL string) (*url.URL, error) {
	if rawURL == "" {
		return nil, errors.New("backup target: empty url")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the whole input, which may hold a secret a user
		// pasted by mistake: report the reason only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("backup target: malformed url: %v", err)
	}
	if u.Scheme == "" {
		return nil, errors.New(`backup target: url has no scheme (want "file:///dir" or "s3://bucket/prefix")`)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.User != nil {
		return nil, fmt.Errorf("backup target %s: credentials do not belong in the url (use the credentials file)", redacted(u))
	}
	if u.Fragment != "" || strings.Contains(rawURL, "#") {
		return nil, fmt.Errorf("backup target %s: a fragment (#…) means nothing here", redacted(u))
	}
	return u, nil
}

// redacted is u without user information, query or fragment: safe to print.
func redacted(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, Opaque: u.Opaque}
	return v.String()
}

// checkName refuses an object name that is not a clean relative slash path:
// empty, absolute, with a backslash, a NUL, an empty, "." or ".." element,
// or an element starting with "." (the file target's temporary files).
func checkName(name string) error {
	if name == "" {
		return errors.New("empty object name")
	}
	if strings.HasPrefix(name, "/") {
		return fmt.Errorf("object name %q is absolute", name)
	}
	if strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("object name %q holds a backslash or NUL", name)
	}
	for _, el := range strings.Split(name, "/") {
		switch {
		case el == "":
			return fmt.Errorf("object name %q has an empty element", name)
		case el == "." || el == "..":
			return fmt.Errorf("object name %q has a %q element", name, el)
		case strings.HasPrefix(el, "."):
			return fmt.Errorf("object name %q has an element starting with a dot (reserved for temporary files)", name)
		}
	}
	return nil
}

// checkPrefix refuses a List prefix that no valid name could start with
// because of its form: absolute, backslash, NUL, or a "." / ".." element
// before its last slash. "" lists everything.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.HasPrefix(prefix, "/") || strings.ContainsAny(prefix, "\\\x00") {
		return fmt.Errorf("list prefix %q is absolute or holds a backslash or NUL", prefix)
	}
	dir, _ := path.Split(prefix)
	if dir == "" {
		return nil
	}
	return checkName(strings.TrimSuffix(dir, "/"))
}
