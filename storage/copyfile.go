package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
)

// CopyDatabase writes a consistent copy of the database file src (with
// its write-ahead log) to dst, a new file, with SQLite's online backup, as
// it is: neither migrated nor changed. It is for the backup serve takes
// before migrating a database to a newer schema.
func CopyDatabase(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("copy database: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+src+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("copy database %s: %w", src, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("copy database %s: %w", src, err)
	}
	defer conn.Close()
	if err := copyConn(ctx, conn, dst); err != nil {
		return fmt.Errorf("copy database %s: %w", src, err)
	}
	return nil
}

// FileAppliedIndex is the applied raft index recorded in the database file
// at path, read as it is (not migrated); 0 when it has none.
func FileAppliedIndex(ctx context.Context, path string) (uint64, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("applied index: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, fmt.Errorf("applied index of %s: %w", path, err)
	}
	defer db.Close()
	var v int64
	err = db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key='applied_index'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("applied index of %s: %w", path, err)
	}
	return uint64(v), nil
}
