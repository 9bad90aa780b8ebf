package smtpd

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/emersion/go-smtp"
)

// A change of max_message_bytes at run time (`sigillo settings set`)
// reaches new connections: go-smtp reads its server's MaxMessageBytes
// without a lock (EHLO's SIZE, MAIL's SIZE=, the DATA reader), so the
// value of one go-smtp server is never changed. Instead each listener
// hands every connection it accepts to the go-smtp server made for the
// limit in force at that moment, making one when the limit is new. A
// session keeps the limit it was greeted with, as a Postfix smtpd process
// keeps the configuration it started with.

// maxBytesNow is the limit for a connection accepted now.
func (s *Server) maxBytesNow() int64 {
	if s.MaxMessageBytesNow != nil {
		if v := s.MaxMessageBytesNow(); v > 0 {
			return v
		}
	}
	return s.maxBytes()
}

// byLimit dispatches one listener's connections to go-smtp servers by
// message size limit.
type byLimit struct {
	srv   *Server
	mode  Mode
	make  func(limit int64) *smtp.Server
	addr  net.Addr // the listener's, which go-smtp may ask its listener for
	wg    sync.WaitGroup
	mu    sync.Mutex
	lns   map[int64]*handOff
	errMu sync.Mutex
	err   error // the first error a go-smtp server's Serve returned
}

// serve accepts on ln until it is closed, then closes the hand-offs and
// waits for the go-smtp servers' Serve to return (go-smtp's Shutdown, run
// by Server.Shutdown, waits for their sessions).
func (b *byLimit) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			b.wait()
			b.errMu.Lock()
			defer b.errMu.Unlock()
			return errors.Join(err, b.err)
		}
		h, ok := b.handOffFor(b.srv.maxBytesNow())
		if !ok {
			c.Close()
			continue
		}
		if !h.give(c) {
			c.Close()
		}
	}
}

// handOffFor is the hand-off of the go-smtp server for limit, made (and
// registered with the Server for Shutdown) on first use. It is false when
// the Server is shutting down.
func (b *byLimit) handOffFor(limit int64) (*handOff, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h := b.lns[limit]; h != nil {
		return h, true
	}
	inner := b.make(limit)
	s := b.srv
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, false
	}
	s.inners = append(s.inners, inner)
	s.mu.Unlock()
	h := newHandOff(b.addr)
	if b.lns == nil {
		b.lns = map[int64]*handOff{}
	}
	b.lns[limit] = h
	if len(b.lns) > 1 {
		s.logger().Info("new SMTP sessions take a new message size limit", "mode", b.mode.String(), "max_message_bytes", limit)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := inner.Serve(h); err != nil && !errors.Is(err, net.ErrClosed) {
			b.errMu.Lock()
			if b.err == nil {
				b.err = fmt.Errorf("limit %d: %w", limit, err)
			}
			b.errMu.Unlock()
		}
	}()
	return h, true
}

func (b *byLimit) wait() {
	b.mu.Lock()
	for _, h := range b.lns {
		h.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// handOff is a net.Listener whose connections are given to it by byLimit.
type handOff struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newHandOff(addr net.Addr) *handOff {
	return &handOff{conns: make(chan net.Conn), closed: make(chan struct{}), addr: addr}
}

// give hands c to the go-smtp server's Accept; false once closed.
func (h *handOff) give(c net.Conn) bool {
	select {
	case h.conns <- c:
		return true
	case <-h.closed:
		return false
	}
}

func (h *handOff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

func (h *handOff) Close() error {
	h.once.Do(func() { close(h.closed) })
	return nil
}

func (h *handOff) Addr() net.Addr { return h.addr }
