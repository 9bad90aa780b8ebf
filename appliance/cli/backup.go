package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"filippo.io/age"

	"sigillo/appliance/backup"
	"sigillo/appliance/backup/archive"
	"sigillo/appliance/backup/restore"
	"sigillo/appliance/backup/target"
	"sigillo/appliance/config"
	"sigillo/appliance/manage"
)

// backupCommand takes, lists and checks backups: `now` asks the running
// server; `list` and `verify` read the targets of the configuration
// directly (no server needed, so they work when the VM is gone).
var backupCommand = command{
	name: "backup",
	usage: "backup now [--json] | status [--json]\n" +
		"backup list [--target URL] [--json]\n" +
		"backup verify [ID] [--identity AGE_KEY_FILE] [--json]",
	notes: []string{configNote, jsonNote,
		"now writes a snapshot to every [[backup.target]] (exit 1 naming the targets that failed)",
		"status shows the scheduled job's state per target (last snapshot, index shipped, last error, retry)",
		"list shows every snapshot of every target (or of --target, a url of the configuration)",
		"verify downloads a snapshot (ID, or the newest) from every target, checks every hash and",
		"  the signature, restores it into a temporary directory and checks that; encrypted",
		"  backups need the age identity (private key) file of one of their recipients"},
	run: runBackup,
}

// restoreCommand builds a one-node cluster from a backup.
var restoreCommand = command{
	name:  "restore",
	usage: "restore --from URL [--snapshot ID] [--at RFC3339] [--identity AGE_KEY_FILE] [--credentials-file F] --data DIR",
	notes: []string{configNote,
		"restore makes DIR (which must be empty or absent) a one-node cluster holding the snapshot",
		"  ID (default the newest; with --at the newest before that time) and the log shipped after",
		"  it up to --at; no server may run on DIR. Start `sigillo serve` on it, then join the others",
		"  --config gives the restored node's [cluster] node_id and raft_addr"},
	run: runRestore,
}

func runBackup(e *env, words []string) error {
	sub, rest := first(words)
	switch sub {
	case "now":
		return e.backupNow(rest)
	case "status":
		var st []manage.BackupTarget
		done, err := e.fetch("backup status", rest, 0, "backup.status", "", &st)
		if done || err != nil {
			return err
		}
		if len(st) == 0 {
			fmt.Fprintln(e.stdout, "no [[backup.target]]: no scheduled backups")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tLAST SNAPSHOT\tSHIPPED TO\tLAST OK\tSTATE")
		for _, t := range st {
			state := "ok"
			if t.Failures > 0 {
				state = fmt.Sprintf("FAILING (%d): %s; next try %s", t.Failures, t.LastError, t.NextAttempt.Local().Format(time.TimeOnly))
			}
			last := "-"
			if !t.LastTime.IsZero() {
				last = t.LastTime.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.Target, t.LastID, t.LastIndex, last, state)
		}
		return tw.Flush()
	case "list":
		return e.backupList(rest)
	case "verify":
		return e.backupVerify(rest)
	}
	return e.usageError()
}

func (e *env) backupNow(words []string) error {
	fs := e.flags("backup now", true)
	asJSON := jsonFlag(fs)
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	stop := func() {}
	if f, ok := e.stdout.(*os.File); ok && !*asJSON && isTerminal(f) {
		stop = e.showProgress(cfg)
	}
	var res []manage.BackupResult
	err = callLong(cfg, "backup.now", nil, &res)
	stop()
	if err != nil {
		return err
	}
	if *asJSON {
		if err := json.NewEncoder(e.stdout).Encode(res); err != nil {
			return err
		}
	} else {
		for _, r := range res {
			if r.Error != "" {
				fmt.Fprintf(e.stdout, "%s: FAILED: %s\n", r.Target, r.Error)
				continue
			}
			fmt.Fprintf(e.stdout, "%s: %s (index %d, %s)\n", r.Target, r.ID, r.Index, sizeText(r.Bytes))
		}
	}
	var failed []string
	for _, r := range res {
		if r.Error != "" {
			failed = append(failed, r.Target)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("backup failed on %s", strings.Join(failed, ", "))
	}
	return nil
}

// showProgress prints, on a terminal, the bytes each target has received,
// until the returned stop is called.
func (e *env) showProgress(cfg config.Config) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(e.stdout, "\r\033[K")
				return
			case <-t.C:
			}
			var st []manage.BackupTarget
			if call(cfg, "backup.status", nil, &st) != nil {
				continue
			}
			var parts []string
			for _, s := range st {
				if s.Running {
					parts = append(parts, fmt.Sprintf("%s %s", s.Target, sizeText(s.Written)))
				}
			}
			fmt.Fprintf(e.stdout, "\r\033[Kwriting: %s", strings.Join(parts, ", "))
		}
	}()
	return func() { close(done); <-finished }
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// targets opens the configuration's targets (only the one whose url is
// only, when not "").
func targets(cfg config.Config, only string) ([]archive.Store, error) {
	var out []archive.Store
	for _, t := range cfg.Backup.Targets {
		if only != "" && strings.TrimSuffix(t.URL, "/") != strings.TrimSuffix(only, "/") {
			continue
		}
		st, err := target.Open(t.URL, t.CredentialsFile)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		if only != "" {
			return nil, fmt.Errorf("--target %s is not a [[backup.target]] url of the configuration", only)
		}
		return nil, errors.New("no [[backup.target]] in the configuration (--config FILE)")
	}
	return out, nil
}

func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func (e *env) backupList(words []string) error {
	fs := e.flags("backup list", true)
	asJSON := jsonFlag(fs)
	only := fs.String("target", "", "only this target (a url of the configuration)")
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	sts, err := targets(cfg, *only)
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	list, err := backup.List(ctx, sts)
	if err != nil {
		return err
	}
	if *asJSON {
		if list == nil {
			list = []backup.Listed{}
		}
		return json.NewEncoder(e.stdout).Encode(list)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTARGET\tTIME\tINDEX\tSIZE\tSTATE")
	for _, l := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", l.ID, l.Target, l.Time.Local().Format(time.DateTime), l.Index, sizeText(l.Bytes), l.State)
	}
	return tw.Flush()
}

func identities(path string) ([]age.Identity, error) {
	if path == "" {
		return nil, nil
	}
	return archive.ReadIdentities(path)
}

func (e *env) backupVerify(words []string) error {
	fs := e.flags("backup verify", true)
	asJSON := jsonFlag(fs)
	idFile := fs.String("identity", "", "age identity (private key) file, for encrypted backups")
	args, err := e.parse(fs, words, 0, 1)
	if err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	ids, err := identities(*idFile)
	if err != nil {
		return err
	}
	sts, err := targets(cfg, "")
	if err != nil {
		return err
	}
	id := ""
	if len(args) == 1 {
		id = args[0]
	}
	ctx, cancel := interruptible()
	defer cancel()
	type verified struct {
		Target string          `json:"target"`
		Report *restore.Report `json:"report,omitempty"`
		Error  string          `json:"error,omitempty"`
	}
	var out []verified
	var failed []string
	for _, st := range sts {
		rep, err := restore.Verify(ctx, st, id, ids)
		v := verified{Target: st.String(), Report: &rep}
		if err != nil {
			v.Error = err.Error()
			failed = append(failed, st.String())
		}
		out = append(out, v)
	}
	if *asJSON {
		if err := json.NewEncoder(e.stdout).Encode(out); err != nil {
			return err
		}
	} else {
		for _, v := range out {
			if v.Error != "" {
				fmt.Fprintf(e.stdout, "%s: FAILED: %s\n", v.Target, v.Error)
				continue
			}
			fmt.Fprintf(e.stdout, "%s: %s\n", v.Target, v.Report.Summary())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("verify failed on %s", strings.Join(failed, ", "))
	}
	return nil
}

func runRestore(e *env, words []string) error {
	fs := e.flags("restore", true)
	from := fs.String("from", "", "the backup target's url")
	snap := fs.String("snapshot", "", "snapshot ID (default: the newest)")
	at := fs.String("at", "", "restore the state as it was at this time (RFC 3339)")
	idFile := fs.String("identity", "", "age identity (private key) file, for encrypted backups")
	cred := fs.String("credentials-file", "", "S3 credentials (AWS_ACCESS_KEY_ID=…, AWS_SECRET_ACCESS_KEY=…)")
	data := fs.String("data", "", "the data directory to make (empty or absent)")
	if _, err := e.parse(fs, words, 0, 0); err != nil {
		return err
	}
	if *from == "" || *data == "" {
		return e.usageError()
	}
	var when time.Time
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return fmt.Errorf("--at %q is not an RFC 3339 time (2026-12-02T21:30:00Z)", *at)
		}
		when = t
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	ids, err := identities(*idFile)
	if err != nil {
		return err
	}
	st, err := target.Open(*from, *cred)
	if err != nil {
		return err
	}
	ctx, cancel := interruptible()
	defer cancel()
	rep, err := restore.Restore(ctx, restore.Options{From: st, Snapshot: *snap, At: when, Identities: ids,
		DataDir: *data, NodeID: cfg.Cluster.NodeID, RaftAddr: cfg.Cluster.AdvertiseAddr()})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "restored %s into %s: %s\n", *from, *data, rep.Summary())
	fmt.Fprintf(e.stdout, "next: sigillo serve --config FILE with data_dir = %q\n", *data)
	return nil
}
