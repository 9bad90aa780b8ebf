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
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
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
	addr := fmt.Sprintf("127.0.0.1:%d", in.ports["submissions"])
	user, pw := "bench@bench.test", password("bench@bench.test")

	for _, size := range []int{1 << 10, 100 << 10} {
		total := 2000
		if size > 1<<10 {
			total = 400
		}
		body := message(size)
		var sent atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		start := time.Now()
		for w := 0; w < 8; w++ {
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
					if err := sendOne(c, user, body); err != nil {
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
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(total)/secs, fmt.Sprintf("msgs/s_%dKB", size>>10))
		fmt.Printf("SMTPS %d KB x %d, 8 senders: %.0f messages/s accepted and stored (%.1f s)\n", size>>10, total, float64(total)/secs, secs)
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

func sendOne(c *smtp.Client, user string, body []byte) error {
	if err := c.Mail(user); err != nil {
		return err
	}
	if err := c.Rcpt(user); err != nil {
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
