// Package pop3d is the appliance's POP3 server: RFC 1939 with the CAPA
// extension mechanism (RFC 2449), STLS (RFC 2595) and SASL AUTH (RFC 5034,
// mechanism PLAIN only).
//
// It serves one mailbox per user, the INBOX, through the Backend and
// Maildrop interfaces defined here; it knows nothing about how mail is
// stored or how passwords are checked. Deletions requested with DELE are
// applied only when the client ends the session with QUIT (the UPDATE
// state); a dropped or timed-out connection deletes nothing. While the node
// is not ready (Server.Ready), DELE and such a QUIT answer -ERR [SYS/TEMP]
// and delete nothing; reading goes on.
//
// Authentication is refused on a cleartext connection: on the plain port a
// client must issue STLS first, and CAPA advertises USER and SASL only once
// the connection is protected. Repeated failures from one host are slowed
// down by the shared authlimit.Limiter.
//
// Time limits: before login, the TLS handshake and each command line must
// come within Server.LoginTimeout (30 s); once logged in, the inactivity
// timer is Server.IdleTimeout (10 minutes, RFC 1939 section 3). A client
// out of time is told "-ERR Disconnected for inactivity" and disconnected.
//
// It is not a POP3 client, not a proxy, and does not implement APOP, the
// deprecated LAST command, SASL mechanisms other than PLAIN, or the UTF8 and
// LANG extensions (RFC 6856). It does not lock the maildrop: two sessions on
// one account see their own snapshot, and a message deleted by one is
// reported as gone to the other when it asks for it.
package pop3d
