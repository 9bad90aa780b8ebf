package loadgen

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/smtp"
	"strconv"
	"sync"
	"time"
)

const (
	// ioTimeout bounds every exchange with a server (one message, one
	// command), so a server that stops answering costs an error, not a
	// stuck worker.
	ioTimeout = 60 * time.Second
	// helloName is the EHLO name: a syntactically valid FQDN that is
	// nobody's.
	helloName = "loadgen.invalid"
)

func (r *runner) addr(port int) string { return net.JoinHostPort(r.o.Host, strconv.Itoa(port)) }

func (r *runner) dial(ctx context.Context, port int) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	return d.DialContext(ctx, "tcp", r.addr(port))
}

// smtpClient is one submission connection.
type smtpClient struct {
	raw  net.Conn
	c    *smtp.Client
	stop func() bool
}

// dialSMTP connects, says EHLO, secures the connection as configured and
// authenticates as u with AUTH PLAIN when the server offers AUTH.
func (r *runner) dialSMTP(ctx context.Context, u User) (*smtpClient, error) {
	raw, err := r.dial(ctx, r.o.SMTP.Port)
	if err != nil {
		return nil, err
	}
	sc := &smtpClient{raw: raw, stop: context.AfterFunc(ctx, func() { raw.Close() })}
	if err := sc.setup(ctx, r, u); err != nil {
		sc.stop()
		raw.Close()
		return nil, err
	}
	return sc, nil
}

func (sc *smtpClient) setup(ctx context.Context, r *runner, u User) error {
	sc.raw.SetDeadline(time.Now().Add(ioTimeout))
	conn := sc.raw
	if r.o.SMTP.TLS == Implicit {
		tc := tls.Client(conn, r.o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, r.o.Host)
	if err != nil {
		return err
	}
	sc.c = c
	if err := c.Hello(helloName); err != nil {
		return err
	}
	if r.o.SMTP.TLS == StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("the server does not offer STARTTLS")
		}
		if err := c.StartTLS(r.o.TLSConfig); err != nil {
			return err
		}
	}
	if ok, _ := c.Extension("AUTH"); ok {
		if err := c.Auth(plainAuth{u}); err != nil {
			return fmt.Errorf("AUTH PLAIN as %s: %w", u.Address, err)
		}
	}
	return nil
}

// send submits one message.
func (sc *smtpClient) send(from string, to []string, msg []byte) error {
	sc.raw.SetDeadline(time.Now().Add(ioTimeout))
	if err := sc.c.Mail(from); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := sc.c.Rcpt(rcpt); err != nil {
			return err
		}
	}
	w, err := sc.c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// close says QUIT (briefly) and closes.
func (sc *smtpClient) close() {
	sc.stop()
	sc.raw.SetDeadline(time.Now().Add(5 * time.Second))
	sc.c.Quit()
	sc.raw.Close()
}

// plainAuth is SASL PLAIN. Unlike smtp.PlainAuth it does not refuse a
// plaintext connection: with --smtp-tls none that is what was asked for.
type plainAuth struct{ u User }

func (a plainAuth) Start(*smtp.ServerInfo) (string, []byte, error) {
	return "PLAIN", []byte("\x00" + a.u.Address + "\x00" + a.u.Password), nil
}

func (a plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge during AUTH PLAIN")
	}
	return nil, nil
}

// message makes a text/plain message of about size bytes (within one
// line) whose Subject is "loadgen KIND RUN-N", unique to the run; it
// returns that subject too.
func (r *runner) message(kind, from, to string, size int) (string, []byte) {
	n := r.seq.Add(1)
	subject := fmt.Sprintf("loadgen %s %s-%d", kind, r.runID, n)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s.%d@%s>\r\nDate: %s\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		from, to, subject, r.runID, n, helloName, time.Now().Format(time.RFC1123Z))
	lines := max((size-b.Len())/fillerLine, 1)
	b.Write(filler(lines))
	return subject, b.Bytes()
}

// fillerLine is the length of a body line with its CRLF.
const fillerLine = 78

var (
	fillerMu  sync.Mutex
	fillerBuf []byte
)

// filler is n lines of 76 pseudo-random letters: text that does not
// compress to nothing, the same in every run.
func filler(n int) []byte {
	fillerMu.Lock()
	defer fillerMu.Unlock()
	if need := n * fillerLine; len(fillerBuf) < need {
		rng := rand.New(rand.NewPCG(1, 2))
		const letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"
		buf := make([]byte, 0, need)
		for len(buf) < need {
			for range fillerLine - 2 {
				buf = append(buf, letters[rng.IntN(len(letters))])
			}
			buf = append(buf, '\r', '\n')
		}
		fillerBuf = buf
	}
	return fillerBuf[:n*fillerLine]
}

// runSMTP: each worker keeps one connection and sends from its user to
// its user.
func (r *runner) runSMTP(ctx context.Context, s *scenarioState) error {
	s.begin(ctx)
	var wg sync.WaitGroup
	for i := range r.o.Concurrency {
		wg.Go(func() { r.smtpWorker(ctx, s, i) })
	}
	wg.Wait()
	return nil
}

func (r *runner) smtpWorker(ctx context.Context, s *scenarioState, i int) {
	u := r.workerUser(i)
	r.submitLoop(ctx, s, i, u, u.Address, "smtp", submitHooks{})
}

// submitHooks let a scenario follow each message of submitLoop: before it
// is sent, when its sending failed, and once it is acknowledged.
type submitHooks struct {
	before func(subject string)
	failed func(subject string)
	sent   func(subject string, acked time.Time)
}

// submitLoop is worker i's loop while s has work: keep one authenticated
// connection as u (reconnecting with backoff), send a message of kind to
// rcpt, and record the latency of its 250.
func (r *runner) submitLoop(ctx context.Context, s *scenarioState, i int, u User, rcpt, kind string, h submitHooks) {
	rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	var c *smtpClient
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	var bo backoff
	for s.take(ctx) {
		if c == nil {
			var err error
			if c, err = r.dialSMTP(ctx, u); err != nil {
				s.fail(ctx, "connect", err)
				bo.wait(ctx)
				continue
			}
			bo.reset()
		}
		subject, msg := r.message(kind, u.Address, rcpt, r.o.Sizes.Pick(rng))
		if h.before != nil {
			h.before(subject)
		}
		t0 := time.Now()
		if err := c.send(u.Address, []string{rcpt}, msg); err != nil {
			if h.failed != nil {
				h.failed(subject)
			}
			s.fail(ctx, "submit", err)
			c.close()
			c = nil
			continue
		}
		acked := time.Now()
		s.record("submit", acked.Sub(t0))
		if h.sent != nil {
			h.sent(subject, acked)
		}
	}
}
