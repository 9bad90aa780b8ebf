// Package peclog is the tamper-evident legal log of the PEC gestore
// (PEC.md §7, DPR 68/2005 art. 11): the entry format, its canonical
// encoding, the SHA-256 hash chain that links every entry to the previous
// one, the chain heads signed with the gestore key (at least daily), the
// verification of the whole chain and the 30-month retention boundary.
//
// It is not the storage: package storage, its parent, persists entries and
// heads through raft commands, and everything here that such a command runs is
// deterministic given its inputs (times are chosen by the proposer and carried
// in the entry; no function reads the clock or a random source, except
// SignHead, whose result the proposer computes once and carries in the
// command). It is not the search UI either.
//
// # Canonical encoding (version 1)
//
// Canonical(e) is the byte string an entry's Hash is computed over
// (Hash = SHA-256(Canonical(e))). Integers are big-endian; a "string" or
// "bytes" is a uint32 length followed by that many raw bytes (strings are
// hashed as given, without Unicode normalisation); a "list" is a uint32
// element count followed by each element as a string. Fields, in this fixed
// order:
//
//	uint8   0x01                    version
//	string  "sigillo-peclog-entry"  domain tag
//	uint64  Seq
//	int64   Time as Unix milliseconds (UTC; finer precision is dropped)
//	string  Event
//	string  MsgID
//	list    RelatedIDs
//	string  Sender
//	list    Recipients
//	string  Subject
//	string  Gestore
//	string  Detail
//	bytes   PrevHash
//
// Every field is length-prefixed, so no two entries that differ in any field
// share an encoding (moving a character from Sender to Subject changes two
// length prefixes). A nil and an empty list encode alike, as do time.Time
// values denoting the same millisecond.
//
// CanonicalHead(h) is what a head's signature covers, the same way:
//
//	uint8   0x01                    version
//	string  "sigillo-peclog-head"   domain tag
//	uint64  Seq
//	bytes   Hash
//	int64   Time as Unix milliseconds
//
// The signature is over SHA-256(CanonicalHead(h)): RSA PKCS #1 v1.5 with
// SHA-256, or ECDSA (ASN.1 DER signature), as the gestore key allows. The
// domain tags keep a head signature from being mistaken for any other
// signature made with the same key (the gestore key also signs S/MIME).
package peclog

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// Event is the type of a logged PEC operation (PEC.md §7; the names follow
// the events of the CNIPA/DigitPA audit tool, lower-cased and hyphenated).
type Event string

// The §7 events.
const (
	// EventAccettazione: the access point accepted a message and emitted the
	// ricevuta di accettazione.
	EventAccettazione Event = "accettazione"
	// EventNonAccettazione: the access point refused a message (formal
	// checks) and emitted the avviso di non accettazione.
	EventNonAccettazione Event = "non-accettazione"
	// EventNonAccettazioneVirus: refused at the access point because it
	// carried a virus.
	EventNonAccettazioneVirus Event = "non-accettazione-virus"
	// EventBustaTrasporto: the busta di trasporto was emitted (sent to the
	// recipients' gestori or delivery point).
	EventBustaTrasporto Event = "busta-trasporto"
	// EventPresaInCarico: the reception point took charge of a busta and
	// emitted the ricevuta di presa in carico (or received one).
	EventPresaInCarico Event = "presa-in-carico"
	// EventBustaAnomalia: the reception point wrapped a non-PEC or
	// unverifiable message in a busta di anomalia.
	EventBustaAnomalia Event = "busta-anomalia"
	// EventRilevazioneVirus: the reception point found a virus and emitted
	// the avviso di rilevazione virus.
	EventRilevazioneVirus Event = "rilevazione-virus"
	// EventConsegna: the delivery point stored the message and emitted the
	// ricevuta di avvenuta consegna.
	EventConsegna Event = "consegna"
	// EventMancataConsegna: the delivery point could not deliver (unknown
	// user, quota, …) and emitted the avviso di mancata consegna.
	EventMancataConsegna Event = "mancata-consegna"
	// EventMancataConsegnaVirus: not delivered because of a virus.
	EventMancataConsegnaVirus Event = "mancata-consegna-virus"
	// EventPreavvisoMancataConsegna: 12 h without presa in carico nor
	// consegna; the preavviso was emitted.
	EventPreavvisoMancataConsegna Event = "preavviso-mancata-consegna"
	// EventMancataConsegnaTimeout: 24 h without consegna; the final avviso
	// di mancata consegna per superamento dei tempi massimi was emitted.
	EventMancataConsegnaTimeout Event = "mancata-consegna-24h"
)

// Events lists the known events, in the order of a message's life.
func Events() []Event {
	return []Event{
		EventAccettazione, EventNonAccettazione, EventNonAccettazioneVirus,
		EventBustaTrasporto, EventPresaInCarico, EventBustaAnomalia,
		EventRilevazioneVirus, EventConsegna, EventMancataConsegna,
		EventMancataConsegnaVirus, EventPreavvisoMancataConsegna,
		EventMancataConsegnaTimeout,
	}
}

// Known reports whether e is one of the events of Events. Verification does
// not require it (an unknown event in a well-linked chain is still intact).
func (e Event) Known() bool {
	for _, k := range Events() {
		if e == k {
			return true
		}
	}
	return false
}

// Entry is one record of the legal log.
type Entry struct {
	Seq        uint64    // 1, 2, 3 ...
	Time       time.Time // chosen by the proposer (UTC, ms precision)
	Event      Event
	MsgID      string   // the PEC identificativo
	RelatedIDs []string // e.g. the original msgid, the user's Message-ID
	Sender     string
	Recipients []string
	Subject    string
	Gestore    string // sending gestore
	Detail     string // free text (error reason)
	PrevHash   []byte // hash of the previous entry (32 zero bytes for Seq 1)
	Hash       []byte // SHA-256 over Canonical(e): every field above except Hash
}

// Head is a signed chain head: the gestore's signature, at Time, over the
// Seq and Hash of the newest entry then.
type Head struct {
	Seq       uint64
	Hash      []byte
	Time      time.Time
	Signature []byte
	// Certificate is the DER of the signer certificate, optionally followed
	// by the DER of intermediate CA certificates (as x509.ParseCertificates
	// reads them).
	Certificate []byte
}

const (
	version   = 1
	entryTag  = "sigillo-peclog-entry"
	headTag   = "sigillo-peclog-head"
	hashBytes = sha256.Size
)

// ZeroHash returns the PrevHash of the entry with Seq 1: 32 zero bytes.
func ZeroHash() []byte { return make([]byte, hashBytes) }

type enc struct{ b []byte }

func (w *enc) u8(v byte)    { w.b = append(w.b, v) }
func (w *enc) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *enc) u32(v int)    { w.b = binary.BigEndian.AppendUint32(w.b, uint32(v)) }
func (w *enc) str(s string) { w.u32(len(s)); w.b = append(w.b, s...) }
func (w *enc) bytes(p []byte) {
	w.u32(len(p))
	w.b = append(w.b, p...)
}
func (w *enc) list(l []string) {
	w.u32(len(l))
	for _, s := range l {
		w.str(s)
	}
}
func (w *enc) time(t time.Time) { w.u64(uint64(t.UnixMilli())) }

// Canonical returns the version-1 canonical encoding of e, every field but
// Hash (see the package documentation).
func Canonical(e Entry) []byte {
	n := 64 + len(entryTag) + len(e.Event) + len(e.MsgID) + len(e.Sender) + len(e.Subject) +
		len(e.Gestore) + len(e.Detail) + len(e.PrevHash)
	for _, s := range e.RelatedIDs {
		n += 4 + len(s)
	}
	for _, s := range e.Recipients {
		n += 4 + len(s)
	}
	w := enc{b: make([]byte, 0, n)}
	w.u8(version)
	w.str(entryTag)
	w.u64(e.Seq)
	w.time(e.Time)
	w.str(string(e.Event))
	w.str(e.MsgID)
	w.list(e.RelatedIDs)
	w.str(e.Sender)
	w.list(e.Recipients)
	w.str(e.Subject)
	w.str(e.Gestore)
	w.str(e.Detail)
	w.bytes(e.PrevHash)
	return w.b
}

// HashEntry returns SHA-256(Canonical(e)), what e.Hash must be.
func HashEntry(e Entry) []byte {
	h := sha256.Sum256(Canonical(e))
	return h[:]
}

// CanonicalHead returns the version-1 canonical encoding of the signed part
// of h: Seq, Hash and Time (see the package documentation).
func CanonicalHead(h Head) []byte {
	w := enc{b: make([]byte, 0, 40+len(headTag)+len(h.Hash))}
	w.u8(version)
	w.str(headTag)
	w.u64(h.Seq)
	w.bytes(h.Hash)
	w.time(h.Time)
	return w.b
}

// msTime is t in UTC, truncated to the millisecond, without a monotonic
// reading: what survives the canonical encoding.
func msTime(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// Next returns e chained after prev (nil when e is the first entry of the
// log): Seq is prev.Seq+1 (or 1), PrevHash a copy of prev.Hash (or ZeroHash),
// Time normalised to UTC milliseconds, and Hash computed. The slices of e are
// copied, so the result shares no memory with e or prev. Next is
// deterministic: it reads no clock.
func Next(prev *Entry, e Entry) Entry {
	if prev == nil {
		e.Seq = 1
		e.PrevHash = ZeroHash()
	} else {
		e.Seq = prev.Seq + 1
		e.PrevHash = clone(prev.Hash)
	}
	e.Time = msTime(e.Time)
	e.RelatedIDs = cloneStrings(e.RelatedIDs)
	e.Recipients = cloneStrings(e.Recipients)
	e.Hash = HashEntry(e)
	return e
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func cloneStrings(l []string) []string {
	if l == nil {
		return nil
	}
	return append(make([]string, 0, len(l)), l...)
}
