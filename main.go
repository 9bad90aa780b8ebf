// Command sigillo is a mail server for a few hosted domains in one binary:
// SMTP, IMAP and POP3 over TLS on a raft-replicated SQLite store.
//
//	sigillo serve [--config FILE]
//	sigillo domain add|list|remove [NAME]
//	sigillo mailbox add|passwd ADDRESS --password-stdin [--quota BYTES]
//	sigillo mailbox list [DOMAIN] | remove ADDRESS
//	sigillo queue list
//	sigillo gestore init [--ca CERT --ca-key KEY] | cert
//	sigillo directory import FILE.ldif | export | list
//	sigillo pec verify [--roots PEM] FILE...
//	sigillo log search [--msgid ID] [--from ADDR] [--since DATE] [--until DATE] [--limit N] [--json]
//	sigillo log verify [--roots PEM]
//	sigillo scan status
//	sigillo cert status
//	sigillo ca export
//	sigillo bench [--scenario smtp,deliver,imap,pop3,pec|all] [--server NAME] [--host H] [--json] ...
//	sigillo version
//
// Every subcommand takes --config FILE; all but serve talk to the running
// server over its control socket (log reads the database file directly
// when no server is running).
package main

import (
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/bytesize"
	"sigillo/appliance/config"
	"sigillo/appliance/control"
	"sigillo/appliance/devtoken"
	"sigillo/appliance/legallog"
	"sigillo/appliance/loadgen"
	"sigillo/appliance/pecdir"
	"sigillo/appliance/pecverify"
	"sigillo/storage"
	"sigillo/storage/peclog"
)

const usage = `usage:
  sigillo serve [--config FILE]
  sigillo domain add NAME [--pec] | list | remove NAME
  sigillo mailbox add ADDRESS [--password-stdin] [--quota SIZE]
  sigillo mailbox passwd ADDRESS [--password-stdin]
  sigillo mailbox list [DOMAIN] | remove ADDRESS
  sigillo queue list
  sigillo gestore init [--ca CERT --ca-key KEY] | cert
  sigillo directory import FILE.ldif | export | list
  sigillo pec verify [--roots PEM] FILE...
  sigillo log search [--msgid ID] [--from ADDR] [--since DATE] [--until DATE] [--limit N] [--json]
  sigillo log verify [--roots PEM]
  sigillo scan status
  sigillo cert status
  sigillo ca export
  sigillo bench [--scenario smtp,deliver,imap,pop3,pec|all] [--user PATTERN --password P] ... (sigillo bench -h)
  sigillo version
every subcommand takes --config FILE (default: the embedded configuration of make run);
passwords: at least 8 characters, asked on the terminal or read with --password-stdin;
SIZE: bytes, or with K, M, G or T (1024-based): 500M, 1.5G (default 1G; 0: unlimited)`

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errNotAllValid) {
			fmt.Fprintln(os.Stderr, "sigillo:", err)
		}
		os.Exit(1)
	}
}

// cli holds one invocation's parsed flags and positional words.
type cli struct {
	config        string
	passwordStdin bool
	quota         string
	json          bool
	ca, caKey     string
	pec           bool
	msgid, from   string
	since, until  string
	limit         int
	roots         string
	args          []string
}

// parse accepts flags anywhere among the words, as users type them.
func parse(name string, words []string) (*cli, error) {
	c := &cli{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.config, "config", "", "configuration file")
	fs.BoolVar(&c.passwordStdin, "password-stdin", false, "read the password from standard input")
	fs.StringVar(&c.quota, "quota", "", "mailbox quota in bytes (or 500M, 2G; 0: unlimited)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.BoolVar(&c.pec, "pec", false, "run the domain as PEC (certified mail)")
	fs.StringVar(&c.ca, "ca", "", "CA certificate (PEM) to sign the gestore certificate")
	fs.StringVar(&c.caKey, "ca-key", "", "the CA's private key (PEM)")
	fs.StringVar(&c.msgid, "msgid", "", "log search: a message's PEC msgid or Message-ID")
	fs.StringVar(&c.from, "from", "", "log search: the sender's address")
	fs.StringVar(&c.since, "since", "", "log search: from this date (YYYY-MM-DD) or time (RFC 3339)")
	fs.StringVar(&c.until, "until", "", "log search: up to this date (included) or time (excluded)")
	fs.IntVar(&c.limit, "limit", 1000, "log search: at most this many entries (0: all)")
	fs.StringVar(&c.roots, "roots", "", "log verify: PEM file of trusted roots for the heads' certificates")
	for {
		if err := fs.Parse(words); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := flagTakenAsValue(fs); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if fs.NArg() == 0 {
			return c, nil
		}
		c.args = append(c.args, fs.Arg(0))
		words = fs.Args()[1:]
	}
}

func run(argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	argv = configFirst(argv)
	if len(argv) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := argv[0], argv[1:]
	switch cmd {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "sigillo", appliance.Version)
		return nil
	case "help", "--help", "-h":
		if len(rest) == 1 && commandUsage(rest[0]) != "" {
			fmt.Fprintln(stdout, commandUsage(rest[0]))
			return nil
		}
		fmt.Fprintln(stdout, usage)
		return nil
	case "pec":
		// Works on files alone: no configuration, no running server.
		return pecCmd(rest, stdout)
	case "bench":
		// A client of any mail server: no configuration, no control socket.
		return benchCmd(rest, stdout, stderr)
	}
	switch cmd {
	case "serve", "domain", "mailbox", "queue", "ca", "gestore", "directory", "log", "scan", "cert":
	default:
		return fmt.Errorf("unknown command %q (sigillo help lists them)", cmd)
	}
	c, err := parse(cmd, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, commandUsage(cmd))
		return nil
	}
	if err != nil {
		return err
	}
	cfg, err := config.Load(c.config)
	if err != nil {
		return err
	}
	if c.config == "" && needsSigner(cmd, c.args) && cfg.Signer.PKCS11Module == "" && cfg.Signer.KeyFile == "" {
		if err := useDevToken(&cfg, cmd == "serve"); err != nil {
			if cmd != "serve" {
				return err
			}
			// make run without SoftHSM2: mail works, PEC does not.
			fmt.Fprintf(stderr, "no development PKCS#11 token, so no PEC gestore: %v\n", err)
		}
	}
	switch cmd {
	case "serve":
		if len(c.args) > 0 {
			return fmt.Errorf("serve takes no arguments, got %q", c.args[0])
		}
		return serve(cfg, commandLine(os.Args[0], c.config), stdout, stderr)
	case "domain":
		return domainCmd(cfg, c, stdout, stderr)
	case "mailbox":
		return mailboxCmd(cfg, c, stdin, stdout, stderr)
	case "queue":
		return queueCmd(cfg, c, stdout)
	case "scan":
		return scanCmd(cfg, c, stdout)
	case "cert":
		return certCmd(cfg, c, stdout)
	case "gestore":
		return gestoreCmd(cfg, c, stdout, stderr)
	case "directory":
		return directoryCmd(cfg, c, stdout)
	case "log":
		return logCmd(cfg, c, stdout, stderr)
	case "ca":
		if len(c.args) != 1 || c.args[0] != "export" {
			return errors.New("usage: sigillo ca export")
		}
		var pem string
		if err := call(cfg, "ca.export", nil, &pem); err != nil {
			return err
		}
		fmt.Fprint(stdout, pem)
		return nil
	}
	return fmt.Errorf("unknown command %q (sigillo help lists them)", cmd)
}

// serve runs the server; command is how the user ran this binary, for the
// banner's examples.
func serve(cfg config.Config, command string, stdout, stderr io.Writer) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGILLO_CPUPROFILE=FILE: a CPU profile of the whole run, for
	// `go tool pprof` (how the benchmark's figures were explained).
	if path := os.Getenv("SIGILLO_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("SIGILLO_CPUPROFILE: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("SIGILLO_CPUPROFILE: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// SIGILLO_MEMPROFILE=FILE: a heap profile written at exit, for `go
	// tool pprof -sample_index=alloc_space` (where every copy of a message
	// was made) or inuse_space (what was still held at the end).
	if path := os.Getenv("SIGILLO_MEMPROFILE"); path != "" {
		defer func() {
			if err := writeHeapProfile(path); err != nil {
				logger.Error("SIGILLO_MEMPROFILE", "err", err)
			}
		}()
	}
	return appliance.Run(ctx, cfg, appliance.Options{Logger: logger, Out: stdout, Command: command})
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC() // the in-use figures as of now
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func call(cfg config.Config, op string, args map[string]string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return control.Call(ctx, cfg.ControlSocket(), control.Request{Op: op, Args: args}, out)
}

func domainCmd(cfg config.Config, c *cli, stdout, stderr io.Writer) error {
	sub, args := first(c.args)
	switch {
	case sub == "add" && len(args) == 1:
		var d appliance.Named
		if err := call(cfg, "domain.add", map[string]string{"name": args[0], "pec": fmt.Sprint(c.pec)}, &d); err != nil {
			return err
		}
		if c.pec {
			fmt.Fprintf(stdout, "PEC domain %s added\n", withUnicode(d.Name, d.Unicode))
		} else {
			fmt.Fprintf(stdout, "domain %s added\n", withUnicode(d.Name, d.Unicode))
		}
		if d.Warning != "" {
			fmt.Fprintln(stderr, "sigillo: warning:", d.Warning)
		}
		return nil
	case sub == "remove" && len(args) == 1:
		var d appliance.Named
		if err := call(cfg, "domain.remove", map[string]string{"name": args[0]}, &d); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "domain %s removed\n", withUnicode(d.Name, d.Unicode))
		return nil
	case sub == "list" && len(args) == 0:
		var ds []appliance.DomainInfo
		if err := call(cfg, "domain.list", nil, &ds); err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(stdout).Encode(ds)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tKIND\tMAILBOXES\tCREATED")
		for _, d := range ds {
			kind := "mail"
			if d.PEC {
				kind = "PEC"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", withUnicode(d.Name, d.Unicode), kind, d.Mailboxes, d.Created.Format(time.DateOnly))
		}
		return tw.Flush()
	}
	return errors.New("usage: sigillo domain add NAME [--pec] | list | remove NAME")
}

func mailboxCmd(cfg config.Config, c *cli, stdin io.Reader, stdout, stderr io.Writer) error {
	sub, args := first(c.args)
	switch {
	case (sub == "add" || sub == "passwd") && len(args) == 1:
		pw, err := readPassword(sub, args[0], c.passwordStdin, stdin, stderr)
		if err != nil {
			return err
		}
		a := map[string]string{"address": args[0], "password": pw}
		op := "mailbox.passwd"
		if sub == "add" {
			op = "mailbox.add"
			a["quota"] = c.quota
		}
		var m appliance.Named
		if err := call(cfg, op, a, &m); err != nil {
			return err
		}
		if sub == "add" {
			fmt.Fprintf(stdout, "mailbox %s added\n", withUnicode(m.Name, m.Unicode))
		} else {
			fmt.Fprintf(stdout, "password of %s changed\n", withUnicode(m.Name, m.Unicode))
		}
		return nil
	case sub == "remove" && len(args) == 1:
		var m appliance.Named
		if err := call(cfg, "mailbox.remove", map[string]string{"address": args[0]}, &m); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "mailbox %s removed\n", withUnicode(m.Name, m.Unicode))
		return nil
	case sub == "list" && len(args) <= 1:
		a := map[string]string{}
		if len(args) == 1 {
			a["domain"] = args[0]
		}
		var mbs []appliance.MailboxInfo
		if err := call(cfg, "mailbox.list", a, &mbs); err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(stdout).Encode(mbs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tUSED\tQUOTA")
		for _, m := range mbs {
			q := "unlimited"
			if m.QuotaBytes > 0 {
				q = bytesize.Format(m.QuotaBytes)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", withUnicode(m.Address, m.Unicode), bytesize.Human(m.UsedBytes), q)
		}
		return tw.Flush()
	}
	return errors.New("usage: sigillo mailbox add|passwd ADDRESS [--password-stdin] [--quota SIZE] | list [DOMAIN] | remove ADDRESS")
}

func queueCmd(cfg config.Config, c *cli, stdout io.Writer) error {
	if len(c.args) != 1 || c.args[0] != "list" {
		return errors.New("usage: sigillo queue list")
	}
	var items []appliance.QueueInfo
	if err := call(cfg, "queue.list", nil, &items); err != nil {
		return err
	}
	if c.json {
		return json.NewEncoder(stdout).Encode(items)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIZE\tSENDER\tRECIPIENTS\tATTEMPTS\tNEXT\tLAST ERROR")
	for _, it := range items {
		sender := it.Sender
		if sender == "" {
			sender = "<>"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", it.ID, it.Size, sender, strings.Join(it.Recipients, ","),
			it.Attempts, it.NextAttempt.Local().Format(time.DateTime), it.LastError)
	}
	return tw.Flush()
}

// certCmd shows the certificates the listeners serve: for each name its
// issuer, validity and source (ACME or the local CA), and the last error
// from the ACME CA.
func certCmd(cfg config.Config, c *cli, stdout io.Writer) error {
	if len(c.args) != 1 || c.args[0] != "status" {
		return errors.New("usage: sigillo cert status")
	}
	var st appliance.CertStatus
	if err := call(cfg, "cert.status", nil, &st); err != nil {
		return err
	}
	if c.json {
		return json.NewEncoder(stdout).Encode(st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tISSUER\tEXPIRES")
	for _, ci := range st.Certs {
		exp := ""
		if !ci.NotAfter.IsZero() {
			exp = ci.NotAfter.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ci.Name, ci.Source, ci.Issuer, exp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.LastError != "" {
		fmt.Fprintf(stdout, "last ACME error (%s): %s\n", st.ErrorAt.Local().Format(time.DateTime), st.LastError)
	}
	return nil
}

// scanCmd shows the virus scanner: clamd's address, whether it answers, its
// engine and signature versions, and the size of the virus store.
func scanCmd(cfg config.Config, c *cli, stdout io.Writer) error {
	if len(c.args) != 1 || c.args[0] != "status" {
		return errors.New("usage: sigillo scan status")
	}
	var info appliance.ScanInfo
	if err := call(cfg, "scan.status", nil, &info); err != nil {
		return err
	}
	if c.json {
		return json.NewEncoder(stdout).Encode(info)
	}
	if !info.Enabled {
		fmt.Fprintf(stdout, "scanning off (no [scan] clamd); virus store: %s\n", plural(info.Infected, "message", "messages"))
		return nil
	}
	state := "answering"
	if !info.OK {
		state = "NOT ANSWERING: " + info.Error
	}
	fmt.Fprintf(stdout, "clamd %s (required %v): %s\n", info.Address, info.Required, state)
	if info.Version != "" {
		fmt.Fprintf(stdout, "version: %s\n", info.Version)
	}
	fmt.Fprintf(stdout, "virus store: %s\n", plural(info.Infected, "message", "messages"))
	if !info.OK {
		return errors.New("clamd is not answering")
	}
	return nil
}

// gestoreCmd makes or shows the PEC gestore's key and certificate. It works
// on the token directly: the server need not run.
func gestoreCmd(cfg config.Config, c *cli, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sub, args := first(c.args)
	switch {
	case sub == "init" && len(args) == 0:
		cert, err := appliance.GestoreInit(cfg, c.ca, c.caKey, logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "gestore certificate for %s (%s), valid until %s, SHA-1 %X\n",
			strings.Join(cert.EmailAddresses, ","), cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly), sha1.Sum(cert.Raw))
		return nil
	case sub == "cert" && len(args) == 0:
		chain, err := appliance.GestoreCert(cfg, logger)
		if err != nil {
			return err
		}
		for _, cert := range chain {
			pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
		}
		return nil
	}
	return errors.New("usage: sigillo gestore init [--ca CERT --ca-key KEY] | cert")
}

// directoryCmd loads and shows the PEC providers directory.
func directoryCmd(cfg config.Config, c *cli, stdout io.Writer) error {
	sub, args := first(c.args)
	switch {
	case sub == "import" && len(args) == 1:
		data, err := os.ReadFile(args[0])
		if err != nil {
			return fmt.Errorf("directory import: %w", err)
		}
		var res map[string]int
		if err := call(cfg, "directory.import", map[string]string{"ldif": string(data)}, &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s imported; the directory lists %d\n", plural(res["imported"], "provider", "providers"), res["total"])
		return nil
	case sub == "export" && len(args) == 0:
		return exportDirectory(cfg, stdout)
	case sub == "list" && len(args) == 0:
		var ps []appliance.ProviderInfo
		if err := call(cfg, "directory.list", nil, &ps); err != nil {
			return err
		}
		if c.json {
			return json.NewEncoder(stdout).Encode(ps)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PROVIDER\tMAIL RECEIPT\tDOMAINS\tCERTIFICATE SHA-1")
		for _, p := range ps {
			name := p.Name
			if p.Unit != "" {
				name += " (" + p.Unit + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, p.MailReceipt, strings.Join(p.ManagedDomains, ","), strings.Join(p.CertificateSHA1, ","))
		}
		return tw.Flush()
	}
	return errors.New("usage: sigillo directory import FILE.ldif | export | list")
}

// exportDirectory prints this gestore's own directory entry as LDIF: its
// name, service address (mailReceipt), certificate and PEC domains (with
// the service address's domain).
func exportDirectory(cfg config.Config, stdout io.Writer) error {
	var ds []appliance.DomainInfo
	if err := call(cfg, "domain.list", nil, &ds); err != nil {
		return err
	}
	var domains []string
	for _, d := range ds {
		if d.PEC {
			domains = append(domains, d.Name)
		}
	}
	if len(domains) == 0 {
		return errors.New("directory export: no PEC domain here (sigillo domain add NAME --pec)")
	}
	if cfg.PEC.ProviderName == "" {
		return errors.New("directory export: set provider_name in [pec]")
	}
	// The service address signs every receipt as its From: its domain is
	// managed too, or other gestori would refuse our receipts (RFC 6109 §7).
	if _, sd, ok := strings.Cut(cfg.ServiceAddress(), "@"); ok && !slices.Contains(domains, strings.ToLower(sd)) {
		domains = append(domains, strings.ToLower(sd))
	}
	chain, err := appliance.GestoreCert(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("directory export: %w", err)
	}
	p := pecdir.Provider{Name: cfg.PEC.ProviderName, MailReceipt: cfg.ServiceAddress(), ManagedDomains: domains,
		Certificates: chain[:1], CertificateHash: []string{"SHA1#" + pecdir.SHA1Hex(chain[0])}}
	return pecdir.WriteLDIF(stdout, []pecdir.Provider{p})
}

const logUsage = "usage: sigillo log search [--msgid ID] [--from ADDR] [--since DATE] [--until DATE] [--limit N] [--json] | verify [--roots PEM]"

// logCmd searches and verifies the PEC legal log through the running
// server or, when none answers on the control socket, in its database file
// opened read-only (a stopped server, an inspection of a copy).
func logCmd(cfg config.Config, c *cli, stdout, stderr io.Writer) error {
	sub, args := first(c.args)
	switch {
	case sub == "search" && len(args) == 0:
		f, err := logFilter(c)
		if err != nil {
			return err
		}
		var recs []legallog.Record
		err = callLong(cfg, "log.search", legallog.FilterArgs(f), &recs)
		if errors.Is(err, control.ErrNoServer) {
			recs, err = offline(cfg, stderr, func(ctx context.Context, s *storage.Store) ([]legallog.Record, error) {
				return legallog.Search(ctx, s, f)
			})
		}
		if err != nil {
			return err
		}
		if c.json {
			if recs == nil {
				recs = []legallog.Record{}
			}
			enc := json.NewEncoder(stdout)
			enc.SetEscapeHTML(false) // Message-IDs keep their <>
			return enc.Encode(recs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tMSGID\tSENDER\tRECIPIENTS\tSUBJECT")
		for _, r := range recs {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.Local().Format(time.DateTime), r.Event, r.MsgID,
				r.Sender, strings.Join(r.Recipients, ","), r.Subject)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if f.Limit > 0 && len(recs) == f.Limit {
			fmt.Fprintf(stderr, "sigillo: showing the first %s: narrow the search or raise --limit\n", plural(f.Limit, "entry", "entries"))
		}
		return nil
	case sub == "verify" && len(args) == 0:
		var pemText string
		if c.roots != "" {
			b, err := os.ReadFile(c.roots)
			if err != nil {
				return fmt.Errorf("log verify: %w", err)
			}
			pemText = string(b)
		}
		roots, err := legallog.RootsFromPEM(pemText)
		if err != nil {
			return fmt.Errorf("log verify: %s: %w", c.roots, err)
		}
		var r peclog.Report
		err = callLong(cfg, "log.verify", map[string]string{"roots": pemText}, &r)
		if errors.Is(err, control.ErrNoServer) {
			r, err = offline(cfg, stderr, func(ctx context.Context, s *storage.Store) (peclog.Report, error) {
				return legallog.Verify(ctx, s, roots)
			})
		}
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, r.String())
		if !r.OK {
			if len(r.Problems) == 0 {
				return errors.New("the legal log does not verify")
			}
			return fmt.Errorf("the legal log does not verify: first problem at %s", r.Problems[0])
		}
		return nil
	}
	return errors.New(logUsage)
}

// logFilter reads the search flags. A date is a whole day in local time:
// --since from its start, --until to its end.
func logFilter(c *cli) (storage.LogFilter, error) {
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

// callLong is call for requests that read the whole log.
func callLong(cfg config.Config, op string, args map[string]string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	return control.Call(ctx, cfg.ControlSocket(), control.Request{Op: op, Args: args}, out)
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

// errNotAllValid makes `sigillo pec verify` exit 1 with the JSON lines as
// its only output.
var errNotAllValid = errors.New("not every signature is valid")

func pecCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return errors.New("usage: sigillo pec verify [--roots PEM] FILE [FILE ...]")
	}
	fs := flag.NewFlagSet("pec verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	roots := fs.String("roots", "", "PEM file of trusted roots: also check each signer's chain at signing time")
	var files []string
	for words := args[1:]; ; {
		if err := fs.Parse(words); err != nil {
			return fmt.Errorf("pec verify: %v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		words = fs.Args()[1:]
	}
	if len(files) == 0 {
		return errors.New("usage: sigillo pec verify [--roots PEM] FILE [FILE ...]")
	}
	opts := pecverify.Options{Now: time.Now()}
	if *roots != "" {
		pemBytes, err := os.ReadFile(*roots)
		if err != nil {
			return fmt.Errorf("pec verify: %w", err)
		}
		opts.Roots = x509.NewCertPool()
		if !opts.Roots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("pec verify: no certificate in %s", *roots)
		}
	}
	if !pecverify.Run(files, stdout, opts) {
		return errNotAllValid
	}
	return nil
}

func first(args []string) (string, []string) {
	if len(args) == 0 {
		return "", nil
	}
	return args[0], args[1:]
}

// useDevToken points [signer] at the development SoftHSM2 token under
// data_dir (the embedded default only: a configuration file says where its
// key is), made on first use; for serve it also makes the gestore key and a
// self-signed certificate when they are missing.
func useDevToken(cfg *config.Config, initKey bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := devtoken.Ensure(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	// SoftHSM2 reads SOFTHSM2_CONF from the process environment when the
	// module is initialised (signer.Open, signer.Init).
	if err := os.Setenv("SOFTHSM2_CONF", tok.Conf); err != nil {
		return err
	}
	cfg.Signer = config.Signer{PKCS11Module: tok.Module, TokenLabel: tok.TokenLabel, PinFile: tok.PinFile, KeyLabel: tok.KeyLabel}
	if cfg.PEC.ProviderName == "" {
		cfg.PEC.ProviderName = "Sigillo (sviluppo)"
	}
	if initKey {
		if _, err := appliance.GestoreInit(*cfg, "", "", slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		slog.Warn("PEC gestore key in the development SoftHSM2 token under data_dir: not for production", "token", tok.Dir)
	}
	return nil
}

// benchCmd is `sigillo bench`: the load generator of appliance/loadgen
// against any SMTP/IMAP/POP3 server (this one, or Postfix and Dovecot).
func benchCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	scenarios := fs.String("scenario", "smtp", "scenarios, comma-separated: smtp,deliver,imap,pop3,pec or all")
	var o loadgen.Options
	fs.StringVar(&o.Server, "server", "server", "label printed in every result")
	fs.StringVar(&o.Host, "host", "127.0.0.1", "server address")
	tlsModes := map[string]*string{}
	for _, svc := range []struct {
		name string
		port *int
	}{{"smtp", &o.SMTP.Port}, {"imap", &o.IMAP.Port}, {"pop3", &o.POP3.Port}} {
		fs.IntVar(svc.port, svc.name+"-port", 0, svc.name+" port (default: the standard one for the TLS mode)")
		tlsModes[svc.name] = fs.String(svc.name+"-tls", "implicit", svc.name+" security: implicit, starttls or none")
	}
	ca := fs.String("ca", "", "PEM file of the CA that signed the server's certificate (default: the system roots)")
	insecure := fs.Bool("insecure", false, "do not check the server's certificate")
	user := fs.String("user", "", `mailbox address, or a pattern with %d: "bench%d@bench.test" (1..--users)`)
	users := fs.Int("users", 1, "number of mailboxes from the --user pattern (with --users-file: the first N)")
	password := fs.String("password", "", "password of every mailbox")
	usersFile := fs.String("users-file", "", `file of "address password" lines`)
	fs.IntVar(&o.Concurrency, "concurrency", 8, "workers, each with its own connections")
	size := fs.String("size", "", "message size: 1024, 10k, 1m (default 1024)")
	sizes := fs.String("sizes", "", `message size mix by weight: "1k:80,10k:15,100k:5"`)
	fs.DurationVar(&o.Duration, "duration", 0, "length of each scenario (default 10s)")
	fs.IntVar(&o.Count, "count", 0, "operations per scenario, instead of --duration")
	fs.IntVar(&o.MailboxMessages, "mailbox-messages", 1000, "imap, pop3: messages each INBOX holds (filled over SMTP first)")
	fs.StringVar(&o.PECFrom, "pec-from", "", "pec: the sender (a mailbox of a PEC domain)")
	fs.StringVar(&o.PECTo, "pec-to", "", "pec: the recipient")
	fs.BoolVar(&o.Poll, "poll", false, "deliver, pec: watch the INBOX with NOOP every 10 ms, not IDLE")
	asJSON := fs.Bool("json", false, "one JSON object per scenario, one per line")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "usage: sigillo bench [flags]")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return nil
	}
	if err != nil {
		return fmt.Errorf("bench: %v", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q (every setting is a flag; sigillo bench -h lists them)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if o.Scenarios, err = loadgen.ParseScenarios(*scenarios); err != nil {
		return fmt.Errorf("bench: --scenario: %v", err)
	}
	for svc, mode := range map[string]*loadgen.TLSMode{"smtp": &o.SMTP.TLS, "imap": &o.IMAP.TLS, "pop3": &o.POP3.TLS} {
		if *mode, err = loadgen.ParseTLSMode(*tlsModes[svc]); err != nil {
			return fmt.Errorf("bench: --%s-tls: %v", svc, err)
		}
	}
	if o.TLSConfig, err = loadgen.TLSConfig(*ca, *insecure); err != nil {
		return fmt.Errorf("bench: %v", err)
	}
	switch {
	case set["size"] && set["sizes"]:
		return errors.New("bench: give --size or --sizes, not both")
	case set["sizes"]:
		o.Sizes, err = loadgen.ParseSizes(*sizes)
	case set["size"]:
		var n int
		n, err = loadgen.ParseSize(*size)
		o.Sizes = loadgen.SizeMix{{Size: n, Weight: 1}}
	}
	if err != nil {
		return fmt.Errorf("bench: %v", err)
	}
	if set["duration"] && set["count"] {
		return errors.New("bench: give --duration or --count, not both")
	}
	if (set["duration"] && o.Duration <= 0) || (set["count"] && o.Count <= 0) {
		return errors.New("bench: --duration and --count must be positive")
	}
	if set["concurrency"] && o.Concurrency <= 0 {
		return errors.New("bench: --concurrency must be positive")
	}
	if set["mailbox-messages"] && o.MailboxMessages <= 0 {
		return errors.New("bench: --mailbox-messages must be positive")
	}
	onlyPEC := !slices.ContainsFunc(o.Scenarios, func(s string) bool { return s != "pec" })
	switch {
	case *usersFile != "" && (*user != "" || *password != ""):
		return errors.New("bench: give --users-file, or --user and --password, not both")
	case *usersFile != "":
		if o.Users, err = loadgen.ReadUsersFile(*usersFile); err != nil {
			return fmt.Errorf("bench: --users-file: %v", err)
		}
		if set["users"] {
			if *users < 1 || *users > len(o.Users) {
				return fmt.Errorf("bench: --users %d, but %s has %s", *users, *usersFile, plural(len(o.Users), "user", "users"))
			}
			o.Users = o.Users[:*users]
		}
		for _, u := range o.Users {
			if strings.EqualFold(u.Address, o.PECFrom) {
				o.PECPassword = u.Password
			}
		}
	case *user != "" || !onlyPEC:
		if o.Users, err = loadgen.ExpandUsers(*user, *users, *password); err != nil {
			return fmt.Errorf("bench: %v", err)
		}
		if *password == "" {
			return errors.New("bench: --password is required with --user")
		}
		o.PECPassword = *password
	default:
		o.PECPassword = *password
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o.Log = stderr
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			o.Progress = stderr
		}
	}
	results, err := loadgen.Run(ctx, o)
	if results == nil && err != nil && ctx.Err() == nil {
		return fmt.Errorf("bench: %v", err) // the options, before anything ran
	}
	if *asJSON {
		loadgen.WriteJSON(stdout, results)
	} else {
		loadgen.WriteTable(stdout, results)
	}
	if ctx.Err() != nil {
		return errors.New("bench: interrupted")
	}
	for _, r := range results {
		if r.Error != "" || (r.Count == 0 && r.Errors > 0) {
			return fmt.Errorf("bench: %s against %s did not run: %s", r.Scenario, r.Server, firstNonEmpty(r.Error, r.FirstErrors...))
		}
	}
	return nil
}

func firstNonEmpty(s string, more ...string) string {
	for _, x := range append([]string{s}, more...) {
		if x != "" {
			return x
		}
	}
	return "every operation failed"
}
