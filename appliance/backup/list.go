package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigillo/appliance/backup/archive"
)

// Listed is one snapshot on one target, as `sigillo backup list` shows it.
type Listed struct {
	ID     string    `json:"id"`
	Target string    `json:"target"`
	Time   time.Time `json:"time"`
	Index  uint64    `json:"index"`
	Bytes  int64     `json:"bytes"` // stored bytes of its parts
	// State is "complete", or "damaged: <reason>" when its manifest cannot
	// be read or a part it names is missing or of another size.
	State string `json:"state"`
}

// StateComplete is the State of a snapshot whose manifest reads and whose
// parts are all there with their sizes.
const StateComplete = "complete"

// List lists the snapshots on every target: one Listed per snapshot and
// target, newest last (the same snapshot on two targets: in the order of
// targets). A set without a manifest (being written, or abandoned) is not a
// snapshot and is left out. A target that cannot be listed is named in the
// error, and the others are listed all the same.
func List(ctx context.Context, targets []archive.Store) ([]Listed, error) {
	type item struct {
		Listed
		order int
	}
	var (
		items []item
		errs  []error
	)
	for i, st := range targets {
		ls, err := listTarget(ctx, st)
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", st, err))
			continue
		}
		for _, l := range ls {
			items = append(items, item{l, i})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		if c := strings.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return a.order - b.order
	})
	out := make([]Listed, len(items))
	for i, it := range items {
		out[i] = it.Listed
	}
	return out, errors.Join(errs...)
}

// listTarget lists the snapshots of one target.
func listTarget(ctx context.Context, st archive.Store) ([]Listed, error) {
	const prefix = archive.KindSnapshot + "s/"
	type object struct {
		sizes       map[string]int64 // by part name
		hasManifest bool
	}
	objects := map[string]*object{}
	var ids []string
	err := st.List(ctx, prefix, func(name string, size int64) error {
		id, part, ok := strings.Cut(strings.TrimPrefix(name, prefix), "/")
		if !ok || id == "" || part == "" {
			return nil
		}
		o := objects[id]
		if o == nil {
			o = &object{sizes: map[string]int64{}}
			objects[id] = o
			ids = append(ids, id)
		}
		if part == "manifest.json" {
			o.hasManifest = true
		} else {
			o.sizes[part] = size
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ms, _ := archive.Sets(ctx, st, archive.KindSnapshot) // the damaged ones are read again below, for their reason
	complete := make(map[string]archive.Manifest, len(ms))
	for _, m := range ms {
		complete[m.ID] = m
	}
	var out []Listed
	for _, id := range ids {
		o := objects[id]
		if !o.hasManifest {
			continue
		}
		l := Listed{ID: id, Target: st.String()}
		m, ok := complete[id]
		if !ok {
			var err error
			if m, err = archive.ReadManifest(ctx, st, archive.KindSnapshot, id); err != nil {
				l.Time, l.Index = parseSnapshotID(id)
				for _, n := range o.sizes {
					l.Bytes += n
				}
				l.State = "damaged: " + err.Error()
				out = append(out, l)
				continue
			}
		}
		l.Time, l.Index, l.State = m.Time, m.Index, StateComplete
		for _, p := range m.Parts {
			l.Bytes += p.Bytes
			if n, ok := o.sizes[p.Name]; !ok {
				l.State = fmt.Sprintf("damaged: part %s is missing", p.Name)
			} else if n != p.Bytes {
				l.State = fmt.Sprintf("damaged: part %s has %d bytes, its manifest says %d", p.Name, n, p.Bytes)
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// parseSnapshotID reads the time and index out of a snapshot id
// ("20261202T212300Z-48213"); zero values when it is not one.
func parseSnapshotID(id string) (time.Time, uint64) {
	ts, idx, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, 0
	}
	t, err := time.Parse("20060102T150405Z", ts)
	if err != nil {
		return time.Time{}, 0
	}
	n, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		return t, 0
	}
	return t, n
}
