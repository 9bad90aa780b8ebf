package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
)

// certCommand shows the certificates the listeners serve: for each name
// its issuer, validity and source (ACME or the local CA), and the last
// error from the ACME CA.
var certCommand = command{
	name:  "cert",
	usage: "cert status",
	notes: []string{configNote, jsonNote},
	run:   runCert,
}

func runCert(e *env, words []string) error {
	if sub, _ := first(words); sub != "status" {
		return e.usageError()
	}
	fs := e.flags("cert status", true)
	asJSON := jsonFlag(fs)
	if _, err := e.parse(fs, words[1:], 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	var st appliance.CertStatus
	if err := call(cfg, "cert.status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(st)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSOURCE\tISSUER\tEXPIRES")
	for _, ci := range st.Certs {
		exp := ""
		if !ci.NotAfter.IsZero() {
			exp = ci.NotAfter.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ci.Name, ci.Source, ci.Issuer, exp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.LastError != "" {
		fmt.Fprintf(e.stdout, "last ACME error (%s): %s\n", st.ErrorAt.Local().Format(time.DateTime), st.LastError)
	}
	return nil
}
