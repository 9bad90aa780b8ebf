package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// dialIMAP connects as configured and logs in as u; handler, if not nil,
// gets the unilateral data. Cancelling ctx closes the connection.
func (r *runner) dialIMAP(ctx context.Context, u User, handler *imapclient.UnilateralDataHandler) (*imapclient.Client, func() bool, error) {
	opts := &imapclient.Options{TLSConfig: r.o.TLSConfig, UnilateralDataHandler: handler,
		Dialer: &net.Dialer{Timeout: 30 * time.Second}}
	addr := r.addr(r.o.IMAP.Port)
	var c *imapclient.Client
	var err error
	switch r.o.IMAP.TLS {
	case Implicit:
		c, err = imapclient.DialTLS(addr, opts)
	case StartTLS:
		c, err = imapclient.DialStartTLS(addr, opts)
	default:
		c, err = imapclient.DialInsecure(addr, opts)
	}
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	if err := c.Login(u.Address, u.Password).Wait(); err != nil {
		stop()
		c.Close()
		return nil, nil, fmt.Errorf("LOGIN as %s: %w", u.Address, err)
	}
	return c, stop, nil
}

// closeIMAP logs out (for at most 5 s) and closes.
func closeIMAP(c *imapclient.Client, stop func() bool) {
	stop()
	t := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer t.Stop()
	c.Logout().Wait()
	c.Close()
}

// fill makes sure every active user's INBOX holds MailboxMessages
// messages, as size counts them, sending the missing ones over SMTP (to
// self) and waiting for them to arrive (a server may deliver after the
// 250).
func (r *runner) fill(ctx context.Context, s *scenarioState, size func(context.Context, User) (uint32, error)) error {
	type job struct {
		u User
		n int
	}
	var jobs []job
	total := 0
	want := r.o.MailboxMessages
	for _, u := range r.activeUsers() {
		if r.filled[u.Address] {
			continue
		}
		n, err := size(ctx, u)
		if err != nil {
			return err
		}
		missing := want - int(n)
		if missing <= 0 {
			r.filled[u.Address] = true
			continue
		}
		// Split a user's share among the connections that user gets.
		conns := max(1, r.o.Concurrency/len(r.activeUsers()))
		for k := range conns {
			part := missing / conns
			if k < missing%conns {
				part++
			}
			if part > 0 {
				jobs = append(jobs, job{u, part})
			}
		}
		total += missing
	}
	if len(jobs) == 0 {
		return nil
	}
	var sent atomic.Int64
	var firstErr error
	var errOnce sync.Once
	sem := make(chan struct{}, r.o.Concurrency)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.con.status(fmt.Sprintf("bench %s [%s]: filling mailboxes to %d messages: %d/%d sent",
					s.name, r.o.Server, want, sent.Load(), total))
			}
		}
	})
	var senders sync.WaitGroup
	for i, j := range jobs {
		senders.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			err := r.sendMany(ctx, j.u, j.n, rng, &sent)
			if err != nil {
				errOnce.Do(func() { firstErr = err })
			}
		})
	}
	senders.Wait()
	close(done)
	wg.Wait()
	r.con.clear()
	if firstErr != nil {
		return fmt.Errorf("filling the mailboxes: %w", firstErr)
	}
	// Wait for the messages to be in the INBOX, as long as they keep
	// coming (a queue may take its time).
	for _, u := range r.activeUsers() {
		if r.filled[u.Address] {
			continue
		}
		last, progress := -1, time.Now()
		for {
			n, err := size(ctx, u)
			if err != nil {
				return err
			}
			if int(n) >= want {
				r.filled[u.Address] = true
				break
			}
			if int(n) > last {
				last, progress = int(n), time.Now()
			} else if time.Since(progress) > r.o.VisibleTimeout {
				return fmt.Errorf("%s: %d messages in the INBOX %s after the last one came, want %d", u.Address, n, r.o.VisibleTimeout, want)
			}
			r.con.status(fmt.Sprintf("bench %s [%s]: waiting for %s's INBOX to hold %d messages: %d", s.name, r.o.Server, u.Address, want, n))
			if !sleep(ctx, 200*time.Millisecond) {
				return ctx.Err()
			}
		}
	}
	r.con.clear()
	return nil
}

// sendMany sends n messages from u to u on one connection, retrying a
// failed message on a new connection a few times.
func (r *runner) sendMany(ctx context.Context, u User, n int, rng *rand.Rand, sent *atomic.Int64) error {
	var c *smtpClient
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	failures := 0
	for i := 0; i < n; {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c == nil {
			var err error
			if c, err = r.dialSMTP(ctx, u); err != nil {
				if failures++; failures > 3 {
					return err
				}
				sleep(ctx, 200*time.Millisecond)
				continue
			}
		}
		_, msg := r.message("fill", u.Address, u.Address, r.o.Sizes.Pick(rng))
		if err := c.send(u.Address, []string{u.Address}, msg); err != nil {
			c.close()
			c = nil
			if failures++; failures > 3 {
				return err
			}
			continue
		}
		sent.Add(1)
		i++
	}
	return nil
}

// inboxSize is STATUS INBOX (MESSAGES).
func (r *runner) inboxSize(ctx context.Context, u User) (uint32, error) {
	c, stop, err := r.dialIMAP(ctx, u, nil)
	if err != nil {
		return 0, err
	}
	defer closeIMAP(c, stop)
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		return 0, fmt.Errorf("STATUS INBOX of %s: %w", u.Address, err)
	}
	if st.NumMessages == nil {
		return 0, errors.New("STATUS INBOX: no MESSAGES in the answer")
	}
	return *st.NumMessages, nil
}

// runIMAP: every worker loops over a mix of commands on its user's INBOX.
func (r *runner) runIMAP(ctx context.Context, s *scenarioState) error {
	if err := r.fill(ctx, s, r.inboxSize); err != nil {
		return err
	}
	s.begin(ctx)
	var wg sync.WaitGroup
	for i := range r.o.Concurrency {
		wg.Go(func() { r.imapWorker(ctx, s, i) })
	}
	wg.Wait()
	return nil
}

// imapSteps is one worker loop; every step is one command.
var imapSteps = []string{"select", "fetch_envelope", "fetch_body", "search", "store", "store"}

func (r *runner) imapWorker(ctx context.Context, s *scenarioState, i int) {
	u := r.workerUser(i)
	rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	var (
		c     *imapclient.Client
		stop  func() bool
		bo    backoff
		n     uint32 // messages in the INBOX, from SELECT
		step  int
		flags imap.SeqSet // the messages STORE +FLAGS touched, for -FLAGS
	)
	defer func() {
		if c != nil {
			closeIMAP(c, stop)
		}
	}()
	for s.take(ctx) {
		if c == nil {
			var err error
			if c, stop, err = r.dialIMAP(ctx, u, nil); err != nil {
				s.fail(ctx, "connect", err)
				bo.wait(ctx)
				continue
			}
			bo.reset()
			step = 0 // a new connection starts with SELECT
		}
		op := imapSteps[step%len(imapSteps)]
		store := step % len(imapSteps) // the first or second STORE
		step++
		if n == 0 && op != "select" {
			step = 0 // an empty INBOX: nothing to do but SELECT again
			op = "select"
		}
		t0 := time.Now()
		var err error
		switch op {
		case "select":
			var sel *imap.SelectData
			if sel, err = c.Select("INBOX", nil).Wait(); err == nil {
				n = sel.NumMessages
			}
		case "fetch_envelope":
			first := uint32(1)
			if n > 50 {
				first = 1 + rng.Uint32N(n-49)
			}
			var set imap.SeqSet
			set.AddRange(first, min(first+49, n))
			_, err = c.Fetch(set, &imap.FetchOptions{Flags: true, Envelope: true, RFC822Size: true}).Collect()
		case "fetch_body":
			_, err = c.Fetch(randomSeqs(rng, n, 5), &imap.FetchOptions{
				BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		case "search":
			var crit imap.SearchCriteria
			switch rng.IntN(3) {
			case 0:
				crit.Header = []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: fmt.Sprintf("-%d", 1+rng.IntN(1000))}}
			case 1:
				crit.Header = []imap.SearchCriteriaHeaderField{{Key: "From", Value: u.Address}}
			default:
				crit.NotFlag = []imap.Flag{imap.FlagSeen}
			}
			_, err = c.UIDSearch(&crit, nil).Wait()
		case "store":
			sf := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}
			if store == 4 || len(flags) == 0 {
				flags = randomSeqs(rng, n, 3)
			} else {
				sf.Op = imap.StoreFlagsDel
			}
			err = c.Store(flags, sf, nil).Close()
			if sf.Op == imap.StoreFlagsDel {
				flags = nil
			}
		}
		if err != nil {
			s.fail(ctx, op, err)
			closeIMAP(c, stop)
			c, n = nil, 0
			continue
		}
		s.record(op, time.Since(t0))
	}
}

// randomSeqs is k distinct random sequence numbers in 1..n (all of them
// when n ≤ k).
func randomSeqs(rng *rand.Rand, n uint32, k int) imap.SeqSet {
	var set imap.SeqSet
	if n <= uint32(k) {
		set.AddRange(1, n)
		return set
	}
	picked := map[uint32]bool{}
	for len(picked) < k {
		picked[1+rng.Uint32N(n)] = true
	}
	for seq := range picked {
		set.AddNum(seq)
	}
	return set
}
