package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pop3Client is one POP3 connection (RFC 1939, STLS of RFC 2595).
type pop3Client struct {
	raw  net.Conn
	conn net.Conn
	br   *bufio.Reader
	stop func() bool
}

// dialPOP3 connects and reads the greeting, securing the connection as
// configured.
func (r *runner) dialPOP3(ctx context.Context) (*pop3Client, error) {
	raw, err := r.dial(ctx, r.o.POP3.Port)
	if err != nil {
		return nil, err
	}
	p := &pop3Client{raw: raw, conn: raw, stop: context.AfterFunc(ctx, func() { raw.Close() })}
	if err := p.setup(ctx, r); err != nil {
		p.stop()
		raw.Close()
		return nil, err
	}
	return p, nil
}

func (p *pop3Client) setup(ctx context.Context, r *runner) error {
	p.raw.SetDeadline(time.Now().Add(ioTimeout))
	if r.o.POP3.TLS == Implicit {
		tc := tls.Client(p.raw, r.o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		p.conn = tc
	}
	p.br = bufio.NewReaderSize(p.conn, 64<<10)
	if _, err := p.status(); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if r.o.POP3.TLS == StartTLS {
		if _, err := p.cmd("STLS"); err != nil {
			return err
		}
		tc := tls.Client(p.raw, r.o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		p.conn = tc
		p.br = bufio.NewReaderSize(p.conn, 64<<10)
	}
	return nil
}

// status reads a status line: the text after +OK, or an error with -ERR's.
func (p *pop3Client) status() (string, error) {
	line, err := p.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+OK"):
		return strings.TrimSpace(line[3:]), nil
	case strings.HasPrefix(line, "-ERR"):
		return "", fmt.Errorf("server said %q", line)
	}
	return "", fmt.Errorf("not a POP3 status line: %q", line)
}

// cmd sends one command line and reads the status line.
func (p *pop3Client) cmd(line string) (string, error) {
	p.raw.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := p.conn.Write([]byte(line + "\r\n")); err != nil {
		return "", err
	}
	verb, _, _ := strings.Cut(line, " ")
	st, err := p.status()
	if err != nil {
		return "", fmt.Errorf("%s: %w", verb, err)
	}
	return st, nil
}

// multiline reads a multi-line answer up to the "." line and returns its
// lines (with keep) or only counts its bytes.
func (p *pop3Client) multiline(keep bool) ([]string, int, error) {
	var lines []string
	n := 0
	partial := false
	for {
		line, err := p.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			n += len(line)
			partial = true
			continue
		}
		if err != nil {
			return nil, n, err
		}
		if !partial && (bytes.Equal(line, []byte(".\r\n")) || bytes.Equal(line, []byte(".\n"))) {
			return lines, n, nil
		}
		partial = false
		n += len(line)
		if keep {
			lines = append(lines, strings.TrimRight(string(line), "\r\n"))
		}
	}
}

func (p *pop3Client) close() {
	p.stop()
	p.raw.Close()
}

// maildropSize is STAT's message count.
func (r *runner) maildropSize(ctx context.Context, u User) (uint32, error) {
	p, err := r.dialPOP3(ctx)
	if err != nil {
		return 0, err
	}
	defer p.close()
	if _, err := p.cmd("USER " + u.Address); err != nil {
		return 0, err
	}
	if _, err := p.cmd("PASS " + u.Password); err != nil {
		return 0, fmt.Errorf("as %s: %w", u.Address, err)
	}
	st, err := p.cmd("STAT")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(st)
	if len(f) < 1 {
		return 0, fmt.Errorf("STAT answer %q", st)
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("STAT answer %q", st)
	}
	p.cmd("QUIT")
	return uint32(n), nil
}

// runPOP3: sessions of USER/PASS, STAT, UIDL, RETR…, QUIT.
func (r *runner) runPOP3(ctx context.Context, s *scenarioState) error {
	if err := r.fill(ctx, s, r.maildropSize); err != nil {
		return err
	}
	s.begin(ctx)
	var wg sync.WaitGroup
	for i := range r.o.Concurrency {
		wg.Go(func() {
			u := r.workerUser(i)
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			var bo backoff
			for s.more(ctx) {
				op, retrieved, err := r.pop3Session(ctx, s, u, rng)
				if err == nil {
					bo.reset()
					continue
				}
				s.fail(ctx, op, err)
				if retrieved == 0 {
					// No RETR was tried: use the budget anyway, so that a
					// server refusing everyone still ends a --count run.
					s.take(ctx)
					bo.wait(ctx)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// retrPerCountedSession is how many random messages a session retrieves
// in a --count run.
const retrPerCountedSession = 50

// pop3Session is one session; it returns the number of messages
// retrieved and, on failure, which op failed.
func (r *runner) pop3Session(ctx context.Context, s *scenarioState, u User, rng *rand.Rand) (op string, retrieved int, err error) {
	op, err = r.pop3Steps(ctx, s, u, rng, &retrieved)
	return op, retrieved, err
}

func (r *runner) pop3Steps(ctx context.Context, s *scenarioState, u User, rng *rand.Rand, retrieved *int) (string, error) {
	t0 := time.Now()
	p, err := r.dialPOP3(ctx)
	if err != nil {
		return "connect", err
	}
	defer p.close()
	t := time.Now()
	if _, err := p.cmd("USER " + u.Address); err != nil {
		return "login", err
	}
	if _, err := p.cmd("PASS " + u.Password); err != nil {
		return "login", fmt.Errorf("as %s: %w", u.Address, err)
	}
	s.record("login", time.Since(t))

	t = time.Now()
	st, err := p.cmd("STAT")
	if err != nil {
		return "stat", err
	}
	f := strings.Fields(st)
	if len(f) < 1 {
		return "stat", fmt.Errorf("STAT answer %q", st)
	}
	count, err := strconv.Atoi(f[0])
	if err != nil {
		return "stat", fmt.Errorf("STAT answer %q", st)
	}
	s.record("stat", time.Since(t))
	if count == 0 {
		return "stat", fmt.Errorf("the maildrop of %s is empty", u.Address)
	}

	t = time.Now()
	if _, err := p.cmd("UIDL"); err != nil {
		return "uidl", err
	}
	if _, _, err := p.multiline(false); err != nil {
		return "uidl", err
	}
	s.record("uidl", time.Since(t))

	// MailboxMessages messages in order, as a client downloading the
	// maildrop; in a --count run, 50 random ones.
	var plan []int
	if s.counted {
		for range min(retrPerCountedSession, count) {
			plan = append(plan, 1+rng.IntN(count))
		}
	} else {
		for i := 1; i <= min(count, r.o.MailboxMessages); i++ {
			plan = append(plan, i)
		}
	}
	for _, msg := range plan {
		if !s.take(ctx) {
			break
		}
		t = time.Now()
		if _, err := p.cmd("RETR " + strconv.Itoa(msg)); err != nil {
			return "retr", err
		}
		if _, _, err := p.multiline(false); err != nil {
			return "retr", err
		}
		s.record("retr", time.Since(t))
		*retrieved++
	}
	if _, err := p.cmd("QUIT"); err != nil {
		return "session", err
	}
	if *retrieved > 0 {
		s.record("session", time.Since(t0))
	}
	return "", nil
}
