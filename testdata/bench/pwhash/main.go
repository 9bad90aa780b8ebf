// Command pwhash prints the argon2id PHC string of the password on standard
// input, made by Sigillo's own passwd package with its default parameters,
// so that the Dovecot baseline of `make bench-baseline` checks passwords at
// the same cost as Sigillo (Dovecot reads the string as {ARGON2ID}).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"sigillo/appliance/passwd"
)

func main() {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(os.Stderr, "pwhash: no password on standard input")
		os.Exit(1)
	}
	h, err := passwd.Hash(strings.TrimRight(line, "\r\n"), passwd.Default())
	if err != nil {
		fmt.Fprintln(os.Stderr, "pwhash:", err)
		os.Exit(1)
	}
	fmt.Println(h)
}
