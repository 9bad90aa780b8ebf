// Command sigillo is a mail server for a few hosted domains in one binary:
// SMTP, IMAP and POP3 over TLS on a raft-replicated SQLite store.
//
// Its command line is appliance/cli: `sigillo help` lists the commands,
// `sigillo help COMMAND` shows one.
package main

import (
	"os"

	"sigillo/appliance/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
