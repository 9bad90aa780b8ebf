package archive

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// maxManifestBytes bounds what ReadManifest reads: a manifest is a few kilobytes.
const maxManifestBytes = 16 << 20

// ErrDamaged is wrapped by every error that says a stored set does not match its manifest: a part
// missing, shorter or longer, with another SHA-256, or that does not decrypt or decompress.
var ErrDamaged = errors.New("backup damaged")

// damage is an error that wraps ErrDamaged (errors.Is) and the error that revealed it, if any.
type damage struct {
	msg string
	err error
}

func (d *damage) Error() string        { return d.msg }
func (d *damage) Unwrap() error        { return d.err }
func (d *damage) Is(target error) bool { return target == ErrDamaged }

func damaged(err error, format string, args ...any) error {
	return &damage{msg: fmt.Sprintf(format, args...), err: err}
}

// Sets lists the complete sets of one kind on st (those with a manifest), oldest first (by ID
// order). A manifest that cannot be read, parsed or verified is not skipped silently: its error is
// joined into the second value, next to the sets that could be read.
func Sets(ctx context.Context, st Store, kind string) ([]Manifest, error) {
	if err := checkKind(kind); err != nil {
		return nil, err
	}
	prefix := kind + "s/"
	var ids []string
	err := st.List(ctx, prefix, func(name string, _ int64) error {
		id, rest, ok := strings.Cut(strings.TrimPrefix(name, prefix), "/")
		if ok && rest == ManifestName && id != "" {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %ss on %s: %w", kind, st, err)
	}
	slices.Sort(ids)
	var sets []Manifest
	var errs []error
	for _, id := range ids {
		m, err := ReadManifest(ctx, st, kind, id)
		if err != nil {
			if ctx.Err() != nil {
				return sets, err
			}
			errs = append(errs, err)
			continue
		}
		sets = append(sets, m)
	}
	return sets, errors.Join(errs...)
}

// ReadManifest reads one set's manifest from st and checks its signature when it has one (against
// the certificate it carries; see VerifySignature to check the chain too). A manifest of a newer
// format than FormatVersion is refused.
func ReadManifest(ctx context.Context, st Store, kind, id string) (Manifest, error) {
	set := kind + " " + id
	if err := checkKind(kind); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", set, err)
	}
	if err := checkName("set id", id); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", set, err)
	}
	rc, err := st.Get(ctx, dir(kind, id)+ManifestName)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s on %s: manifest: %w", set, st, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("%s on %s: read the manifest: %w", set, st, err)
	}
	if len(body) > maxManifestBytes {
		return Manifest{}, fmt.Errorf("%s on %s: manifest larger than %d bytes", set, st, maxManifestBytes)
	}
	m, err := parseManifest(body)
	if err != nil {
		return Manifest{}, fmt.Errorf("%s on %s: manifest: %w", set, st, err)
	}
	if m.Kind != kind || m.ID != id {
		return Manifest{}, fmt.Errorf("%s on %s: the manifest is that of %s", set, st, m.setName())
	}
	if m.Signature != nil {
		if err := VerifySignature(m, nil); err != nil {
			return Manifest{}, fmt.Errorf("on %s: %w", st, err)
		}
	}
	return m, nil
}

// parseManifest decodes and checks a manifest's JSON.
func parseManifest(body []byte) (Manifest, error) {
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return Manifest{}, fmt.Errorf("not a manifest: %w", err)
	}
	switch {
	case head.Format > FormatVersion:
		return Manifest{}, fmt.Errorf("format %d is newer than this Sigillo reads (up to %d): read it with a newer Sigillo", head.Format, FormatVersion)
	case head.Format < 1:
		return Manifest{}, fmt.Errorf("format %d: not a Sigillo backup manifest", head.Format)
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("not a manifest: %w", err)
	}
	if err := checkKind(m.Kind); err != nil {
		return Manifest{}, err
	}
	if err := checkName("set id", m.ID); err != nil {
		return Manifest{}, err
	}
	if len(m.Parts) == 0 {
		return Manifest{}, errors.New("no parts")
	}
	seen := make(map[string]bool, len(m.Parts))
	for _, p := range m.Parts {
		if err := checkName("part name", p.Name); err != nil {
			return Manifest{}, err
		}
		if p.Name == ManifestName || seen[p.Name] {
			return Manifest{}, fmt.Errorf("part name %q given twice", p.Name)
		}
		seen[p.Name] = true
		if p.Bytes < 0 || p.RawBytes < 0 {
			return Manifest{}, fmt.Errorf("part %s: negative size", p.Name)
		}
		for _, h := range []string{p.SHA256, p.RawSHA256} {
			if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
				return Manifest{}, fmt.Errorf("part %s: %q is not a hex SHA-256", p.Name, h)
			}
		}
	}
	return m, nil
}

// DeleteSet removes a set from st: the manifest first (so the set stops being listed even if the
// rest fails), then its parts, then anything else left under its directory by a failed write.
func DeleteSet(ctx context.Context, st Store, m Manifest) error {
	if err := checkKind(m.Kind); err != nil {
		return fmt.Errorf("delete %s: %w", m.setName(), err)
	}
	if err := checkName("set id", m.ID); err != nil {
		return fmt.Errorf("delete %s: %w", m.setName(), err)
	}
	prefix := dir(m.Kind, m.ID)
	if err := st.Delete(ctx, prefix+ManifestName); err != nil {
		return fmt.Errorf("delete %s from %s: manifest: %w", m.setName(), st, err)
	}
	for _, p := range m.Parts {
		if checkName("part name", p.Name) != nil {
			continue
		}
		if err := st.Delete(ctx, prefix+p.Name); err != nil {
			return fmt.Errorf("delete %s from %s: part %s: %w", m.setName(), st, p.Name, err)
		}
	}
	var rest []string
	if err := st.List(ctx, prefix, func(name string, _ int64) error {
		rest = append(rest, name)
		return nil
	}); err != nil {
		return fmt.Errorf("delete %s from %s: list what is left: %w", m.setName(), st, err)
	}
	for _, name := range rest {
		if err := st.Delete(ctx, name); err != nil {
			return fmt.Errorf("delete %s from %s: %s: %w", m.setName(), st, name, err)
		}
	}
	return nil
}
