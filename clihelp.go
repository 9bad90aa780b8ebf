package main

// What the command line does for the people typing it: help for one
// command, --config before the command, plurals, names shown in both
// forms, passwords asked on a terminal without echo.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// configFirst moves a --config FILE given before the command after it,
// where parse reads it: `sigillo --config /etc/sigillo.toml domain list`.
func configFirst(argv []string) []string {
	if len(argv) == 0 {
		return argv
	}
	switch a := argv[0]; {
	case (a == "--config" || a == "-config") && len(argv) >= 3:
		return append(append([]string{argv[2]}, argv[3:]...), a, argv[1])
	case (strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config=")) && len(argv) >= 2:
		return append(append([]string{argv[1]}, argv[2:]...), a)
	}
	return argv
}

// commandUsage is the part of the usage text about one command, or "" for
// an unknown one.
func commandUsage(cmd string) string {
	var lines []string
	for _, l := range strings.Split(usage, "\n") {
		if strings.HasPrefix(l, "  sigillo "+cmd+" ") || l == "  sigillo "+cmd {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "usage:\n" + strings.Join(lines, "\n") + "\n" + usage[strings.Index(usage, "every subcommand"):]
}

// needsSigner says whether a command uses the PEC gestore's key, which
// the embedded configuration finds in the development token.
func needsSigner(cmd string, args []string) bool {
	sub := ""
	if len(args) == 1 {
		sub = args[0]
	}
	switch cmd {
	case "serve":
		return true
	case "gestore":
		return sub == "init" || sub == "cert"
	case "directory":
		return sub == "export"
	}
	return false
}

// flagTakenAsValue catches a string flag given without its value, which
// took the next flag as its value instead: `--quota --password-stdin`.
func flagTakenAsValue(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool || err != nil {
			return
		}
		if v := f.Value.String(); strings.HasPrefix(v, "-") && fs.Lookup(strings.TrimLeft(v, "-")) != nil {
			err = fmt.Errorf("--%s needs a value (it got the flag %s)", f.Name, v)
		}
	})
	return err
}

// commandLine is how to run this binary again with the same
// configuration, for the examples the server prints when it starts.
func commandLine(argv0, configFile string) string {
	cmd := shellQuote(argv0)
	if configFile != "" {
		cmd += " --config " + shellQuote(configFile)
	}
	return cmd
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// withUnicode shows a stored name with its Unicode form, if it has one.
func withUnicode(name, unicode string) string {
	if unicode == "" {
		return name
	}
	return name + " (" + unicode + ")"
}

// plural is "1 mailbox", "2 mailboxes", "0 mailboxes".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
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
