package queue_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"sigillo/appliance/accounts"
	"sigillo/appliance/apptest"
	"sigillo/appliance/passwd"
	"sigillo/appliance/queue"
	"sigillo/appliance/smtpd"
	"sigillo/appliance/spool"
	"sigillo/storage"
)

// newLogger is host name's logger: at debug level, into a buffer that the
// test reads and through t.Log.
func newLogger(t testing.TB, name string) (*slog.Logger, *apptest.LogBuffer) {
	lb := &apptest.LogBuffer{}
	h := slog.NewTextHandler(io.MultiWriter(lb, apptest.TestWriter(t)), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h).With("host", name), lb
}

const password = "a long enough password"

// host is one mail server: a store hosting some domains and an smtpd
// serving inbound (25) and submissions (465) on 127.0.0.1.
type host struct {
	t       *testing.T
	name    string
	store   *storage.Store
	prop    *apptest.Proposer
	srv     *smtpd.Server
	inbound string
	subs    string
	mbox    map[string]int64
}

func newHost(t *testing.T, name string, pki *apptest.PKI, clk *apptest.Clock, tlsConf *tls.Config, enqueued func(), domains []string, mailboxes ...string) *host {
	t.Helper()
	store, err := storage.Open(filepath.Join(t.TempDir(), name+".sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := &host{t: t, name: name, store: store, prop: apptest.NewProposer(store), mbox: map[string]int64{}}
	for _, d := range domains {
		h.prop.Must(t, &storage.AddDomain{Name: d, At: 1})
	}
	hash, err := passwd.Hash(password, passwd.Params{Memory: 64, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range mailboxes {
		h.mbox[a] = h.prop.Must(t, &storage.AddMailbox{Address: a, PasswordHash: hash, At: 1}).(int64)
	}
	if tlsConf == nil {
		tlsConf = pki.ServerConfig()
	}
	log, _ := newLogger(t, name)
	sp, err := spool.Open(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	h.srv = &smtpd.Server{
		Hostname: name, Store: store, Proposer: h.prop, Auth: &accounts.Authenticator{Store: store},
		TLSConfig: tlsConf, Logger: log.With("component", "smtpd"), Now: clk.Now, Enqueued: enqueued, Spool: sp,
	}
	serveErr := make(chan error, 2)
	listen := func(mode smtpd.Mode) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { serveErr <- h.srv.Serve(ln, mode) }()
		return ln.Addr().String()
	}
	h.inbound, h.subs = listen(smtpd.Inbound), listen(smtpd.Submissions)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.srv.Shutdown(ctx); err != nil {
			t.Errorf("%s: shutdown: %v", name, err)
		}
		for range 2 {
			if err := <-serveErr; err != nil {
				t.Errorf("%s: serve: %v", name, err)
			}
		}
	})
	return h
}

// submit sends a message through the host's port 465 as user, with go-smtp's
// client.
func (h *host) submit(pki *apptest.PKI, user string, to []string, body string) {
	h.t.Helper()
	c, err := smtp.DialTLS(h.subs, pki.ClientConfig("127.0.0.1"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		h.t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		h.t.Fatal(err)
	}
	if err := c.SendMail(user, to, strings.NewReader(body)); err != nil {
		h.t.Fatalf("submit: %v", err)
	}
	c.Quit()
}

func (h *host) inbox(addr string) []string {
	h.t.Helper()
	ctx := context.Background()
	f, err := h.store.FolderByName(ctx, h.mbox[addr], "INBOX")
	if err != nil {
		h.t.Fatal(err)
	}
	msgs, err := h.store.Messages(ctx, f.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		b, err := h.store.Content(ctx, m.SHA256)
		if err != nil {
			h.t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func (h *host) queue() []storage.QueueItem {
	h.t.Helper()
	items, err := h.store.QueueItems(context.Background(), time.Time{})
	if err != nil {
		h.t.Fatal(err)
	}
	return items
}

// staticResolver answers MX and address lookups from maps; a missing name
// is "not found".
type staticResolver struct {
	mx    map[string][]*net.MX
	hosts map[string][]string
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r staticResolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	if mx, ok := r.mx[domain]; ok {
		return mx, nil
	}
	return nil, notFound(domain)
}

func (r staticResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	if a, ok := r.hosts[host]; ok {
		return a, nil
	}
	return nil, notFound(host)
}

// world is two hosts, A (a.test) and B (b.test), and A's queue runner.
type world struct {
	t      *testing.T
	pki    *apptest.PKI
	clock  *apptest.Clock
	a, b   *host
	runner *queue.Runner
	log    *apptest.LogBuffer
	cancel context.CancelFunc
	done   chan error
}

type option func(w *world)

func newWorld(t *testing.T, opts ...option) *world {
	t.Helper()
	w := &world{t: t, pki: apptest.NewPKI(t), clock: apptest.NewClock(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))}
	log, lb := newLogger(t, "mx.a.test")
	w.log = lb
	w.runner = &queue.Runner{
		Hostname:  "mx.a.test",
		Resolver:  staticResolver{},
		TLSConfig: &tls.Config{RootCAs: w.pki.Pool},
		Now:       w.clock.Now,
		Logger:    log.With("component", "queue"),
		Workers:   2,
		Timeout:   20 * time.Second,
	}
	// A's SMTP server does not tell the runner of what it queues: the
	// runner learns it from the store, as it does in the appliance.
	w.a = newHost(t, "mx.a.test", w.pki, w.clock, nil, nil, []string{"a.test"}, "alice@a.test", "carol@a.test")
	w.b = newHost(t, "mx.b.test", w.pki, w.clock, nil, nil, []string{"b.test", "nomx.test"}, "bob@b.test", "dave@nomx.test")
	w.runner.Store, w.runner.Proposer = w.a.store, w.a.prop
	w.runner.Routes = map[string]string{"b.test": w.b.inbound}
	for _, o := range opts {
		o(w)
	}
	return w
}

// start runs A's queue runner until the test ends.
func (w *world) start() {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.done = make(chan error, 1)
	go func() { w.done <- w.runner.Run(ctx) }()
	w.t.Cleanup(w.stop)
}

func (w *world) stop() {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	select {
	case err := <-w.done:
		if err != nil {
			w.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		w.t.Errorf("Run did not return after its context ended")
	}
}

// eventually waits for cond, failing the test after a while.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testMessage(subject string) string {
	// Complete (Date: and Message-ID:), so that submission adds nothing.
	return "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: " + subject + "\r\nDate: Tue, 4 Mar 2025 06:00:00 +0100\r\nMessage-ID: <" +
		strings.ReplaceAll(subject, " ", ".") + "@client.test>\r\n\r\nHello from A.\r\n"
}
