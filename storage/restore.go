package storage

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
)

// stateTables are the tables Restore copies, read from the schema itself so
// that a table a later migration adds is copied without anyone having to
// list it: every ordinary table of the main database, and the shadow tables
// in which a virtual table keeps its data (FTS5's blob_fts_data, _idx,
// _docsize and _config: copying them copies the index as it is, much faster
// than building it again). Parents come before the tables whose foreign
// keys refer to them, otherwise by name, so every node copies in the same
// order.
//
// Not copied: virtual tables themselves (their data is in their shadow
// tables, and writing through an FTS5 table would index everything again),
// views, and SQLite's own tables, except sqlite_sequence, the AUTOINCREMENT
// counters, which are state (the next ID must be the same on every node);
// sqlite_stat* are only the query planner's statistics.
func stateTables(ctx context.Context, tx *sql.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT name, type FROM pragma_table_list WHERE schema = 'main' ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var names []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if typ != "table" && typ != "shadow" {
			continue
		}
		if l := strings.ToLower(name); strings.HasPrefix(l, "sqlite_") && l != "sqlite_sequence" {
			continue
		}
		names = append(names, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}

	parents := make(map[string][]string, len(names))
	for _, n := range names {
		ps, err := referencedTables(ctx, tx, n)
		if err != nil {
			return nil, err
		}
		parents[strings.ToLower(n)] = ps
	}
	byLower := make(map[string]string, len(names))
	for _, n := range names {
		byLower[strings.ToLower(n)] = n
	}
	const visiting, done = 1, 2
	state := make(map[string]int, len(names))
	ordered := make([]string, 0, len(names))
	var visit func(l string)
	visit = func(l string) {
		if state[l] != 0 {
			return // done, or a cycle of references (Restore defers the checks)
		}
		state[l] = visiting
		for _, p := range parents[l] {
			if _, ok := byLower[p]; ok && p != l {
				visit(p)
			}
		}
		state[l] = done
		ordered = append(ordered, byLower[l])
	}
	for _, n := range names {
		visit(strings.ToLower(n))
	}
	return ordered, nil
}

// referencedTables are the tables that table's foreign keys refer to, in
// lower case and by name.
func referencedTables(ctx context.Context, tx *sql.Tx, table string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT "table" FROM pragma_foreign_key_list(?, 'main')`, table)
	if err != nil {
		return nil, fmt.Errorf("foreign keys of %s: %w", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("foreign keys of %s: %w", table, err)
		}
		out = append(out, strings.ToLower(p))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("foreign keys of %s: %w", table, err)
	}
	sort.Strings(out)
	return out, nil
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
