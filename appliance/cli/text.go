package cli

import (
	"fmt"
	"strings"
)

// CommandLine is how to run this binary again with the same
// configuration, for the examples the server prints when it starts.
func CommandLine(argv0, configFile string) string {
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
