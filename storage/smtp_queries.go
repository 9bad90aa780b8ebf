package storage

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// QueueNextAttempt reports when the earliest item of the outbound queue is
// due; ok is false when the queue is empty. The queue runner sleeps until
// then instead of listing the whole queue.
func (s *Store) QueueNextAttempt(ctx context.Context) (next time.Time, ok bool, err error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT min(next_attempt) FROM queue").Scan(&v); err != nil {
		return time.Time{}, false, fmt.Errorf("queue next attempt: %w", err)
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return time.Unix(v.Int64, 0).UTC(), true, nil
}
