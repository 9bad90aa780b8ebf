package main

// The command line as a table (issue 11): each command takes only its own
// flags, and its usage is printed by `sigillo help NOUN` and `sigillo NOUN
// --help` alike.

import (
	"bytes"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// cliTable runs the binary with no server and no configuration file: what
// is tested here is answered before either is needed.
func cliTable(t *testing.T, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = t.TempDir() // the embedded configuration's data directory, if anything reached it
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	case err != nil:
		t.Fatalf("sigillo %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), exit
}

func TestCLIUnknownFlagsAndStrayWordsAreErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"domain", "add", "x", "--msgid", "y"}, "domain add: flag provided but not defined: -msgid"},
		{[]string{"domain", "remove", "x", "--pec"}, "domain remove: flag provided but not defined: -pec"},
		{[]string{"mailbox", "passwd", "a@x.test", "--quota", "1G"}, "mailbox passwd: flag provided but not defined: -quota"},
		{[]string{"log", "verify", "--msgid", "y"}, "log verify: flag provided but not defined: -msgid"},
		{[]string{"queue", "list", "extra"}, `queue list: unexpected argument "extra"`},
		{[]string{"domain", "add", "x", "y"}, `domain add: unexpected argument "y"`},
		{[]string{"version", "now"}, `version: unexpected argument "now"`},
		{[]string{"domain", "frobnicate"}, "usage: sigillo domain add NAME [--pec] | list | remove NAME"},
		{[]string{"help", "nosuch"}, `help: unknown command "nosuch"`},
	} {
		stdout, stderr, exit := cliTable(t, c.args...)
		msg := strings.TrimSpace(stderr)
		if exit != 1 || stdout != "" || strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
			t.Errorf("sigillo %s: exit %d, stdout %q, stderr %q; want exit 1 and one line with %q",
				strings.Join(c.args, " "), exit, stdout, stderr, c.want)
		}
	}
}

func TestCLIHelpOfOneCommand(t *testing.T) {
	help, _, exit := cliTable(t, "help", "mailbox")
	if exit != 0 {
		t.Fatalf("sigillo help mailbox: exit %d", exit)
	}
	forms := regexp.MustCompile(`(?m)^  sigillo (\S+)`).FindAllStringSubmatch(help, -1)
	if len(forms) != 3 {
		t.Errorf("sigillo help mailbox: %d forms, want the 3 of mailbox:\n%s", len(forms), help)
	}
	for _, f := range forms {
		if f[1] != "mailbox" {
			t.Errorf("sigillo help mailbox shows sigillo %s:\n%s", f[1], help)
		}
	}
	if !strings.Contains(help, "at least 8 characters") || !strings.Contains(help, "SIZE:") {
		t.Errorf("sigillo help mailbox does not explain passwords and SIZE:\n%s", help)
	}
	for _, args := range [][]string{{"mailbox", "--help"}, {"mailbox", "-h"}, {"mailbox", "add", "--help"}, {"--config", "x.toml", "mailbox", "--help"}} {
		if out, _, exit := cliTable(t, args...); exit != 0 || out != help {
			t.Errorf("sigillo %s: exit %d\n%s\nwant the same as sigillo help mailbox:\n%s", strings.Join(args, " "), exit, out, help)
		}
	}
	// bench's help lists its flags, however it is asked for.
	bench, _, exit := cliTable(t, "help", "bench")
	if exit != 0 || !strings.Contains(bench, "-mailbox-messages") {
		t.Errorf("sigillo help bench: exit %d\n%s", exit, bench)
	}
	if out, _, _ := cliTable(t, "bench", "--help"); out != bench {
		t.Errorf("sigillo bench --help:\n%s\nwant:\n%s", out, bench)
	}
}

func TestCLIHelpListsEveryCommand(t *testing.T) {
	help, _, exit := cliTable(t, "help")
	if exit != 0 {
		t.Fatalf("sigillo help: exit %d", exit)
	}
	for _, noun := range []string{"serve", "domain", "mailbox", "queue", "gestore", "directory", "pec", "log",
		"scan", "cert", "ca", "bench", "version", "help"} {
		if !regexp.MustCompile(`(?m)^  sigillo ` + noun + `( |$)`).MatchString(help) {
			t.Errorf("sigillo help does not list %s:\n%s", noun, help)
		}
		// Each command's usage is the same text in both helps.
		one, _, _ := cliTable(t, "help", noun)
		for _, l := range strings.Split(one, "\n") {
			if strings.HasPrefix(l, "  sigillo ") && strings.Count(help, l+"\n") != 1 {
				t.Errorf("sigillo help %s shows %q, which sigillo help does not show once", noun, l)
			}
		}
	}
	// No command at all: the same list, on stderr, and exit 1.
	stdout, stderr, exit := cliTable(t)
	if exit != 1 || stdout != "" || !strings.HasPrefix(stderr, help) {
		t.Errorf("sigillo alone: exit %d, stdout %q, stderr:\n%s", exit, stdout, stderr)
	}
}
