package imapd

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"sigillo/storage"
)

// watcher records what a client is told unilaterally, for tests to check.
type watcher struct {
	mu       sync.Mutex
	exists   uint32 // the client's message count: EXISTS, minus EXPUNGEs
	expunges []uint32
	flags    map[uint32][]imap.Flag // seq -> flags from unsolicited FETCH
}

func (w *watcher) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) {
			w.mu.Lock()
			w.expunges = append(w.expunges, seq)
			w.exists--
			w.mu.Unlock()
		},
		Mailbox: func(data *imapclient.UnilateralDataMailbox) {
			if data.NumMessages != nil {
				w.mu.Lock()
				w.exists = *data.NumMessages
				w.mu.Unlock()
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				return
			}
			w.mu.Lock()
			if w.flags == nil {
				w.flags = map[uint32][]imap.Flag{}
			}
			w.flags[buf.SeqNum] = buf.Flags
			w.mu.Unlock()
		},
	}
}

func (w *watcher) state() (uint32, []uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exists, append([]uint32(nil), w.expunges...)
}

func (w *watcher) reset(n uint32) {
	w.mu.Lock()
	w.exists, w.expunges, w.flags = n, nil, nil
	w.mu.Unlock()
}

func selectBox(t *testing.T, c *imapclient.Client, name string) *imap.SelectData {
	t.Helper()
	d, err := c.Select(name, nil).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", name, err)
	}
	return d
}

func noop(t *testing.T, c *imapclient.Client) {
	t.Helper()
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("noop: %v", err)
	}
}

func fetchUIDs(t *testing.T, c *imapclient.Client, set imap.NumSet) ([]uint32, []imap.UID) {
	t.Helper()
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var seqs []uint32
	var uids []imap.UID
	for _, m := range msgs {
		seqs = append(seqs, m.SeqNum)
		uids = append(uids, m.UID)
	}
	return seqs, uids
}

func TestSessionsSeeEachOthersChanges(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 3; i++ {
		e.deliver("INBOX", []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)))
	}
	a := e.client(nil)
	selectBox(t, a, "INBOX")
	var w watcher
	b := e.client(w.handler())
	w.reset(selectBox(t, b, "INBOX").NumMessages)

	// A new message (SMTP) shows up at B's next command.
	e.deliver("INBOX", []byte("Subject: 4\r\n\r\nfour\r\n"))
	noop(t, b)
	if n, _ := w.state(); n != 4 {
		t.Fatalf("B counts %d messages after a delivery, want 4", n)
	}

	// A's flag change reaches B as FETCH FLAGS.
	if err := a.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	noop(t, b)
	// imapclient hands unilateral FETCH data to its handler on a goroutine.
	var got []imap.Flag
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		w.mu.Lock()
		got = w.flags[1]
		w.mu.Unlock()
		if got != nil {
			break
		}
	}
	if !slices.Contains(got, imap.FlagFlagged) {
		t.Fatalf("B was not told of A's flag change: %v", got)
	}

	// A expunges message 2. During B's FETCH it must not be expunged
	// (RFC 9051 7.5.1): it is left out, and numbering is unchanged.
	if err := a.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if gone, err := a.Expunge().Collect(); err != nil || !slices.Equal(gone, []uint32{2}) {
		t.Fatalf("A's expunge: %v %v", gone, err)
	}
	seqs, uids := fetchUIDs(t, b, imap.SeqSet{{Start: 1, Stop: 0}})
	if !slices.Equal(seqs, []uint32{1, 3, 4}) || !slices.Equal(uids, []imap.UID{1, 3, 4}) {
		t.Fatalf("B's FETCH during a pending expunge: seqs %v uids %v", seqs, uids)
	}
	if _, ex := w.state(); len(ex) != 0 {
		t.Fatalf("EXPUNGE sent during FETCH: %v", ex)
	}
	noop(t, b)
	if n, ex := w.state(); n != 3 || !slices.Equal(ex, []uint32{2}) {
		t.Fatalf("after NOOP B has %d messages and expunges %v", n, ex)
	}
	seqs, uids = fetchUIDs(t, b, imap.SeqSet{{Start: 1, Stop: 0}})
	if !slices.Equal(seqs, []uint32{1, 2, 3}) || !slices.Equal(uids, []imap.UID{1, 3, 4}) {
		t.Fatalf("B's numbering after the expunge: seqs %v uids %v", seqs, uids)
	}

	// A deletes the folder B has selected: B sees every message go.
	if err := a.Create("Doomed", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Copy(imap.SeqSet{{Start: 1, Stop: 0}}, "Doomed").Wait(); err != nil {
		t.Fatal(err)
	}
	w.reset(selectBox(t, b, "Doomed").NumMessages)
	if err := a.Delete("Doomed").Wait(); err != nil {
		t.Fatal(err)
	}
	noop(t, b)
	if n, ex := w.state(); n != 0 || len(ex) != 3 {
		t.Fatalf("after its folder was deleted B has %d messages, expunges %v", n, ex)
	}
}

// TestViewsFollowRandomChanges drives random changes by another client and
// by deliveries, with the observed client interleaving NOOP, FETCH and
// SEARCH, and checks after each NOOP that its view is the store's.
func TestViewsFollowRandomChanges(t *testing.T) {
	e := newEnv(t)
	rng := rand.New(rand.NewSource(1))
	a := e.client(nil)
	selectBox(t, a, "INBOX")
	var w watcher
	b := e.client(w.handler())
	w.reset(selectBox(t, b, "INBOX").NumMessages)
	ctx := context.Background()
	inbox := e.folder("INBOX").ID

	for step := 0; step < 150; step++ {
		uids, err := e.store.FolderUIDs(ctx, inbox)
		if err != nil {
			t.Fatal(err)
		}
		switch op := rng.Intn(10); {
		case op < 4 || len(uids) == 0:
			e.deliver("INBOX", []byte(fmt.Sprintf("Subject: step %d\r\n\r\n%d\r\n", step, step)))
		case op < 6:
			u := uids[rng.Intn(len(uids))]
			e.must(&storage.StoreFlags{FolderID: inbox, UIDs: []uint32{u}, Mode: storage.FlagsAdd, Flags: []string{fmt.Sprintf("$k%d", rng.Intn(3)), `\Seen`}})
		case op < 8:
			u := uids[rng.Intn(len(uids))]
			e.must(&storage.Expunge{FolderID: inbox, UIDs: []uint32{u}})
		default:
			noop(t, a) // A's own view follows too
			if _, err := a.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true}).Collect(); err != nil && len(uids) > 0 {
				t.Fatalf("A fetch: %v", err)
			}
		}
		switch rng.Intn(3) {
		case 0:
			noop(t, b)
			uids, _ := e.store.FolderUIDs(ctx, inbox)
			if n, _ := w.state(); int(n) != len(uids) {
				t.Fatalf("step %d: B counts %d messages, the store has %d", step, n, len(uids))
			}
		case 1:
			if n, _ := w.state(); n > 0 {
				if _, err := b.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect(); err != nil {
					t.Fatalf("step %d: B fetch: %v", step, err)
				}
			}
		case 2:
			if _, err := b.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait(); err != nil {
				t.Fatalf("step %d: B search: %v", step, err)
			}
		}
	}
	noop(t, b)
	want, _ := e.store.Messages(ctx, inbox)
	msgs, err := b.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := w.state(); int(n) != len(want) || len(msgs) != len(want) {
		t.Fatalf("B counts %d and fetched %d messages, the store has %d", n, len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) || uint32(m.UID) != want[i].UID {
			t.Fatalf("message %d: seq %d uid %d, want uid %d", i+1, m.SeqNum, m.UID, want[i].UID)
		}
		var flags []string
		for _, f := range m.Flags {
			flags = append(flags, string(f))
		}
		slices.Sort(flags)
		if !slices.Equal(flags, want[i].Flags) {
			t.Fatalf("uid %d: flags %v, want %v", m.UID, flags, want[i].Flags)
		}
	}
}

// TestUnavailableProposerChangesNothing: with raft unable to commit, every
// change is a temporary NO [UNAVAILABLE], nothing is written, and the
// session goes on once raft is back.
func TestUnavailableProposerChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.deliver("INBOX", []byte("Subject: one\r\n\r\nbody\r\n"))
	c := e.client(nil)
	selectBox(t, c, "INBOX")
	e.proposer.FailWith(errNoQuorum)

	app := c.Append("INBOX", 4, nil)
	app.Write([]byte("x\r\n\r"))
	app.Close()
	_, err := app.Wait()
	checks := map[string]error{"append": err}
	checks["store"] = c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
	_, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	checks["fetch body[]"] = err
	checks["create"] = c.Create("New", nil).Wait()
	_, err = c.Copy(imap.SeqSetNum(1), "Trash").Wait()
	checks["copy"] = err
	_, err = c.Move(imap.SeqSetNum(1), "Trash").Wait()
	checks["move"] = err
	_, err = c.Expunge().Collect()
	checks["expunge"] = err
	checks["subscribe"] = c.Unsubscribe("Trash").Wait()
	for what, err := range checks {
		if code(err) != imap.ResponseCodeUnavailable {
			t.Errorf("%s without quorum: %v, want NO [UNAVAILABLE]", what, err)
		}
	}
	msgs := e.messages("INBOX")
	if len(msgs) != 1 || len(msgs[0].Flags) != 0 || len(e.messages("Trash")) != 0 {
		t.Fatalf("state changed without quorum: %+v", msgs)
	}
	if _, err := e.store.FolderByName(context.Background(), e.mailbox, "New"); !storage.IsCode(err, storage.ErrNotFound) {
		t.Fatalf("folder created without quorum: %v", err)
	}
	// Reads go on, and so does the session once raft is back.
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect(); err != nil {
		t.Fatalf("peek without quorum: %v", err)
	}
	e.proposer.FailWith(nil)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatalf("store after recovery: %v", err)
	}
}

// readLine reads one response line within the deadline.
func readLine(t *testing.T, r *bufio.Reader, c net.Conn) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return r.ReadString('\n')
}

// TestGarbageAndOverlongLines: nonsense and a 100 KB line get BAD or a
// closed connection, never a hang, a panic or a broken server.
func TestGarbageAndOverlongLines(t *testing.T) {
	e := newEnv(t)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		if l, err := readLine(t, r, c); err != nil || !strings.HasPrefix(l, "* OK") {
			t.Fatalf("greeting %q %v", l, err)
		}
		return c, r
	}
	send := func(c net.Conn, s string) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}

	c, r := dial()
	send(c, "a1 NOOP trailing garbage\r\n")
	if l, _ := readLine(t, r, c); !strings.HasPrefix(l, "a1 BAD") {
		t.Fatalf("NOOP with arguments: %q", l)
	}
	send(c, "a2 NOOP\r\n")
	if l, _ := readLine(t, r, c); !strings.HasPrefix(l, "a2 OK") {
		t.Fatalf("NOOP after BAD: %q", l)
	}
	send(c, "a3 LOGIN {5}\r\n")
	if l, _ := readLine(t, r, c); !strings.HasPrefix(l, "+") {
		t.Fatalf("literal: %q", l)
	}
	send(c, "x\x00\xff\x01y password\r\n")
	if l, _ := readLine(t, r, c); !strings.HasPrefix(l, "a3 BAD") && !strings.HasPrefix(l, "a3 NO") {
		t.Fatalf("binary LOGIN: %q", l)
	}
	send(c, "\x00\x01\x02\xff\xfe garbage\r\n")
	// Not even a tag: the connection is dropped.
	if l, err := readLine(t, r, c); err == nil && !strings.Contains(l, "BAD") && !strings.Contains(l, "BYE") {
		t.Fatalf("garbage got %q", l)
	}

	// Unknown command before login: BYE (imapserver's cross-protocol rule).
	c, r = dial()
	send(c, "GET / HTTP/1.1\r\n")
	if l, _ := readLine(t, r, c); !strings.Contains(l, "BAD") && !strings.Contains(l, "BYE") {
		t.Fatalf("HTTP request got %q", l)
	}

	// A 100 KB line: BAD and/or a closed connection, quickly.
	for _, prefix := range []string{"a1 NOOP ", "a1 ", ""} {
		c, r = dial()
		start := time.Now()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		go c.Write([]byte(prefix + strings.Repeat("x", 100<<10) + "\r\n"))
		var got []string
		for {
			l, err := readLine(t, r, c)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%q + 100 KB line: server neither answered nor closed (got %q)", prefix, got)
				}
				break
			}
			got = append(got, strings.TrimSpace(l))
		}
		for _, l := range got {
			if !strings.Contains(l, "BAD") && !strings.Contains(l, "BYE") {
				t.Fatalf("%q + 100 KB line: unexpected %q", prefix, l)
			}
		}
		t.Logf("%q + 100 KB line: %d responses %q, then closed after %v", prefix, len(got), got, time.Since(start).Round(time.Millisecond))
	}

	// The server still serves, in and out of TLS.
	c, r = dial()
	send(c, "b1 CAPABILITY\r\n")
	if l, _ := readLine(t, r, c); !strings.Contains(l, "STARTTLS") {
		t.Fatalf("capability: %q", l)
	}
	cl := e.client(nil)
	selectBox(t, cl, "INBOX")
	if err := cl.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestServeOnTLSListener: the appliance hands Serve a tls.NewListener for
// the implicit TLS port; that works too, and Serve returns nil on Shutdown.
func TestServeOnTLSListener(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(tls.NewListener(ln, e.srv.TLSConfig), true) }()
	c, err := imapclient.DialTLS(ln.Addr().String(), &imapclient.Options{TLSConfig: e.pki.ClientConfig("localhost")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(e.user, e.pass).Wait(); err != nil {
		t.Fatalf("login over a tls.NewListener: %v", err)
	}
	selectBox(t, c, "INBOX")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if err := (&Server{Spool: e.srv.Spool}).Serve(ln, true); err == nil {
		t.Fatal("implicit TLS without a TLSConfig accepted")
	}
}

// TestShutdownEndsEverySession: idling and half-open clients are all cut
// off, logged-in ones with a BYE, and Shutdown waits for every session.
func TestShutdownEndsEverySession(t *testing.T) {
	e := newEnv(t)
	before := runtime.NumGoroutine() // includes the two Serve loops
	var idlers []*imapclient.Client
	for i := 0; i < 3; i++ {
		c := e.client(nil)
		selectBox(t, c, "INBOX")
		if _, err := c.Idle(); err != nil {
			t.Fatal(err)
		}
		idlers = append(idlers, c)
	}
	// A logged-in raw client, to see the BYE.
	raw, err := tls.Dial("tcp", e.tls, e.pki.ClientConfig("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	r := bufio.NewReader(raw)
	readLine(t, r, raw)
	fmt.Fprintf(raw, "a1 LOGIN %s \"%s\"\r\n", e.user, e.pass)
	if l, _ := readLine(t, r, raw); !strings.HasPrefix(l, "a1 OK") {
		t.Fatalf("login: %q", l)
	}
	// And one that never even says hello.
	silent, err := net.Dial("tcp", e.plain)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	if l, _ := readLine(t, r, raw); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("no BYE at shutdown: %q", l)
	}
	for _, c := range idlers {
		select {
		case <-c.Closed():
		case <-time.After(2 * time.Second):
			t.Fatal("an idling client is still connected")
		}
	}
	e.srv.mu.Lock()
	n := len(e.srv.sessions)
	e.srv.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sessions left after Shutdown", n)
	}
	if _, err := net.DialTimeout("tcp", e.tls, time.Second); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	// Every goroutine the server started is gone (the clients' end with
	// their connections).
	raw.Close()
	silent.Close()
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before-2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Shutdown, %d before the server had work:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}

// TestIdleClientVanishes: a client that drops its connection in the middle
// of IDLE, while changes arrive, leaves no session behind; IDLE without a
// selected mailbox ends on DONE.
func TestIdleClientVanishes(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 5; i++ {
		raw, err := tls.Dial("tcp", e.tls, e.pki.ClientConfig("localhost"))
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(raw)
		readLine(t, r, raw)
		fmt.Fprintf(raw, "a1 LOGIN %s \"%s\"\r\na2 SELECT INBOX\r\na3 IDLE\r\n", e.user, e.pass)
		for {
			l, err := readLine(t, r, raw)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(l, "+") {
				break
			}
		}
		e.deliver("INBOX", []byte("Subject: x\r\n\r\ny\r\n"))
		raw.Close()
		e.deliver("INBOX", []byte("Subject: x\r\n\r\ny\r\n"))
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e.srv.mu.Lock()
		n := len(e.srv.sessions)
		e.srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions left after their clients vanished", n)
		}
	}

	c := e.client(nil)
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE without a selected mailbox: %v", err)
	}
}
