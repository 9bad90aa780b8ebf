// Package scan is Sigillo's virus scanner: a client of ClamAV's daemon,
// clamd, through github.com/dutchcoders/go-clamd. A message is streamed to
// clamd (INSTREAM) with a time limit; each scan has its own connection, at
// most Concurrency of them at once, so scanning does not serialise
// deliveries while clamd's threads are not oversubscribed.
//
// When clamd cannot give a verdict (down, timing out, an error reply) and
// scanning is Required, Scan returns an error wrapping ErrUnavailable and
// the caller answers with a temporary failure: nothing is accepted
// unscanned. When it is not required, the verdict says Skipped and why,
// and the caller marks the message (X-Sigillo-Scan: skipped). A message
// larger than MaxScanBytes is not sent to clamd at all (clamd would refuse
// it past its StreamMaxLength): it is Skipped, as clamav-milter passes mail
// over its MaxFileSize.
//
// It is not a mail filter by itself: what an infected message causes (a
// 554, an avviso di non accettazione per virus, a rilevazione virus, the
// virus store) is decided at the call sites, in smtpd and pec. It does not
// update signatures (freshclam does, next to clamd).
package scan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dutchcoders/go-clamd"
)

// Defaults.
const (
	DefaultTimeout      = 60 * time.Second
	DefaultConcurrency  = 8
	DefaultMaxScanBytes = 50 << 20
)

// ErrUnavailable wraps every failure to get a verdict from clamd.
var ErrUnavailable = errors.New("scan: clamd unavailable")

// Config is the [scan] table.
type Config struct {
	// Address of clamd: "unix:/run/clamav/clamd.ctl" or
	// "tcp://127.0.0.1:3310". Empty: scanning is off (New returns nil).
	Address string
	// Required: clamd unreachable means a temporary failure, never a
	// silent pass.
	Required bool
	// MaxScanBytes: larger messages are not scanned (default 50 MiB).
	MaxScanBytes int64
	// Timeout bounds one scan (default 60 s).
	Timeout time.Duration
	// Concurrency bounds the scans in flight (default 8).
	Concurrency int
}

// Verdict is what a scan found.
type Verdict struct {
	Infected bool
	Virus    string // the signature name, when Infected
	// Skipped, when not empty, says why the message was not scanned.
	Skipped string
}

// Header is the header field a caller adds to a message that was not
// scanned, or "" when it was.
func (v Verdict) Header() string {
	if v.Skipped == "" {
		return ""
	}
	return "X-Sigillo-Scan: skipped (" + strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, v.Skipped) + ")\r\n"
}

// Scanner scans messages with clamd. It is safe for concurrent use.
type Scanner struct {
	cfg    Config
	client *clamd.Clamd
	slots  chan struct{}
	logger *slog.Logger

	mu      sync.Mutex
	lastErr string // "" while clamd answers
	lastAt  time.Time
}

// New returns a Scanner for cfg, or nil when cfg.Address is empty.
func New(cfg Config, logger *slog.Logger) (*Scanner, error) {
	if cfg.Address == "" {
		return nil, nil
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || (u.Scheme != "unix" && u.Scheme != "tcp") || (u.Scheme == "tcp" && u.Host == "") || (u.Scheme == "unix" && u.Path == "" && u.Opaque == "") {
		return nil, fmt.Errorf("scan: clamd %q: use unix:/path/to/clamd.ctl or tcp://host:port", cfg.Address)
	}
	if u.Scheme == "unix" && u.Path == "" {
		// "unix:relative/path" parses as opaque; go-clamd wants a path.
		cfg.Address = "unix://" + u.Opaque
	}
	if cfg.MaxScanBytes <= 0 {
		cfg.MaxScanBytes = DefaultMaxScanBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Scanner{cfg: cfg, client: clamd.NewClamd(cfg.Address), slots: make(chan struct{}, cfg.Concurrency), logger: logger}, nil
}

// Required reports whether a scan that cannot be made is a failure.
func (s *Scanner) Required() bool { return s.cfg.Required }

// Scan scans one message of size bytes, read from msg (a spool file: the
// message is streamed to clamd, never held in memory). With Required, a
// clamd that cannot give a verdict is an error wrapping ErrUnavailable;
// without, a Skipped verdict. msg may still be read after Scan returned on
// a timeout; reads then fail once the caller closes it, which ends them.
func (s *Scanner) Scan(ctx context.Context, msg io.Reader, size int64) (Verdict, error) {
	if size > s.cfg.MaxScanBytes {
		return Verdict{Skipped: fmt.Sprintf("larger than max_scan_bytes, %d bytes", s.cfg.MaxScanBytes)}, nil
	}
	v, err := s.scan(ctx, msg)
	s.record(err)
	if err == nil {
		return v, nil
	}
	err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	if s.cfg.Required {
		return Verdict{}, err
	}
	s.logger.Warn("message passed unscanned: clamd gave no verdict and scanning is not required", "err", err)
	return Verdict{Skipped: "clamd unavailable"}, nil
}

func (s *Scanner) scan(ctx context.Context, msg io.Reader) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return Verdict{}, fmt.Errorf("waiting for a free clamd connection: %w", ctx.Err())
	}
	var res *clamd.ScanResult
	err := s.call(ctx, func(abort chan bool) (chan *clamd.ScanResult, error) {
		// go-clamd reads 1 KiB at a time: read the file in larger pieces.
		return s.client.ScanStream(bufio.NewReaderSize(msg, 64<<10), abort)
	}, func(r *clamd.ScanResult) { res = r })
	if err != nil {
		return Verdict{}, err
	}
	switch res.Status {
	case clamd.RES_OK:
		return Verdict{}, nil
	case clamd.RES_FOUND:
		return Verdict{Infected: true, Virus: res.Description}, nil
	}
	return Verdict{}, fmt.Errorf("clamd answered %q", res.Raw)
}

// call runs one go-clamd command under ctx. go-clamd has no deadlines of
// its own: closing abort closes the connection, which ends a stuck read or
// write, and the reply channel is drained so its reader goroutine ends too.
func (s *Scanner) call(ctx context.Context, start func(abort chan bool) (chan *clamd.ScanResult, error), first func(*clamd.ScanResult)) error {
	abort := make(chan bool)
	type started struct {
		ch  chan *clamd.ScanResult
		err error
	}
	done := make(chan started, 1)
	go func() {
		ch, err := start(abort)
		done <- started{ch, err}
	}()
	var ch chan *clamd.ScanResult
	select {
	case st := <-done:
		if st.err != nil {
			close(abort)
			return st.err
		}
		ch = st.ch
	case <-ctx.Done():
		close(abort)
		go func() {
			if st := <-done; st.ch != nil {
				for range st.ch {
				}
			}
		}()
		return fmt.Errorf("clamd: %w", ctx.Err())
	}
	defer func() {
		close(abort)
		go func() {
			for range ch {
			}
		}()
	}()
	select {
	case r, ok := <-ch:
		if !ok || r == nil {
			return errors.New("clamd closed the connection without a reply")
		}
		first(r)
		return nil
	case <-ctx.Done():
		return fmt.Errorf("clamd: %w", ctx.Err())
	}
}

// Version asks clamd for its version and the date of its signatures
// ("ClamAV 1.0.7/27471/Mon Nov 23 09:10:11 2026"). go-clamd's Version has
// no deadline, so this one short command is spoken directly.
func (s *Scanner) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := s.version(ctx)
	s.record(err)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return v, nil
}

func (s *Scanner) version(ctx context.Context) (string, error) {
	u, _ := url.Parse(s.cfg.Address)
	network, addr := "tcp", u.Host
	if u.Scheme == "unix" {
		network, addr = "unix", u.Path
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("nVERSION\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(io.LimitReader(conn, 4096)).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading clamd's VERSION reply: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// Status is the scanner's health, for the health endpoint and
// `sigillo scan status`.
type Status struct {
	Address  string    `json:"address"`
	Required bool      `json:"required"`
	OK       bool      `json:"ok"`
	LastErr  string    `json:"last_error,omitempty"`
	Since    time.Time `json:"since,omitzero"`
}

// Status reports whether the last exchange with clamd worked.
func (s *Scanner) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Address: s.cfg.Address, Required: s.cfg.Required, OK: s.lastErr == "", LastErr: s.lastErr, Since: s.lastAt}
}

func (s *Scanner) record(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.lastErr || s.lastAt.IsZero() {
		s.lastAt = time.Now()
		if msg != "" && s.lastErr == "" {
			s.logger.Error("clamd unavailable", "address", s.cfg.Address, "err", err)
		} else if msg == "" && s.lastErr != "" {
			s.logger.Info("clamd answers again", "address", s.cfg.Address)
		}
	}
	s.lastErr = msg
}
