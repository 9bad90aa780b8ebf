package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"sigillo/appliance"
	"sigillo/appliance/bytesize"
)

var mailboxCommand = command{
	name: "mailbox",
	usage: "mailbox add ADDRESS [--password-stdin] [--quota SIZE]\n" +
		"mailbox passwd ADDRESS [--password-stdin]\n" +
		"mailbox list [DOMAIN] | remove ADDRESS",
	notes: []string{
		configNote,
		"passwords: at least 8 characters, asked on the terminal or read with --password-stdin",
		"SIZE: bytes, or with K, M, G or T (1024-based): 500M, 1.5G (default 1G; 0: unlimited)",
		jsonNote,
	},
	run: runMailbox,
}

func runMailbox(e *env, words []string) error {
	sub, words := first(words)
	switch sub {
	case "add", "passwd":
		fs := e.flags("mailbox "+sub, true)
		passwordStdin := fs.Bool("password-stdin", false, "read the password from standard input")
		var quota *string
		if sub == "add" {
			quota = fs.String("quota", "", "mailbox quota in bytes (or 500M, 2G; 0: unlimited)")
		}
		args, err := e.parse(fs, words, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		pw, err := readPassword(sub, args[0], *passwordStdin, e.stdin, e.stderr)
		if err != nil {
			return err
		}
		a := map[string]string{"address": args[0], "password": pw}
		op := "mailbox.passwd"
		if sub == "add" {
			op = "mailbox.add"
			a["quota"] = *quota
		}
		var m appliance.Named
		if err := call(cfg, op, a, &m); err != nil {
			return err
		}
		if sub == "add" {
			fmt.Fprintf(e.stdout, "mailbox %s added\n", withUnicode(m.Name, m.Unicode))
		} else {
			fmt.Fprintf(e.stdout, "password of %s changed\n", withUnicode(m.Name, m.Unicode))
		}
		return nil
	case "remove":
		fs := e.flags("mailbox remove", true)
		args, err := e.parse(fs, words, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		var m appliance.Named
		if err := call(cfg, "mailbox.remove", map[string]string{"address": args[0]}, &m); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "mailbox %s removed\n", withUnicode(m.Name, m.Unicode))
		return nil
	case "list":
		var mbs []appliance.MailboxInfo
		if done, err := e.fetch("mailbox list", words, 1, "mailbox.list", "domain", &mbs); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
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
	return e.usageError()
}

// readPassword gets the password for mailbox add or passwd: asked twice
// without echo when standard input is a terminal, else read as one line
// (--password-stdin, so that a script never waits on a prompt).
func readPassword(sub, address string, fromStdin bool, stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		pw, err := askPassword(f, stderr, fmt.Sprintf("Password for %s (at least 8 characters): ", address))
		if err != nil {
			return "", err
		}
		again, err := askPassword(f, stderr, "The same again: ")
		if err != nil {
			return "", err
		}
		if pw != again {
			return "", errors.New("the two passwords differ: nothing changed")
		}
		return pw, nil
	}
	if !fromStdin {
		return "", fmt.Errorf("mailbox %s needs --password-stdin when standard input is not a terminal (echo 'a long password' | sigillo mailbox %s %s --password-stdin; the password is never an argument)", sub, sub, address)
	}
	pw, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw = strings.TrimRight(pw, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("no password on standard input: echo 'a long password' | sigillo mailbox %s %s --password-stdin (at least 8 characters)", sub, address)
	}
	return pw, nil
}

// askPassword prompts on w and reads one line from the terminal f with
// its echo off.
func askPassword(f *os.File, w io.Writer, prompt string) (string, error) {
	restore, err := echoOff(f) // before the prompt: what is typed after it is never shown
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(w, prompt)
	line, err := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
	restore()
	fmt.Fprintln(w)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
