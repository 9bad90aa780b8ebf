package storage

import (
	"context"
	"fmt"
)

// Read queries used by the IMAP front end (appliance/imapd) beyond the
// general ones in queries.go.

// FolderUIDs lists the UIDs of a folder's messages in ascending order. It
// reads only the (folder_id, uid) index, so an IMAP session can compare its
// view of a large folder with the store cheaply.
func (s *Store) FolderUIDs(ctx context.Context, folderID int64) ([]uint32, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT uid FROM messages WHERE folder_id=? ORDER BY uid", folderID)
	if err != nil {
		return nil, fmt.Errorf("list uids of folder %d: %w", folderID, err)
	}
	defer rows.Close()
	var out []uint32
	for rows.Next() {
		var u uint32
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("list uids of folder %d: %w", folderID, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list uids of folder %d: %w", folderID, err)
	}
	return out, nil
}
