package cli

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every command of the table has a usage text whose forms begin with its
// name, notes that are not empty, and a function.
func TestEveryCommandHasItsUsage(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands() {
		if c.name == "" || seen[c.name] {
			t.Errorf("command %q: no name, or a second time", c.name)
		}
		seen[c.name] = true
		if c.run == nil {
			t.Errorf("command %s: no function", c.name)
		}
		if strings.TrimSpace(c.usage) == "" {
			t.Errorf("command %s: no usage text", c.name)
		}
		for _, l := range strings.Split(c.usage, "\n") {
			if l != c.name && !strings.HasPrefix(l, c.name+" ") {
				t.Errorf("command %s: usage form %q is not of %s", c.name, l, c.name)
			}
		}
		for _, n := range c.notes {
			if strings.TrimSpace(n) == "" || strings.Contains(n, "\n") {
				t.Errorf("command %s: note %q is not one line", c.name, n)
			}
		}
	}
}

// README's Command line block shows every command, so that it cannot fall
// behind the table.
func TestREADMEShowsEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Command line\n")
	if start < 0 {
		t.Fatal("README.md has no section Command line")
	}
	block := text[start:]
	open := strings.Index(block, "```\n")
	if open < 0 {
		t.Fatal("README's Command line has no code block")
	}
	block = block[open+4:]
	block = block[:strings.Index(block, "```")]
	for _, c := range commands() {
		if !regexp.MustCompile(`(?m)^sigillo ` + regexp.QuoteMeta(c.name) + `( |$)`).MatchString(block) {
			t.Errorf("README's Command line block does not show sigillo %s", c.name)
		}
	}
	// And nothing the table does not have.
	for _, m := range regexp.MustCompile(`(?m)^sigillo (\S+)`).FindAllStringSubmatch(block, -1) {
		if (&env{commands: commands()}).lookup(m[1]) == nil {
			t.Errorf("README's Command line shows sigillo %s, which is not a command", m[1])
		}
	}
}

// main runs in the test: what the command line answers before it needs a
// configuration or a server.
func run(args ...string) (stdout, stderr string, exit int) {
	var o, e bytes.Buffer
	exit = Main(append([]string{"sigillo"}, args...), strings.NewReader(""), &o, &e)
	return o.String(), e.String(), exit
}

func TestFlagsAreEachSubcommands(t *testing.T) {
	_, stderr, exit := run("domain", "add", "x", "--msgid", "y")
	if exit != 1 || stderr != "sigillo: domain add: flag provided but not defined: -msgid (sigillo help domain)\n" {
		t.Errorf("domain add x --msgid y: exit %d, %q", exit, stderr)
	}
	_, stderr, exit = run("mailbox", "add", "a@x.test", "--quota", "--password-stdin")
	if exit != 1 || !strings.Contains(stderr, "mailbox add: --quota needs a value (it got the flag --password-stdin)") {
		t.Errorf("mailbox add --quota --password-stdin: exit %d, %q", exit, stderr)
	}
	_, stderr, exit = run("mailbox")
	if exit != 1 || stderr != "sigillo: usage: sigillo mailbox add ADDRESS [--password-stdin] [--quota SIZE] | passwd ADDRESS [--password-stdin] | list [DOMAIN] | remove ADDRESS\n" {
		t.Errorf("mailbox alone: exit %d, %q", exit, stderr)
	}
}

func TestConfigBeforeTheCommand(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"--config f domain list", "domain list --config f"},
		{"-config=f domain list", "domain list -config=f"},
		{"domain list", "domain list"},
		{"--config f", "--config f"},
	} {
		if got := strings.Join(configAfter(strings.Fields(c.in)), " "); got != c.want {
			t.Errorf("configAfter(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}
