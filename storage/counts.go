package storage

import (
	"context"
	"fmt"
)

// Counts is how many domains, mailboxes and messages the state holds, keyed
// "domains", "mailboxes" and "messages": the figures a backup's manifest
// records and a verified restore must find again.
func (s *Store) Counts(ctx context.Context) (map[string]int64, error) {
	counts := make(map[string]int64, 3)
	for _, table := range []string{"domains", "mailboxes", "messages"} {
		var n int64
		if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", table, err)
		}
		counts[table] = n
	}
	return counts, nil
}
