package pop3d

import (
	"context"
	"errors"
	"io"
)

// ErrAuthFailed is returned by Backend.Login when the user name or the
// password is wrong. Any other error from Login is a temporary failure.
var ErrAuthFailed = errors.New("pop3d: authentication failed")

// ErrNoSuchMessage may be returned by Maildrop.Open when the message has
// been removed since the session started (by another session, say). The
// client is then told the message is gone rather than the server failing.
var ErrNoSuchMessage = errors.New("pop3d: no such message")

// Backend authenticates users and opens their maildrop (the INBOX).
type Backend interface {
	// Login checks credentials. It returns ErrAuthFailed (possibly
	// wrapped) for a wrong user name or password; any other error is a
	// temporary failure and is answered with -ERR [SYS/TEMP].
	Login(ctx context.Context, username, password string) (Maildrop, error)
}

// Maildrop is one user's INBOX for the length of one POP3 session. The
// server calls Close exactly once, whether or not the session ended with
// QUIT.
type Maildrop interface {
	// Messages lists the messages of the INBOX at the moment the session
	// enters the TRANSACTION state, oldest first. Message numbers in the
	// session are positions in this list, counted from 1.
	Messages(ctx context.Context) ([]Message, error)
	// Open returns the full RFC 5322 content of a message. Line endings
	// may be CRLF or bare LF; the server sends CRLF either way.
	Open(ctx context.Context, uid string) (io.ReadCloser, error)
	// Delete removes messages. It is called at most once, at QUIT, with
	// the UIDs of the messages marked with DELE.
	Delete(ctx context.Context, uids []string) error
	// Close releases the maildrop.
	Close() error
}

// Message describes one message of a maildrop.
type Message struct {
	// UID is stable and unique within the maildrop; it is what UIDL
	// reports. A UID that is not 1 to 70 printable ASCII characters
	// (0x21-0x7E, RFC 1939) is replaced in UIDL output by a stable
	// digest of itself.
	UID string
	// Size is reported as is in STAT, LIST and the RETR response. RFC 1939
	// wants the size as sent, with CRLF line endings and before dot
	// stuffing, so a backend storing messages with bare LF should count
	// each LF as two octets. The server does not read messages to check.
	Size int64
}

// SeenMarker is a Maildrop that records which messages a client retrieved
// whole (RETR) and kept, at QUIT, so they show as read elsewhere (IMAP).
type SeenMarker interface {
	MarkSeen(ctx context.Context, uids []string) error
}
