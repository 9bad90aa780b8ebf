package cli

import (
	"crypto/sha1"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"sigillo/appliance"
)

// gestoreCommand makes or shows the PEC gestore's key and certificate. It
// works on the token directly: the server need not run.
var gestoreCommand = command{
	name:  "gestore",
	usage: "gestore init [--ca CERT --ca-key KEY] | cert",
	notes: []string{configNote},
	run:   runGestore,
}

func runGestore(e *env, words []string) error {
	logger := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sub, words := first(words)
	switch sub {
	case "init":
		fs := e.flags("gestore init", true)
		ca := fs.String("ca", "", "CA certificate (PEM) to sign the gestore certificate")
		caKey := fs.String("ca-key", "", "the CA's private key (PEM)")
		if _, err := e.parse(fs, words, 0, 0); err != nil {
			return err
		}
		cfg, err := e.config(fs, true)
		if err != nil {
			return err
		}
		cert, err := appliance.GestoreInit(cfg, *ca, *caKey, logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "gestore certificate for %s (%s), valid until %s, SHA-1 %X\n",
			strings.Join(cert.EmailAddresses, ","), cert.Subject.CommonName, cert.NotAfter.Format(time.DateOnly), sha1.Sum(cert.Raw))
		return nil
	case "cert":
		fs := e.flags("gestore cert", true)
		if _, err := e.parse(fs, words, 0, 0); err != nil {
			return err
		}
		cfg, err := e.config(fs, true)
		if err != nil {
			return err
		}
		chain, err := appliance.GestoreCert(cfg, logger)
		if err != nil {
			return err
		}
		for _, cert := range chain {
			pem.Encode(e.stdout, &pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
		}
		return nil
	}
	return e.usageError()
}
