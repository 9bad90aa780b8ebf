package restore

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"sigillo/appliance/backup/archive"
)

// maxSecretBytes bounds one file of secrets.tar: they are keys, a few
// kilobytes.
const maxSecretBytes = 1 << 20

// reserved are the names of a data directory's own files and
// directories, which no secret may take.
var reserved = map[string]bool{DatabaseFile: true, DatabaseFile + "-wal": true, DatabaseFile + "-shm": true,
	"node-id": true, "raft": true, "cluster": true, "spool": true}

// restoreSecrets writes the files of the secrets part into dir (0600),
// each under its base name (the tar holds the path it had on the backed-up
// node, "var/lib/sigillo/acme-storage.key", whose directory was that
// node's data directory or another the operator chose), and returns
// "name (from path)" for each. Only plain files are taken; anything else
// in the tar, or two files of the same name, is refused.
func restoreSecrets(ctx context.Context, o Options, m archive.Manifest, part, dir string) ([]string, error) {
	rc, err := archive.OpenPart(ctx, o.From, m, part, o.Identities)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	names, err := extractSecrets(rc, dir)
	if err != nil {
		return nil, wrapPart(m, part, err)
	}
	// The tar's end is not the part's: what follows (padding) is read too,
	// so that the part's lengths and hashes are checked.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, wrapPart(m, part, err)
	}
	return names, nil
}

// extractSecrets writes the plain files of the tar read from r into dir
// (see restoreSecrets).
func extractSecrets(r io.Reader, dir string) ([]string, error) {
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		base := path.Base(h.Name)
		if h.Typeflag != tar.TypeReg || h.Size > maxSecretBytes || base == "/" || base == "." || base == ".." || reserved[base] {
			return nil, fmt.Errorf("%q is not a secret file this version restores", h.Name)
		}
		if err := writeSecret(filepath.Join(dir, base), tr); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		names = append(names, fmt.Sprintf("%s (from /%s)", base, strings.TrimPrefix(h.Name, "/")))
	}
}

func writeSecret(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
