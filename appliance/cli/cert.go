package cli

import (
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
	var st appliance.CertStatus
	if done, err := e.report(words, "cert", "status", "cert.status", &st); done || err != nil {
		return err
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
