package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"sigillo/appliance/loadgen"
)

// benchCommand is the load generator of appliance/loadgen against any
// SMTP/IMAP/POP3 server (this one, or Postfix and Dovecot): a client, with
// no configuration and no control socket.
var benchCommand = command{
	name:  "bench",
	usage: "bench [--scenario smtp,deliver,imap,pop3,pec|all] [--user PATTERN --password P] ... (sigillo bench -h)",
	details: func(w io.Writer) {
		fs, _ := benchFlags(&env{})
		fmt.Fprintln(w, "flags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	},
	run: runBench,
}

// benchOptions are the flags of bench that are not loadgen.Options fields
// as they are.
type benchOptions struct {
	loadgen.Options
	scenarios, ca, user, password, usersFile, size, sizes string
	insecure, asJSON                                      bool
	users                                                 int
	tlsModes                                              map[string]*string
}

// benchFlags is bench's flag set: how it is read and how its help lists it.
func benchFlags(e *env) (*flagSet, *benchOptions) {
	fs := e.flags("bench", false)
	b := &benchOptions{tlsModes: map[string]*string{}}
	o := &b.Options
	fs.StringVar(&b.scenarios, "scenario", "smtp", "scenarios, comma-separated: smtp,deliver,imap,pop3,pec or all")
	fs.StringVar(&o.Server, "server", "server", "label printed in every result")
	fs.StringVar(&o.Host, "host", "127.0.0.1", "server address")
	for _, svc := range []struct {
		name string
		port *int
	}{{"smtp", &o.SMTP.Port}, {"imap", &o.IMAP.Port}, {"pop3", &o.POP3.Port}} {
		fs.IntVar(svc.port, svc.name+"-port", 0, svc.name+" port (default: the standard one for the TLS mode)")
		b.tlsModes[svc.name] = fs.String(svc.name+"-tls", "implicit", svc.name+" security: implicit, starttls or none")
	}
	fs.StringVar(&b.ca, "ca", "", "PEM file of the CA that signed the server's certificate (default: the system roots)")
	fs.BoolVar(&b.insecure, "insecure", false, "do not check the server's certificate")
	fs.StringVar(&b.user, "user", "", `mailbox address, or a pattern with %d: "bench%d@bench.test" (1..--users)`)
	fs.IntVar(&b.users, "users", 1, "number of mailboxes from the --user pattern (with --users-file: the first N)")
	fs.StringVar(&b.password, "password", "", "password of every mailbox")
	fs.StringVar(&b.usersFile, "users-file", "", `file of "address password" lines`)
	fs.IntVar(&o.Concurrency, "concurrency", 8, "workers, each with its own connections")
	fs.StringVar(&b.size, "size", "", "message size: 1024, 10k, 1m (default 1024)")
	fs.StringVar(&b.sizes, "sizes", "", `message size mix by weight: "1k:80,10k:15,100k:5"`)
	fs.DurationVar(&o.Duration, "duration", 0, "length of each scenario (default 10s)")
	fs.IntVar(&o.Count, "count", 0, "operations per scenario, instead of --duration")
	fs.IntVar(&o.MailboxMessages, "mailbox-messages", 1000, "imap, pop3: messages each INBOX holds (filled over SMTP first)")
	fs.StringVar(&o.PECFrom, "pec-from", "", "pec: the sender (a mailbox of a PEC domain)")
	fs.StringVar(&o.PECTo, "pec-to", "", "pec: the recipient")
	fs.BoolVar(&o.Poll, "poll", false, "deliver, pec: watch the INBOX with NOOP every 10 ms, not IDLE")
	fs.BoolVar(&b.asJSON, "json", false, "one JSON object per scenario, one per line")
	return fs, b
}

func runBench(e *env, words []string) error {
	fs, b := benchFlags(e)
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	o := b.Options
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	if o.Scenarios, err = loadgen.ParseScenarios(b.scenarios); err != nil {
		return fmt.Errorf("bench: --scenario: %v", err)
	}
	for svc, mode := range map[string]*loadgen.TLSMode{"smtp": &o.SMTP.TLS, "imap": &o.IMAP.TLS, "pop3": &o.POP3.TLS} {
		if *mode, err = loadgen.ParseTLSMode(*b.tlsModes[svc]); err != nil {
			return fmt.Errorf("bench: --%s-tls: %v", svc, err)
		}
	}
	if o.TLSConfig, err = loadgen.TLSConfig(b.ca, b.insecure); err != nil {
		return fmt.Errorf("bench: %v", err)
	}
	switch {
	case set["size"] && set["sizes"]:
		return errors.New("bench: give --size or --sizes, not both")
	case set["sizes"]:
		o.Sizes, err = loadgen.ParseSizes(b.sizes)
	case set["size"]:
		var n int
		n, err = loadgen.ParseSize(b.size)
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
	case b.usersFile != "" && (b.user != "" || b.password != ""):
		return errors.New("bench: give --users-file, or --user and --password, not both")
	case b.usersFile != "":
		if o.Users, err = loadgen.ReadUsersFile(b.usersFile); err != nil {
			return fmt.Errorf("bench: --users-file: %v", err)
		}
		if set["users"] {
			if b.users < 1 || b.users > len(o.Users) {
				return fmt.Errorf("bench: --users %d, but %s has %s", b.users, b.usersFile, plural(len(o.Users), "user", "users"))
			}
			o.Users = o.Users[:b.users]
		}
		for _, u := range o.Users {
			if strings.EqualFold(u.Address, o.PECFrom) {
				o.PECPassword = u.Password
			}
		}
	case b.user != "" || !onlyPEC:
		if o.Users, err = loadgen.ExpandUsers(b.user, b.users, b.password); err != nil {
			return fmt.Errorf("bench: %v", err)
		}
		if b.password == "" {
			return errors.New("bench: --password is required with --user")
		}
		o.PECPassword = b.password
	default:
		o.PECPassword = b.password
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	o.Log = e.stderr
	if f, ok := e.stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			o.Progress = e.stderr
		}
	}
	results, err := loadgen.Run(ctx, o)
	if results == nil && err != nil && ctx.Err() == nil {
		return fmt.Errorf("bench: %v", err) // the options, before anything ran
	}
	if b.asJSON {
		loadgen.WriteJSON(e.stdout, results)
	} else {
		loadgen.WriteTable(e.stdout, results)
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
