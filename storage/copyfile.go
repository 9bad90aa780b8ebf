package storage

import (
	"context"
	"database/sql"
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
