package storage

// migrations are applied in order; the database's user_version is the
// number of migrations applied. Never edit a migration that has shipped:
// add a new one.
var migrations = []string{
	// 1: domains, mailboxes, folders, content-addressed blobs, messages,
	// outbound queue and a small key/value table for replicated secrets
	// (the local CA, later ACME certificates).
	`
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
);
CREATE TABLE domains (
	id         INTEGER PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
CREATE TABLE mailboxes (
	id            INTEGER PRIMARY KEY,
	domain_id     INTEGER NOT NULL REFERENCES domains(id),
	address       TEXT NOT NULL UNIQUE,
	password_hash TEXT NOT NULL,
	quota_bytes   INTEGER NOT NULL DEFAULT 0,
	used_bytes    INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL
);
CREATE INDEX mailboxes_domain ON mailboxes(domain_id);
CREATE TABLE folders (
	id            INTEGER PRIMARY KEY,
	mailbox_id    INTEGER NOT NULL REFERENCES mailboxes(id),
	name          TEXT NOT NULL,
	special_use   TEXT NOT NULL DEFAULT '',
	subscribed    INTEGER NOT NULL DEFAULT 1,
	uidvalidity   INTEGER NOT NULL,
	uidnext       INTEGER NOT NULL DEFAULT 1,
	highestmodseq INTEGER NOT NULL DEFAULT 1,
	UNIQUE (mailbox_id, name)
);
CREATE TABLE blobs (
	sha256 TEXT PRIMARY KEY,
	data   BLOB NOT NULL,
	refs   INTEGER NOT NULL
);
CREATE TABLE messages (
	id            INTEGER PRIMARY KEY,
	folder_id     INTEGER NOT NULL REFERENCES folders(id),
	uid           INTEGER NOT NULL,
	sha256        TEXT NOT NULL REFERENCES blobs(sha256),
	size          INTEGER NOT NULL,
	internal_date INTEGER NOT NULL,
	flags         TEXT NOT NULL DEFAULT '',
	modseq        INTEGER NOT NULL,
	UNIQUE (folder_id, uid)
);
CREATE TABLE queue (
	id           TEXT PRIMARY KEY,
	sender       TEXT NOT NULL,
	recipients   TEXT NOT NULL,
	sha256       TEXT NOT NULL REFERENCES blobs(sha256),
	size         INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	next_attempt INTEGER NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	last_error   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX queue_due ON queue(next_attempt);
CREATE TABLE kv (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
`,
	// 2: a domain can be run as a PEC (certified mail) domain.
	`ALTER TABLE domains ADD COLUMN pec INTEGER NOT NULL DEFAULT 0;`,
	pecLogSchema,      // 3: the PEC legal log and its signed heads (peclog.go)
	pecTrackSchema,    // 4: TLS-only queue items, tracking of sent bustas (pecbatch.go)
	virusStoreSchema,  // 5: infected messages kept apart (virusstore.go)
	pecReceivedSchema, // 6: bustas taken in charge, against duplicates (pecbatch.go)
	// 7: the changes of a folder since a modseq (IMAP sessions catching
	// up after each command) without reading the whole folder.
	`CREATE INDEX messages_modseq ON messages(folder_id, modseq);`,
	pecTrackDetailSchema, // 8: the busta's recipients and Reply-To for the notices (pecbatch.go)
	ftsSchema,            // 9: the text of message content and its full-text index (fts.go)
	textPendingSchema,    // 10: content waiting for the indexer, off the apply path (fts.go)
	deliveredSchema,      // 11: deliveries remembered for a day, against a client's retry (dedupe.go)
}
