package storage

import "sync"

// Change tells a watcher that something in one folder of one mailbox
// changed (a message arrived, flags or the message set changed). FolderID is
// 0 when the folder list itself changed.
type Change struct {
	MailboxID int64
	FolderID  int64
}

// hub fans changes out to the IMAP sessions idling on a mailbox, and to
// the queue runner. Sends never block the applier: each watcher has a
// one-slot buffer and a full buffer already means "look again".
type hub struct {
	mu       sync.Mutex
	next     int
	watchers map[int64]map[int]chan Change
}

func newHub() hub { return hub{watchers: map[int64]map[int]chan Change{}} }

// Watch returns a channel that receives a value after each committed change
// to mailboxID, and a function that stops watching.
func (s *Store) Watch(mailboxID int64) (<-chan Change, func()) {
	h := &s.hub
	ch := make(chan Change, 1)
	h.mu.Lock()
	h.next++
	id := h.next
	if h.watchers[mailboxID] == nil {
		h.watchers[mailboxID] = map[int]chan Change{}
	}
	h.watchers[mailboxID][id] = ch
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers[mailboxID], id)
		if len(h.watchers[mailboxID]) == 0 {
			delete(h.watchers, mailboxID)
		}
		h.mu.Unlock()
	}
}

// queueKey is the hub's key for the outbound queue: no mailbox has it
// (mailbox IDs are SQLite row IDs, from 1).
const queueKey = -1

// WatchQueue returns a channel that receives a value after each committed
// command that put items on the outbound queue (a Deliver with Outbound,
// a bounce carried by a queue command) and after a snapshot restore, and a
// function that stops watching. The queue runner of whichever node leads
// learns so of a message accepted on any node.
func (s *Store) WatchQueue() (<-chan Change, func()) { return s.Watch(queueKey) }

func (h *hub) publish(changes []Change) {
	if len(changes) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range changes {
		for _, ch := range h.watchers[c.MailboxID] {
			select {
			case ch <- c:
			default:
			}
		}
	}
}

func (h *hub) publishAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for mb, ws := range h.watchers {
		for _, ch := range ws {
			select {
			case ch <- Change{MailboxID: mb}:
			default:
			}
		}
	}
}
