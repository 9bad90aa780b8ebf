// Package loadgen is `sigillo bench`: a load generator for any mail server
// that speaks SMTP submission, IMAP and POP3 (Sigillo, or Postfix with
// Dovecot), and for Sigillo's PEC service.
//
// Run plays the scenarios one after the other:
//
//   - smtp: each worker keeps one authenticated submission connection and
//     sends messages from its user to its user; the latency is from MAIL
//     FROM to the 250 after the data.
//   - deliver: like smtp, but each worker waits for its message to appear
//     in the recipient's INBOX, watched by one IMAP connection per user in
//     IDLE (NOOP every 10 ms on servers without IDLE); the latency is from
//     the 250 to the EXISTS that announced it.
//   - imap: on a mailbox of at least MailboxMessages messages (filled over
//     SMTP first), each worker loops over SELECT, FETCH of a random window
//     of 50 (FLAGS ENVELOPE RFC822.SIZE), FETCH BODY.PEEK[] of 5 random
//     messages, UID SEARCH (SUBJECT, FROM or UNSEEN at random) and STORE
//     +FLAGS/-FLAGS \Seen on 3 random messages; every command is one op.
//   - pop3: on the same mailboxes, each worker loops over sessions:
//     USER/PASS, STAT, UIDL, RETR of the first MailboxMessages messages
//     (with a Count budget: 50 random ones), QUIT; the ops are the RETRs,
//     and the sessions have their own latency row.
//   - pec: submissions from a PEC mailbox, each waiting for its
//     ACCETTAZIONE and CONSEGNA in the sender's INBOX (watched in IDLE);
//     latencies from the 250 to each receipt, and transactions/s.
//
// The deliver and pec workers are closed loops: each has one message in
// flight, so Concurrency is the number of messages on their way.
//
// Every goroutine is owned by the scenario that started it and stopped
// before Run returns; when ctx is cancelled, the scenario in progress stops
// (connections are closed under the blocked calls) and Run returns what
// was measured so far together with ctx.Err().
package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is one service's port and TLS mode.
type Endpoint struct {
	// Port 0 is the standard port for the TLS mode: 465/993/995 for
	// Implicit, 587/143/110 otherwise.
	Port int
	TLS  TLSMode
}

// Options configures a run. A zero field takes the default given.
type Options struct {
	Scenarios []string // default: smtp
	Server    string   // label in every result; default "server"
	Host      string   // default 127.0.0.1
	SMTP      Endpoint // submission: AUTH PLAIN (when offered), MAIL, RCPT, DATA
	IMAP      Endpoint
	POP3      Endpoint
	// TLSConfig verifies the server (nil: the system roots). Its
	// ServerName defaults to Host.
	TLSConfig *tls.Config
	// Users are the mailboxes of the smtp, deliver, imap and pop3
	// scenarios; worker i is Users[i % len(Users)].
	Users       []User
	Concurrency int           // workers; default 8
	Sizes       SizeMix       // message sizes; default 1024 bytes
	Duration    time.Duration // each scenario's length when Count is 0; default 10 s
	// Count is the number of operations of each scenario (messages,
	// commands, RETRs, transactions) instead of a duration; failed
	// attempts count too, so a run always ends.
	Count int
	// MailboxMessages is what the imap and pop3 scenarios need in each
	// user's INBOX; missing messages are sent over SMTP first. Default 1000.
	MailboxMessages int
	// Poll makes the deliver and pec watchers send NOOP every 10 ms
	// instead of waiting in IDLE (a server may delay IDLE notices: Dovecot
	// by 500 ms), so that the latency is the server's delivery.
	Poll bool
	// PECFrom submits the pec scenario's messages (with PECPassword) to
	// PECTo.
	PECFrom, PECPassword, PECTo string
	// VisibleTimeout is how long deliver and pec wait for a message or a
	// receipt after the 250 before counting an error; default 30 s.
	VisibleTimeout time.Duration
	// Progress, if set (a terminal), gets a status line every second,
	// erased at the end of each scenario.
	Progress io.Writer
	// Log gets the first few distinct error texts of each scenario.
	Log io.Writer
}

// Result is one scenario's figures. The top-level latencies are the
// scenario's main operation: smtp the submission (MAIL to 250), deliver
// the 250 to EXISTS time, imap every command, pop3 the RETRs, pec the 250
// to CONSEGNA time.
type Result struct {
	Scenario    string     `json:"scenario"`
	Server      string     `json:"server"`
	OpsPerS     float64    `json:"ops_per_s"`
	P50Ms       float64    `json:"p50_ms"`
	P90Ms       float64    `json:"p90_ms"`
	P99Ms       float64    `json:"p99_ms"`
	MaxMs       float64    `json:"max_ms"`
	MeanMs      float64    `json:"mean_ms"`
	Errors      int64      `json:"errors"`
	Count       int64      `json:"count"`
	DurationS   float64    `json:"duration_s"`
	Concurrency int        `json:"concurrency"`
	Users       int        `json:"users"`
	Sizes       string     `json:"sizes,omitempty"` // the size mix, "bytes:weight,…"
	Ops         []OpResult `json:"ops,omitempty"`
	FirstErrors []string   `json:"first_errors,omitempty"`
	// Error is why the scenario could not run at all (a login refused
	// while setting up, say).
	Error       string `json:"error,omitempty"`
	Interrupted bool   `json:"interrupted,omitempty"`
}

// OpResult is the figures of one kind of operation within a scenario
// (imap: select, fetch_envelope, fetch_body, search, store; deliver:
// submit, deliver; pop3: login, stat, uidl, retr, session; pec: submit,
// accettazione, consegna).
type OpResult struct {
	Op      string  `json:"op"`
	OpsPerS float64 `json:"ops_per_s"`
	P50Ms   float64 `json:"p50_ms"`
	P90Ms   float64 `json:"p90_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	MeanMs  float64 `json:"mean_ms"`
	Errors  int64   `json:"errors"`
	Count   int64   `json:"count"`
}

// TLSConfig is a client configuration trusting the PEM certificates in
// caFile (none: the system roots), or nothing at all when insecure.
func TLSConfig(caFile string, insecure bool) (*tls.Config, error) {
	if caFile != "" && insecure {
		return nil, errors.New("--ca and --insecure exclude each other")
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if insecure {
		c.InsecureSkipVerify = true
		return c, nil
	}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("no PEM certificate in %s", caFile)
		}
	}
	return c, nil
}

// Check fills in the defaults and says what is wrong with the options.
func (o *Options) Check() error {
	if len(o.Scenarios) == 0 {
		o.Scenarios = []string{"smtp"}
	}
	for _, s := range o.Scenarios {
		if !isScenario(s) {
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	if o.Server == "" {
		o.Server = "server"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	for _, e := range []struct {
		ep                *Endpoint
		implicit, starttl int
	}{{&o.SMTP, 465, 587}, {&o.IMAP, 993, 143}, {&o.POP3, 995, 110}} {
		if e.ep.Port < 0 || e.ep.Port > 65535 {
			return fmt.Errorf("port %d out of range", e.ep.Port)
		}
		if e.ep.Port == 0 {
			e.ep.Port = e.starttl
			if e.ep.TLS == Implicit {
				e.ep.Port = e.implicit
			}
		}
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.TLSConfig.ServerName == "" {
		o.TLSConfig = o.TLSConfig.Clone()
		o.TLSConfig.ServerName = o.Host
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	if o.Concurrency < 1 || o.Concurrency > 10000 {
		return fmt.Errorf("concurrency %d: want 1 to 10000", o.Concurrency)
	}
	if len(o.Sizes) == 0 {
		o.Sizes = SizeMix{{Size: 1024, Weight: 1}}
	}
	for _, sw := range o.Sizes {
		if sw.Size <= 0 || sw.Weight <= 0 {
			return fmt.Errorf("size mix %v: sizes and weights must be positive", o.Sizes)
		}
	}
	if o.Count < 0 || o.Duration < 0 {
		return errors.New("count and duration must not be negative")
	}
	if o.Count > 0 && o.Duration > 0 {
		return errors.New("give a duration or a count, not both")
	}
	if o.Count == 0 && o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.MailboxMessages == 0 {
		o.MailboxMessages = 1000
	}
	if o.MailboxMessages < 1 {
		return fmt.Errorf("mailbox messages %d: want at least 1", o.MailboxMessages)
	}
	if o.VisibleTimeout <= 0 {
		o.VisibleTimeout = 30 * time.Second
	}
	for _, s := range o.Scenarios {
		if s == "pec" {
			if o.PECFrom == "" || o.PECTo == "" {
				return errors.New("the pec scenario needs --pec-from and --pec-to")
			}
			if o.PECPassword == "" {
				return fmt.Errorf("the pec scenario needs the password of %s (--password, or a line in --users-file)", o.PECFrom)
			}
		} else if len(o.Users) == 0 {
			return fmt.Errorf("the %s scenario needs users: --user (with --password) or --users-file", s)
		}
	}
	for _, u := range o.Users {
		if u.Password == "" {
			return fmt.Errorf("no password for %s (--password or --users-file)", u.Address)
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Run plays the scenarios and returns one Result each. Bad options are an
// error before anything runs. When ctx is cancelled, Run returns the
// results measured so far (the one in progress marked Interrupted) and
// ctx.Err(); otherwise failures are counted in the results, never
// returned.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	r := newRunner(o)
	var results []Result
	for _, name := range o.Scenarios {
		if ctx.Err() != nil {
			break
		}
		results = append(results, r.scenario(ctx, name))
	}
	return results, ctx.Err()
}

// runner is one Run.
type runner struct {
	o     Options
	runID string
	seq   atomic.Int64
	con   *console
	// filled: the users whose INBOX already holds MailboxMessages.
	filled map[string]bool
}

func newRunner(o Options) *runner {
	var b [4]byte
	rand.Read(b[:])
	return &runner{o: o, runID: hex.EncodeToString(b[:]), con: &console{progress: o.Progress, log: o.Log},
		filled: map[string]bool{}}
}

// workerUser is worker i's mailbox.
func (r *runner) workerUser(i int) User { return r.o.Users[i%len(r.o.Users)] }

// activeUsers are the distinct mailboxes the workers use.
func (r *runner) activeUsers() []User {
	return r.o.Users[:min(len(r.o.Users), r.o.Concurrency)]
}

// scenario runs one scenario and sums it up.
func (r *runner) scenario(ctx context.Context, name string) Result {
	s := r.newScenario(name)
	var err error
	switch name {
	case "smtp":
		err = r.runSMTP(ctx, s)
	case "deliver":
		err = r.runDeliver(ctx, s)
	case "imap":
		err = r.runIMAP(ctx, s)
	case "pop3":
		err = r.runPOP3(ctx, s)
	case "pec":
		err = r.runPEC(ctx, s)
	}
	r.con.clear()
	res := s.result()
	if err != nil && ctx.Err() == nil {
		res.Error = err.Error()
		res.Errors++
		r.con.logf("bench: %s: %v", name, err)
	}
	res.Interrupted = ctx.Err() != nil
	return res
}

// scenarioState is the bookkeeping of one scenario: its budget, its
// latencies, its errors.
type scenarioState struct {
	r        *runner
	name     string
	mainOp   string
	ops      []string // the per-op rows, in order
	rec      map[string]*Recorder
	errs     map[string]*atomic.Int64
	start    time.Time
	end      atomic.Int64 // unix nanoseconds of the last event counted
	deadline time.Time
	left     atomic.Int64
	counted  bool
	users    int // mailboxes in use

	mu         sync.Mutex
	firstErrs  []string
	seenErrs   map[string]bool
	stopReport func()
}

// maxErrorTexts is how many distinct error texts a scenario reports.
const maxErrorTexts = 5

func (r *runner) newScenario(name string) *scenarioState {
	s := &scenarioState{r: r, name: name, rec: map[string]*Recorder{}, errs: map[string]*atomic.Int64{},
		seenErrs: map[string]bool{}, users: len(r.activeUsers()), mainOp: mainOps[name]}
	switch name {
	case "deliver":
		s.ops = []string{"submit", "deliver"}
	case "imap":
		s.ops = []string{"select", "fetch_envelope", "fetch_body", "search", "store"}
	case "pop3":
		s.ops = []string{"login", "stat", "uidl", "retr", "session"}
	case "pec":
		s.ops = []string{"submit", "accettazione", "consegna"}
		s.users = 1
	}
	for _, op := range append([]string{s.mainOp, "connect", "watch"}, s.ops...) {
		if s.rec[op] == nil {
			s.rec[op] = NewRecorder()
			s.errs[op] = &atomic.Int64{}
		}
	}
	return s
}

// begin starts the clock (after any setup) and the progress line.
func (s *scenarioState) begin(ctx context.Context) {
	s.start = time.Now()
	s.end.Store(s.start.UnixNano())
	if s.r.o.Count > 0 {
		s.counted = true
		s.left.Store(int64(s.r.o.Count))
	} else {
		s.deadline = s.start.Add(s.r.o.Duration)
	}
	if s.r.o.Progress == nil {
		s.stopReport = func() {}
		return
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				s.r.con.status(s.progressLine())
			}
		}
	}()
	s.stopReport = func() {
		close(done)
		wg.Wait()
		s.r.con.clear()
	}
}

// finish stops the progress line.
func (s *scenarioState) finish() {
	if s.stopReport != nil {
		s.stopReport()
	}
}

func (s *scenarioState) progressLine() string {
	el := time.Since(s.start)
	n := s.rec[s.mainOp].Count()
	var errs int64
	for _, e := range s.errs {
		errs += e.Load()
	}
	goal := ""
	if s.counted {
		goal = fmt.Sprintf("/%d", s.r.o.Count)
	} else {
		goal = fmt.Sprintf(" of %s", s.r.o.Duration)
	}
	return fmt.Sprintf("bench %s [%s] %s%s: %d ops, %.1f/s, %d errors", s.name, s.r.o.Server,
		el.Round(time.Second), goal, n, float64(n)/max(el.Seconds(), 1e-9), errs)
}

// more says whether the scenario goes on, without using the budget.
func (s *scenarioState) more(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	if s.counted {
		return s.left.Load() > 0
	}
	return time.Now().Before(s.deadline)
}

// take uses one operation of the budget; false: the scenario is over.
func (s *scenarioState) take(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	if s.counted {
		return s.left.Add(-1) >= 0
	}
	return time.Now().Before(s.deadline)
}

// record counts one successful op of kind op taking d; when the op is
// one of the per-op rows of a scenario whose main row is "all", it counts
// there too.
func (s *scenarioState) record(op string, d time.Duration) {
	s.rec[op].Record(d)
	if s.mainOp == "all" {
		s.rec["all"].Record(d)
	}
	s.touch()
}

// touch marks now as the latest event of the scenario.
func (s *scenarioState) touch() {
	now := time.Now().UnixNano()
	for {
		old := s.end.Load()
		if now <= old || s.end.CompareAndSwap(old, now) {
			return
		}
	}
}

// fail counts an error of kind op, unless the run was cancelled (then the
// error is the cancellation's doing).
func (s *scenarioState) fail(ctx context.Context, op string, err error) {
	if ctx.Err() != nil {
		return
	}
	s.errs[op].Add(1)
	text := fmt.Sprintf("%s: %v", op, err)
	s.mu.Lock()
	report := !s.seenErrs[text] && len(s.firstErrs) < maxErrorTexts
	if report {
		s.seenErrs[text] = true
		s.firstErrs = append(s.firstErrs, text)
	}
	s.mu.Unlock()
	if report {
		s.r.con.logf("bench: %s: %s", s.name, text)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// round3 keeps three decimals, enough for rates and seconds.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func (s *scenarioState) result() Result {
	s.finish()
	o := s.r.o
	res := Result{Scenario: s.name, Server: o.Server, Concurrency: o.Concurrency, Users: s.users, Sizes: o.Sizes.String()}
	var secs float64
	if !s.start.IsZero() {
		secs = time.Duration(s.end.Load() - s.start.UnixNano()).Seconds()
	}
	res.DurationS = round3(secs)
	rate := func(n int64) float64 {
		if secs <= 0 {
			return 0
		}
		return round3(float64(n) / secs)
	}
	main := s.rec[s.mainOp].Stats()
	res.Count = main.Count
	res.OpsPerS = rate(main.Count)
	res.P50Ms, res.P90Ms, res.P99Ms, res.MaxMs, res.MeanMs = ms(main.P50), ms(main.P90), ms(main.P99), ms(main.Max), ms(main.Mean)
	for _, e := range s.errs {
		res.Errors += e.Load()
	}
	for _, op := range s.ops {
		st := s.rec[op].Stats()
		res.Ops = append(res.Ops, OpResult{Op: op, OpsPerS: rate(st.Count), P50Ms: ms(st.P50), P90Ms: ms(st.P90),
			P99Ms: ms(st.P99), MaxMs: ms(st.Max), MeanMs: ms(st.Mean), Errors: s.errs[op].Load(), Count: st.Count})
	}
	for _, op := range []string{"connect", "watch"} {
		if n := s.errs[op].Load(); n > 0 {
			res.Ops = append(res.Ops, OpResult{Op: op, Errors: n})
		}
	}
	s.mu.Lock()
	res.FirstErrors = append([]string(nil), s.firstErrs...)
	s.mu.Unlock()
	return res
}

// console writes the progress line and the error lines to the terminal
// without mixing them up.
type console struct {
	mu       sync.Mutex
	progress io.Writer
	log      io.Writer
	shown    bool
}

func (c *console) status(line string) {
	if c.progress == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.progress, "\r\033[K%s", line)
	c.shown = true
}

func (c *console) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
}

func (c *console) clearLocked() {
	if c.shown {
		fmt.Fprint(c.progress, "\r\033[K")
		c.shown = false
	}
}

func (c *console) logf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	fmt.Fprintf(c.log, format+"\n", args...)
}

// sleep waits d or until ctx is done; false: ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is the pause after a failed connection: 100 ms, doubling up to
// 1 s.
type backoff struct{ d time.Duration }

func (b *backoff) wait(ctx context.Context) bool {
	b.d = min(max(b.d*2, 100*time.Millisecond), time.Second)
	return sleep(ctx, b.d)
}

func (b *backoff) reset() { b.d = 0 }
