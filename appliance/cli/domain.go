package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
)

var domainCommand = command{
	name:  "domain",
	usage: "domain add NAME [--pec] | list | remove NAME",
	notes: []string{configNote, jsonNote},
	run:   runDomain,
}

func runDomain(e *env, words []string) error {
	sub, words := first(words)
	switch sub {
	case "add":
		fs := e.flags("domain add", true)
		pec := fs.Bool("pec", false, "run the domain as PEC (certified mail)")
		args, err := e.parse(fs, words, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		var d appliance.Named
		if err := call(cfg, "domain.add", map[string]string{"name": args[0], "pec": fmt.Sprint(*pec)}, &d); err != nil {
			return err
		}
		if *pec {
			fmt.Fprintf(e.stdout, "PEC domain %s added\n", withUnicode(d.Name, d.Unicode))
		} else {
			fmt.Fprintf(e.stdout, "domain %s added\n", withUnicode(d.Name, d.Unicode))
		}
		if d.Warning != "" {
			fmt.Fprintln(e.stderr, "sigillo: warning:", d.Warning)
		}
		return nil
	case "remove":
		fs := e.flags("domain remove", true)
		args, err := e.parse(fs, words, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		var d appliance.Named
		if err := call(cfg, "domain.remove", map[string]string{"name": args[0]}, &d); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "domain %s removed\n", withUnicode(d.Name, d.Unicode))
		return nil
	case "list":
		var ds []appliance.DomainInfo
		if done, err := e.fetch("domain list", words, 0, "domain.list", "", &ds); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DOMAIN\tKIND\tMAILBOXES\tCREATED")
		for _, d := range ds {
			kind := "mail"
			if d.PEC {
				kind = "PEC"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", withUnicode(d.Name, d.Unicode), kind, d.Mailboxes, d.Created.Format(time.DateOnly))
		}
		return tw.Flush()
	}
	return e.usageError()
}
