package cli

import "fmt"

// caCommand prints the certificate of the local CA that signs the
// listeners' certificates when ACME does not, for clients to trust.
var caCommand = command{
	name:  "ca",
	usage: "ca export",
	notes: []string{configNote},
	run:   runCA,
}

func runCA(e *env, words []string) error {
	if sub, _ := first(words); sub != "export" {
		return e.usageError()
	}
	fs := e.flags("ca export", true)
	if _, err := e.parse(fs, words[1:], 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	var pem string
	if err := call(cfg, "ca.export", nil, &pem); err != nil {
		return err
	}
	fmt.Fprint(e.stdout, pem)
	return nil
}
