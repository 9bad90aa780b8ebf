package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"sigillo/appliance"
)

// Notes shared by several commands: each is written once, here.
const (
	configNote = "every command but pec and bench takes --config FILE (default: the embedded configuration of make run)"
	jsonNote   = "list and status subcommands (and log search) take --json"
)

var helpCommand = command{
	name:  "help",
	usage: "help [COMMAND]",
	notes: []string{"sigillo help COMMAND, or sigillo COMMAND --help, shows one command's usage"},
	run: func(e *env, words []string) error {
		// --config is taken, as by every command that talks to the
		// server, and not needed.
		words, err := e.parse(e.flags("help", true), words, 0, 1)
		if err != nil {
			return err
		}
		if len(words) == 0 {
			e.printUsage(e.stdout, e.commands...)
			return nil
		}
		c := e.lookup(words[0])
		if c == nil {
			return fmt.Errorf("help: unknown command %q (sigillo help lists them)", words[0])
		}
		e.printHelp(c)
		return nil
	},
}

var versionCommand = command{
	name:  "version",
	usage: "version",
	run: func(e *env, words []string) error {
		if _, err := e.parse(e.flags("version", true), words, 0, 0); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "sigillo", appliance.Version)
		return nil
	},
}

// printHelp prints one command's usage on standard output: `sigillo help
// NOUN`, `sigillo NOUN --help`.
func (e *env) printHelp(c *command) {
	e.printUsage(e.stdout, *c)
	if c.details != nil {
		c.details(e.stdout)
	}
}

// printUsage prints the forms of cs, then their notes (each once).
func (e *env) printUsage(w io.Writer, cs ...command) {
	var b strings.Builder
	b.WriteString("usage:\n")
	var notes []string
	for _, c := range cs {
		for _, l := range strings.Split(c.usage, "\n") {
			b.WriteString("  sigillo " + l + "\n")
		}
		for _, n := range c.notes {
			if !slices.Contains(notes, n) {
				notes = append(notes, n)
			}
		}
	}
	for _, n := range notes {
		b.WriteString(n + "\n")
	}
	io.WriteString(w, b.String())
}
