package imapd

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"sigillo/storage"
	"sigillo/storage/mailtext"
)

// BenchmarkSearch100k: SEARCH BODY and TEXT through go-imap's client on a
// folder of 100,000 messages (SEARCH_BENCH_MESSAGES to change), as
// `make bench` reports: how long filling the store takes, the text indexed
// after each batch as the server's indexer does, what the index costs on disk, and each search's
// time. It runs once (-benchtime 1x).
func BenchmarkSearch100k(b *testing.B) {
	n := 100_000
	if s := os.Getenv("SEARCH_BENCH_MESSAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	e := newEnv(b)
	fill := e.fillCorpus(b, 0, n)
	fmt.Printf("stored %d messages with their full-text index in %.1f s (%.0f messages/s, batches of 256)\n", n, fill.Seconds(), float64(n)/fill.Seconds())
	b.ReportMetric(float64(n)/fill.Seconds(), "msgs/s_deliver")
	reportSizes(b, e.store)
	// As on a server: the indexer's pass finds nothing left to index and
	// says so, which spares searches a look for unindexed messages.
	if err := e.store.IndexTextBacklog(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}

	c := e.client(nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	for _, q := range []struct {
		name, metric string
		crit         *imap.SearchCriteria
	}{
		{"BODY common word (the)", "common", &imap.SearchCriteria{Body: []string{"the"}}},
		{"BODY word (water)", "word", &imap.SearchCriteria{Body: []string{"water"}}},
		{"BODY word (fattura)", "", &imap.SearchCriteria{Body: []string{"fattura"}}},
		{"BODY rare word (rare54321x)", "rare", &imap.SearchCriteria{Body: []string{"rare54321x"}}},
		{"BODY absent word (xylophone)", "absent", &imap.SearchCriteria{Body: []string{"xylophone"}}},
		{"BODY phrase (water than)", "phrase", &imap.SearchCriteria{Body: []string{"water than"}}},
		{"BODY mid-word (ould b)", "", &imap.SearchCriteria{Body: []string{"ould b"}}},
		{"BODY accented (città)", "", &imap.SearchCriteria{Body: []string{"città"}}},
		{"TEXT rare word (rare777x)", "text", &imap.SearchCriteria{Text: []string{"rare777x"}}},
		{"BODY two letters (zq)", "short", &imap.SearchCriteria{Body: []string{"zq"}}},
		{"UNSEEN OR BODY rare BODY rare", "", &imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen},
			Or: [][2]imap.SearchCriteria{{{Body: []string{"rare12x"}}, {Body: []string{"rare99999x"}}}}}},
	} {
		for _, run := range []string{"first", "again"} {
			start := time.Now()
			data, err := c.UIDSearch(q.crit, nil).Wait()
			d := time.Since(start)
			if err != nil {
				fmt.Printf("SEARCH %s (%s): %v after %.0f ms\n", q.name, run, err, d.Seconds()*1000)
				continue
			}
			fmt.Printf("SEARCH %s on %d messages (%s): %d found in %.1f ms\n", q.name, n, run, len(data.AllUIDs()), d.Seconds()*1000)
			if run == "first" && q.metric != "" {
				b.ReportMetric(d.Seconds()*1000, "ms_body_"+q.metric)
			}
		}
	}

	// What every BODY search cost before the index: reading and decoding
	// each message.
	msgs := e.messages("INBOX")
	start := time.Now()
	found := 0
	for _, m := range msgs {
		content, err := e.store.Content(context.Background(), m.SHA256)
		if err != nil {
			b.Fatal(err)
		}
		if storage.ContainsFold(mailtext.Extract(content, mailtext.Full()).Body, "rare54321x") {
			found++
		}
	}
	fmt.Printf("reading and decoding all %d messages instead (no index): %d found in %.0f ms\n", len(msgs), found, time.Since(start).Seconds()*1000)
}

// reportSizes prints the database size and what the text and its index
// take.
func reportSizes(b *testing.B, s *storage.Store) {
	db, err := sql.Open("sqlite", "file:"+s.Path()+"?mode=ro")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	size := func(q string) float64 {
		var n sql.NullInt64
		if err := db.QueryRow(q).Scan(&n); err != nil {
			b.Logf("%s: %v", q, err)
		}
		return float64(n.Int64) / (1 << 20)
	}
	total := size("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
	blobs := size("SELECT sum(pgsize) FROM dbstat WHERE name IN ('blobs', 'sqlite_autoindex_blobs_1')")
	text := size("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'blob_text%' OR name = 'sqlite_autoindex_blob_text_1'")
	fts := size("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'blob_fts%'")
	fmt.Printf("database %.0f MiB: content %.0f MiB, its text %.0f MiB, the trigram index %.0f MiB\n", total, blobs, text, fts)
	b.ReportMetric(fts, "MiB_index")
}
