package restore

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/hashicorp/raft"

	"sigillo/appliance/backup/archive"
	"sigillo/appliance/legallog"
	"sigillo/storage"
)

// ErrVerify is wrapped by Verify's error when a check failed (the Report
// says which).
var ErrVerify = errors.New("the backup does not verify")

// Verify checks snapshot set id on st ("" is the newest): every part's
// stored length and SHA-256, the manifest's signature, then a restore of
// the snapshot alone into a scratch directory (removed afterwards), on
// which SQLite's integrity check must say ok, the counts of domains,
// mailboxes and messages must be the manifest's, the legal log must
// verify (as `sigillo log verify` does, against the certificates the
// heads carry) and the raft seed must be at the snapshot's index. The
// Report lists every check with its result; the error wraps ErrVerify
// when any failed. Checks after a failed part check or restore are not
// run. Log sets are not replayed: their parts are checked by the backup
// job's own reads, and Restore refuses a damaged one.
func Verify(ctx context.Context, st archive.Store, id string, ids []age.Identity) (Report, error) {
	var rep Report
	add := func(name string, err error, ok string) bool {
		c := Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = err.Error()
		}
		rep.Checks = append(rep.Checks, c)
		return err == nil
	}
	fail := func() (Report, error) {
		var failed []string
		for _, c := range rep.Checks {
			if !c.OK {
				failed = append(failed, c.Name)
			}
		}
		return rep, fmt.Errorf("verify snapshot %s: %w: %s failed", rep.Snapshot, ErrVerify, strings.Join(failed, ", "))
	}

	var m archive.Manifest
	var err error
	if id == "" {
		m, err = pickSnapshot(ctx, Options{From: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &rep)
	} else {
		m, err = archive.ReadManifest(ctx, st, archive.KindSnapshot, id)
	}
	rep.Snapshot = id
	if !add("manifest", err, "readable") {
		return fail()
	}
	rep.Snapshot, rep.Time, rep.Index = m.ID, m.Time, m.Index
	if m.Signature == nil {
		add("signature", nil, "none: the set is not signed")
	} else {
		err := archive.VerifySignature(m, nil)
		add("signature", err, fmt.Sprintf("%s by %s", m.Signature.Algorithm, signer(m)))
	}
	partsOK := true
	for _, p := range m.Parts {
		err := archive.CheckPart(ctx, st, m, p.Name)
		partsOK = add("part "+p.Name, err, fmt.Sprintf("%d bytes, SHA-256 matches", p.Bytes)) && partsOK
	}
	if !partsOK {
		return fail()
	}

	scratch, err := os.MkdirTemp("", "sigillo-verify-")
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	defer os.RemoveAll(scratch)
	dataDir := filepath.Join(scratch, "data")
	restored, err := Restore(ctx, Options{From: st, Snapshot: m.ID, SnapshotOnly: true, Identities: ids, DataDir: dataDir,
		NodeID: "verify", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !add("restore", err, "the snapshot restores into an empty data directory") {
		return fail()
	}
	rep.Counts, rep.FinalIndex, rep.Secrets = restored.Counts, restored.FinalIndex, restored.Secrets

	store, err := storage.Open(filepath.Join(dataDir, DatabaseFile))
	if !add("open", err, "the restored database opens") {
		return fail()
	}
	defer store.Close()
	integrity, err := store.IntegrityCheck(ctx)
	if err == nil && integrity != "ok" {
		err = fmt.Errorf("integrity_check: %s", integrity)
	}
	add("integrity", err, "PRAGMA integrity_check: ok")
	add("counts", compareCounts(m.Counts, restored.Counts), fmt.Sprintf("%v as the manifest says", formatCounts(restored.Counts)))
	lr, err := legallog.Verify(ctx, store, nil)
	if err == nil {
		rep.LegalLog = strings.TrimSpace(lr.String())
		if !lr.OK {
			err = errors.New(rep.LegalLog)
		}
	}
	add("legal log", err, rep.LegalLog)
	add("raft seed", checkSeed(filepath.Join(dataDir, "raft"), restored.FinalIndex),
		fmt.Sprintf("a one-node cluster whose log continues after %d", restored.FinalIndex))

	for _, c := range rep.Checks {
		if !c.OK {
			return fail()
		}
	}
	return rep, nil
}

// signer names the signature's first certificate.
func signer(m archive.Manifest) string {
	if m.Signature == nil || len(m.Signature.Certificates) == 0 {
		return "(no certificate)"
	}
	if c, err := x509.ParseCertificate(m.Signature.Certificates[0]); err == nil {
		return c.Subject.String()
	}
	return "(unparsable certificate)"
}

// compareCounts checks got against what the manifest recorded.
func compareCounts(want, got map[string]int64) error {
	if len(want) == 0 {
		return errors.New("the manifest records no counts")
	}
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			diffs = append(diffs, fmt.Sprintf("%s %d, manifest %d", k, got[k], want[k]))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("counts differ: %s", strings.Join(diffs, "; "))
	}
	return nil
}

func formatCounts(c map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%d %s", c[k], k))
	}
	return strings.Join(parts, ", ")
}

// checkSeed checks that the restored raft directory has a snapshot at
// index (none when index is 0).
func checkSeed(dir string, index uint64) error {
	if index == 0 {
		return nil
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		return err
	}
	list, err := snaps.List()
	if err != nil {
		return err
	}
	if len(list) != 1 || list[0].Index != index || len(list[0].Configuration.Servers) != 1 {
		return fmt.Errorf("raft snapshots %d, want one at index %d with one server", len(list), index)
	}
	return nil
}
