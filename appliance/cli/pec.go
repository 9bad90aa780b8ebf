package cli

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"sigillo/appliance/pecverify"
)

// pecCommand checks PEC messages of any gestore. It works on files alone:
// no configuration, no running server.
var pecCommand = command{
	name:  "pec",
	usage: "pec verify [--roots PEM] FILE...",
	run:   runPEC,
}

func runPEC(e *env, words []string) error {
	if sub, _ := first(words); sub != "verify" {
		return e.usageError()
	}
	fs := e.flags("pec verify", false)
	roots := fs.String("roots", "", "PEM file of trusted roots: also check each signer's chain at signing time")
	files, err := e.parse(fs, words[1:], 1, -1)
	if err != nil {
		return err
	}
	opts := pecverify.Options{Now: time.Now()}
	if *roots != "" {
		pemBytes, err := os.ReadFile(*roots)
		if err != nil {
			return fmt.Errorf("pec verify: %w", err)
		}
		opts.Roots = x509.NewCertPool()
		if !opts.Roots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("pec verify: no certificate in %s", *roots)
		}
	}
	if !pecverify.Run(files, e.stdout, opts) {
		return errQuiet // the JSON lines say which signature is not valid
	}
	return nil
}
