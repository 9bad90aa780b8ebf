package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/smtp"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"sigillo/appliance/apptest"
	"sigillo/appliance/signer"
)

// BenchmarkAppliance measures the running binary on loopback, as
// `make bench` reports: SMTPS messages/s accepted and stored with 8
// concurrent senders (1 KB and 100 KB), IMAP FETCH of 1,000 messages, and
// the server's peak RSS. It runs once (-benchtime 1x); figures are
// reported as metrics.
func BenchmarkAppliance(b *testing.B) {
	in := newInstance(b, "mail.bench.test", "")
	in.start()
	in.provision("bench.test", "bench@bench.test")
	tlsConf := in.tlsClient(b, "127.0.0.1")
	user, pw := "bench@bench.test", password("bench@bench.test")

	for _, size := range []int{1 << 10, 100 << 10} {
		total := 2000
		if size > 1<<10 {
			total = 400
		}
		rate := blast(b, in, size, total)
		b.ReportMetric(rate, fmt.Sprintf("msgs/s_%dKB", size>>10))
		fmt.Printf("SMTPS %d KB x %d, 8 senders: %.0f messages/s accepted and stored (%.1f s)\n", size>>10, total, rate, float64(total)/rate)
	}

	// IMAP FETCH of 1,000 messages (the 1 KB ones are the first 2,000).
	c, err := imapclient.DialTLS(fmt.Sprintf("127.0.0.1:%d", in.ports["imaps"]), &imapclient.Options{TLSConfig: tlsConf})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, pw).Wait(); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	var seq imap.SeqSet
	seq.AddRange(1, 1000)
	for _, what := range []struct {
		name string
		opts *imap.FetchOptions
	}{
		{"FLAGS ENVELOPE RFC822.SIZE", &imap.FetchOptions{Flags: true, Envelope: true, RFC822Size: true, UID: true}},
		{"BODY.PEEK[]", &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}},
	} {
		start := time.Now()
		msgs, err := c.Fetch(seq, what.opts).Collect()
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if len(msgs) != 1000 {
			b.Fatalf("fetched %d messages", len(msgs))
		}
		fmt.Printf("IMAP FETCH 1:1000 (%s): %.0f ms\n", what.name, d.Seconds()*1000)
		b.ReportMetric(d.Seconds()*1000, "ms_fetch_"+strings.Fields(what.name)[0])
	}
	rss := peakRSS(in)
	fmt.Printf("server peak RSS: %.1f MiB (now: %s)\n", float64(rss)/1024, rssNow(in))
	b.ReportMetric(float64(rss)/1024, "MiB_peak_RSS")
}

func message(size int) []byte {
	var buf bytes.Buffer
	buf.WriteString("From: bench@bench.test\r\nTo: bench@bench.test\r\nSubject: benchmark\r\n\r\n")
	line := strings.Repeat("x", 76) + "\r\n"
	for buf.Len() < size {
		buf.WriteString(line)
	}
	return buf.Bytes()
}

func sendOne(c *smtp.Client, from, to string, body []byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	return w.Close()
}

// rssNow tells the anonymous (heap) and file-backed (mmap) parts of RSS.
func rssNow(in *instance) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.cmd.Process.Pid))
	if err != nil {
		return "?"
	}
	var parts []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "RssAnon:") || strings.HasPrefix(l, "RssFile:") {
			parts = append(parts, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(parts, ", ")
}

// peakRSS reads VmHWM of the server process, in KiB.
func peakRSS(in *instance) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", in.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkPEC measures certified mail end to end on one node with the
// gestore key in SoftHSM2: PEC messages/s from submission to the consegna
// (accettazione, busta, local delivery and ricevuta di avvenuta consegna:
// three signatures each, all stored before the 250), with 8 concurrent
// senders, and beside it what the token alone signs per second.
func BenchmarkPEC(b *testing.B) {
	w := newPECWorld(b)
	in := w.a
	in.cli(password("bob@a.test")+"\n", "mailbox", "add", "bob@a.test", "--password-stdin")
	body := []byte("From: alice@a.test\r\nTo: bob@a.test\r\nSubject: benchmark PEC\r\nMessage-ID: <bench@client>\r\n\r\n" +
		strings.Repeat(strings.Repeat("x", 76)+"\r\n", 12))
	const total, senders = 400, 8
	rate := blastFrom(b, in, "alice@a.test", "bob@a.test", body, total)
	secs := total / rate
	b.ReportMetric(rate, "pec_msgs/s")
	fmt.Printf("PEC same-domain, %d messages, %d senders: %.0f messages/s (accettazione + busta + consegna stored before each 250; %.1f s)\n",
		total, senders, rate, secs)
	if got := len(w.a.inbox(b, "bob@a.test", 0)); got != total {
		// inbox fetches everything; a short count means lost messages.
		b.Fatalf("bob has %d bustas, want %d", got, total)
	}

	// The token alone, from this process: serial and 2 in parallel.
	for _, par := range []int{1, 2} {
		n, d := signLoop(b, w, par, 2*time.Second)
		fmt.Printf("SoftHSM2 alone, %d signer(s): %.0f signatures/s\n", par, float64(n)/d.Seconds())
		b.ReportMetric(float64(n)/d.Seconds(), fmt.Sprintf("sig/s_%d", par))
	}
	fmt.Printf("server peak RSS: %.1f MiB\n", float64(peakRSS(in))/1024)
}

// signLoop signs a 2 KB entity with gestore A's token key for d, on par
// goroutines, and returns how many signatures were made.
func signLoop(b *testing.B, w *pecWorld, par int, d time.Duration) (int64, time.Duration) {
	pin, err := os.ReadFile(w.pins["gestore-a"])
	if err != nil {
		b.Fatal(err)
	}
	s, err := signer.Open(signer.Config{PKCS11Module: w.module, TokenLabel: "gestore-a", PIN: strings.TrimSpace(string(pin)), KeyLabel: "gestore"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	part := []byte("Content-Type: text/plain\r\n\r\n" + strings.Repeat("y", 2048) + "\r\n")
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				if _, _, err := s.SignMIME(part); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

// BenchmarkScan measures SMTPS messages/s accepted with virus scanning on
// (a real clamd, private signature database) and off, for 1 KB and 1 MB
// messages, 8 concurrent senders.
func BenchmarkScan(b *testing.B) {
	clamd := apptest.StartClamd(b)
	for _, mode := range []struct{ name, extra string }{
		{"off", ""},
		{"on", fmt.Sprintf("[scan]\nclamd = %q\nrequired = true\n", clamd.Address)},
	} {
		in := newInstance(b, "mail.bench.test", mode.extra)
		in.start()
		in.provision("bench.test", "bench@bench.test")
		for _, size := range []int{1 << 10, 1000 << 10} {
			total := 1000
			if size > 1<<10 {
				total = 60
			}
			rate := blast(b, in, size, total)
			fmt.Printf("scan %s, %d KB x %d, 8 senders: %.0f messages/s\n", mode.name, size>>10, total, rate)
			b.ReportMetric(rate, fmt.Sprintf("msgs/s_scan_%s_%dKB", mode.name, size>>10))
		}
		in.stop(syscall.SIGTERM)
	}
}

// blast sends total messages of size bytes from bench@bench.test to itself
// over SMTPS with 8 senders and returns the rate at which they were
// accepted.
func blast(b *testing.B, in *instance, size, total int) float64 {
	return blastFrom(b, in, "bench@bench.test", "bench@bench.test", message(size), total)
}

// blastFrom sends total copies of body from user (authenticated with its
// test password) to rcpt over SMTPS with 8 senders and returns the rate at
// which they were accepted.
func blastFrom(b *testing.B, in *instance, user, rcpt string, body []byte, total int) float64 {
	tlsConf := in.tlsClient(b, "127.0.0.1")
	addr := fmt.Sprintf("127.0.0.1:%d", in.ports["submissions"])
	pw := password(user)
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.Dial("tcp", addr, tlsConf)
			if err != nil {
				errs <- err
				return
			}
			c, err := smtp.NewClient(conn, "127.0.0.1")
			if err != nil {
				errs <- err
				return
			}
			defer c.Quit()
			if err := c.Auth(smtp.PlainAuth("", user, pw, "127.0.0.1")); err != nil {
				errs <- err
				return
			}
			for sent.Add(1) <= int64(total) {
				if err := sendOne(c, user, rcpt, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("send: %v", err)
	}
	return float64(total) / time.Since(start).Seconds()
}
