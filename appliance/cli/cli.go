// Package cli is sigillo's command line: a table of commands (serve,
// domain, mailbox, …), one file each with its own flags and its usage text,
// and what they share (reading flags, loading the configuration, calling
// the running server over its control socket).
//
// It is not the server: serve hands the configuration to appliance.Run,
// and every other command is a client of the control socket, of files or
// of a stopped server's database file. A new command is one file and one
// line of the table in commands.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// A command is one noun of the command line: `sigillo NOUN ...`.
type command struct {
	name string
	// usage is the command's forms, one a line, each as typed after
	// "sigillo ". It is what `sigillo help`, `sigillo help NOUN`, `sigillo
	// NOUN --help` and a misuse of NOUN print: the only copy.
	usage string
	// notes say what the forms' words mean, one a line, printed under
	// them (a note shared by several commands is one constant).
	notes []string
	// details, if set, prints more help for `sigillo help NOUN` (bench:
	// every flag with its default).
	details func(w io.Writer)
	// run does the command with the words typed after its name.
	run func(e *env, words []string) error
}

// commands is the table of the command line, in the order sigillo help
// lists it.
func commands() []command {
	return []command{
		serveCommand,
		domainCommand,
		mailboxCommand,
		queueCommand,
		gestoreCommand,
		directoryCommand,
		pecCommand,
		logCommand,
		scanCommand,
		certCommand,
		clusterCommand,
		backupCommand,
		restoreCommand,
		caCommand,
		settingsCommand,
		benchCommand,
		versionCommand,
		helpCommand,
	}
}

// env is one invocation: where it reads and writes, and which command of
// the table runs.
type env struct {
	argv0          string // how the user ran this binary
	stdin          io.Reader
	stdout, stderr io.Writer
	commands       []command
	cmd            *command // the command running
}

// errQuiet ends the process with exit status 1 and no message: the
// command has said everything on its standard output.
var errQuiet = errors.New("failed (said on standard output)")

// Main runs the command line argv (os.Args) and returns the process's exit
// status: 0, or 1 after one line on stderr saying what went wrong.
func Main(argv []string, stdin io.Reader, stdout, stderr io.Writer) int {
	argv0 := "sigillo"
	if len(argv) > 0 {
		argv0, argv = argv[0], argv[1:]
	}
	e := &env{argv0: argv0, stdin: stdin, stdout: stdout, stderr: stderr, commands: commands()}
	if err := e.run(argv); err != nil {
		if !errors.Is(err, errQuiet) {
			fmt.Fprintln(stderr, "sigillo:", err)
		}
		return 1
	}
	return 0
}

func (e *env) run(words []string) error {
	words = configAfter(words)
	if len(words) == 0 {
		e.printUsage(e.stderr, e.commands...)
		return errors.New("no command given")
	}
	name, rest := words[0], words[1:]
	switch name {
	case "--help", "-help", "-h":
		name = "help"
	case "--version", "-version", "-v":
		name = "version"
	}
	c := e.lookup(name)
	if c == nil {
		return fmt.Errorf("unknown command %q (sigillo help lists them)", name)
	}
	e.cmd = c
	rest = configAfter(rest)
	if len(rest) > 0 && isHelpFlag(rest[0]) {
		e.printHelp(c)
		return nil
	}
	err := c.run(e, rest)
	if errors.Is(err, flag.ErrHelp) {
		e.printHelp(c)
		return nil
	}
	return err
}

// lookup is the command called name, or nil.
func (e *env) lookup(name string) *command {
	for i := range e.commands {
		if e.commands[i].name == name {
			return &e.commands[i]
		}
	}
	return nil
}

func isHelpFlag(w string) bool {
	return w == "-h" || w == "-help" || w == "--help"
}

// usageError is the running command's usage as one line, for a misuse:
// "usage: sigillo domain add NAME [--pec] | list | remove NAME".
func (e *env) usageError() error {
	var forms []string
	for i, l := range strings.Split(e.cmd.usage, "\n") {
		if i > 0 {
			l = strings.TrimPrefix(l, e.cmd.name+" ")
		}
		forms = append(forms, l)
	}
	return errors.New("usage: sigillo " + strings.Join(forms, " | "))
}

// first splits off the first word: a subcommand.
func first(words []string) (string, []string) {
	if len(words) == 0 {
		return "", nil
	}
	return words[0], words[1:]
}
