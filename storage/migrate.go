package storage

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// SchemaVersion is the number of migrations the code knows: the schema
// version it brings every database to.
func SchemaVersion() int { return len(migrations) }

// ErrSchemaNewer is the refusal of a database whose schema version is
// higher than SchemaVersion: it was written by a newer Sigillo, and this
// build neither opens nor changes it.
var ErrSchemaNewer = errors.New("the database was written by a newer version of Sigillo")

// NeedsMigration tells, without changing anything in it, whether opening
// the database at path with this build would migrate it: from is the
// file's schema version, to is SchemaVersion(). `sigillo serve` backs the
// file up when from < to, before Open migrates it. A path with no file is
// a new store, made at the current version: from == to, nothing to back
// up. A schema newer than this build is refused with ErrSchemaNewer.
func NeedsMigration(path string) (from, to int, err error) {
	to = SchemaVersion()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return to, to, nil
	} else if err != nil {
		return 0, to, fmt.Errorf("schema version of %s: %w", path, err)
	}
	if from, err = fileVersion(path); err != nil {
		return 0, to, fmt.Errorf("schema version of %s: %w", path, err)
	}
	if from > to {
		return from, to, newerSchema(path, from, to)
	}
	return from, to, nil
}

// fileVersion reads the user_version of the database at path. After a
// clean close, the file's header has it, and reading it touches nothing (a
// read-only SQLite connection would leave a -wal and a -shm file beside
// it). A write-ahead log left beside it may hold a newer header: then
// SQLite reads it, read-only.
func fileVersion(path string) (int, error) {
	if st, err := os.Stat(path + "-wal"); err == nil && st.Size() > 0 {
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)&_pragma=query_only(1)")
		if err != nil {
			return 0, err
		}
		defer db.Close()
		var v int
		err = db.QueryRow("PRAGMA user_version").Scan(&v)
		return v, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var h [100]byte
	n, err := io.ReadFull(f, h[:])
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return 0, nil // an empty file is an empty database to SQLite
	case err != nil:
		return 0, fmt.Errorf("not an SQLite database (%d bytes of header): %w", n, err)
	case string(h[:16]) != "SQLite format 3\x00":
		return 0, errors.New("not an SQLite database")
	}
	return int(binary.BigEndian.Uint32(h[60:64])), nil
}

func newerSchema(path string, have, known int) error {
	return fmt.Errorf("%s has schema version %d, and this build of Sigillo knows versions up to %d: %w; "+
		"run the newer version, or restore a backup made by this one", path, have, known, ErrSchemaNewer)
}

// migrate brings db's schema from its user_version to len(list). Every
// pending migration and the user_version that records them run in ONE
// transaction: an upgrade across several versions either happens whole or
// not at all, so a failure leaves the file exactly as it was, at a version
// the build that wrote it still opens. A schema newer than list is refused
// before anything is written. (list is the migrations, or a test's.)
func migrate(ctx context.Context, db *sql.DB, path string, list []string) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if version > len(list) {
		return newerSchema(path, version, len(list))
	}
	if version == len(list) {
		return nil
	}
	// BEGIN IMMEDIATE (the DSN's _txlock): the version is read again under
	// the write lock, in case another connection migrated meanwhile.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("schema migration from version %d: %w", version, err)
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if version > len(list) {
		return newerSchema(path, version, len(list))
	}
	from := version
	for i := from; i < len(list); i++ {
		if _, err := tx.ExecContext(ctx, list[i]); err != nil {
			return fmt.Errorf("schema migration %d, upgrading from version %d to %d: %w; nothing was changed, the database is still at version %d",
				i+1, from, len(list), err, from)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(list))); err != nil {
		return fmt.Errorf("schema migration %d to %d: set the version: %w", from+1, len(list), err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("schema migration %d to %d: commit: %w", from+1, len(list), err)
	}
	return nil
}

// openDB opens the database at path (creating it if needed) and brings
// its schema up to date.
func openDB(path string) (*sql.DB, error) { return openDBWith(path, migrations) }

// openDBWith is openDB with the list of migrations given (a test's).
func openDBWith(path string, list []string) (*sql.DB, error) {
	// synchronous=NORMAL in WAL mode syncs at checkpoints only: durability
	// lives in the raft log, which fsyncs every batch, and the database is
	// rebuilt from snapshot + log after a crash.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(0)
	if err := migrate(context.Background(), db, path, list); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return db, nil
}
