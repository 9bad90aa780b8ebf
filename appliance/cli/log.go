package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/config"
	"sigillo/appliance/control"
	"sigillo/appliance/legallog"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

// logCommand searches and verifies the PEC legal log through the running
// server or, when none answers on the control socket, in its database file
// opened read-only (a stopped server, an inspection of a copy).
var logCommand = command{
	name: "log",
	usage: "log search [--msgid ID] [--from ADDR] [--since DATE] [--until DATE] [--limit N] [--json]\n" +
		"log verify [--roots PEM]",
	notes: []string{configNote},
	run:   runLog,
}

func runLog(e *env, words []string) error {
	sub, words := first(words)
	switch sub {
	case "search":
		return logSearch(e, words)
	case "verify":
		return logVerify(e, words)
	}
	return e.usageError()
}

// searchFlags are the words of log search as typed.
type searchFlags struct {
	msgid, from, since, until string
	limit                     int
}

func logSearch(e *env, words []string) error {
	fs := e.flags("log search", true)
	var sf searchFlags
	fs.StringVar(&sf.msgid, "msgid", "", "a message's PEC msgid or Message-ID")
	fs.StringVar(&sf.from, "from", "", "the sender's address")
	fs.StringVar(&sf.since, "since", "", "from this date (YYYY-MM-DD) or time (RFC 3339)")
	fs.StringVar(&sf.until, "until", "", "up to this date (included) or time (excluded)")
	fs.IntVar(&sf.limit, "limit", 1000, "at most this many entries (0: all)")
	asJSON := jsonFlag(fs)
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	f, err := logFilter(sf)
	if err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	var recs []legallog.Record
	err = callLong(cfg, "log.search", legallog.FilterArgs(f), &recs)
	if errors.Is(err, control.ErrNoServer) {
		recs, err = offline(cfg, e.stderr, func(ctx context.Context, s *storage.Store) ([]legallog.Record, error) {
			return legallog.Search(ctx, s, f)
		})
	}
	if err != nil {
		return err
	}
	if *asJSON {
		if recs == nil {
			recs = []legallog.Record{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetEscapeHTML(false) // Message-IDs keep their <>
		return enc.Encode(recs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tMSGID\tSENDER\tRECIPIENTS\tSUBJECT")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Local().Format(time.DateTime), r.Event, r.MsgID,
			r.Sender, strings.Join(r.Recipients, ","), r.Subject)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if f.Limit > 0 && len(recs) == f.Limit {
		fmt.Fprintf(e.stderr, "sigillo: showing the first %s: narrow the search or raise --limit\n", plural(f.Limit, "entry", "entries"))
	}
	return nil
}

func logVerify(e *env, words []string) error {
	fs := e.flags("log verify", true)
	rootsFile := fs.String("roots", "", "PEM file of trusted roots for the heads' certificates")
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	var pemText string
	if *rootsFile != "" {
		b, err := os.ReadFile(*rootsFile)
		if err != nil {
			return fmt.Errorf("log verify: %w", err)
		}
		pemText = string(b)
	}
	roots, err := legallog.RootsFromPEM(pemText)
	if err != nil {
		return fmt.Errorf("log verify: %s: %w", *rootsFile, err)
	}
	var r peclog.Report
	err = callLong(cfg, "log.verify", map[string]string{"roots": pemText}, &r)
	if errors.Is(err, control.ErrNoServer) {
		r, err = offline(cfg, e.stderr, func(ctx context.Context, s *storage.Store) (peclog.Report, error) {
			return legallog.Verify(ctx, s, roots)
		})
	}
	if err != nil {
		return err
	}
	fmt.Fprint(e.stdout, r.String())
	if !r.OK {
		if len(r.Problems) == 0 {
			return errors.New("the legal log does not verify")
		}
		return fmt.Errorf("the legal log does not verify: first problem at %s", r.Problems[0])
	}
	return nil
}

// logFilter reads the search flags. A date is a whole day in local time:
// --since from its start, --until to its end.
func logFilter(c searchFlags) (storage.LogFilter, error) {
	f := storage.LogFilter{MsgID: c.msgid, Sender: c.from, Limit: c.limit}
	if c.limit < 0 {
		return f, fmt.Errorf("log search: --limit %d: use a count (0: all)", c.limit)
	}
	for _, w := range []struct {
		name, value string
		dst         *time.Time
		endOfDay    bool
	}{{"since", c.since, &f.Since, false}, {"until", c.until, &f.Until, true}} {
		if w.value == "" {
			continue
		}
		if t, err := time.Parse(time.RFC3339, w.value); err == nil {
			*w.dst = t
			continue
		}
		d, err := time.ParseInLocation(time.DateOnly, w.value, time.Local)
		if err != nil {
			return f, fmt.Errorf("log search: --%s %q: use a date like 2025-03-01 or a time like 2025-03-01T09:30:00+01:00", w.name, w.value)
		}
		if w.endOfDay {
			d = d.AddDate(0, 0, 1)
		}
		*w.dst = d
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, errors.New("log search: --since must be before --until")
	}
	return f, nil
}

// offline runs do on the database of a server that is not running, opened
// read-only.
func offline[T any](cfg config.Config, stderr io.Writer, do func(context.Context, *storage.Store) (T, error)) (T, error) {
	var zero T
	path := appliance.DatabaseFile(cfg)
	s, err := storage.OpenReadOnly(path)
	if err != nil {
		return zero, fmt.Errorf("no server answers on %s, and its database cannot be read: %w", cfg.ControlSocket(), err)
	}
	defer s.Close()
	fmt.Fprintf(stderr, "sigillo: no server running: reading %s\n", path)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return do(ctx, s)
}
