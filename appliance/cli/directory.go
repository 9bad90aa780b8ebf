package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"sigillo/appliance"
	"sigillo/appliance/config"
	"sigillo/appliance/pecdir"
)

// directoryCommand loads and shows the PEC providers directory (RFC 6109
// 4.5), and prints this gestore's own entry.
var directoryCommand = command{
	name:  "directory",
	usage: "directory import FILE.ldif | export | list",
	notes: []string{configNote, jsonNote},
	run:   runDirectory,
}

func runDirectory(e *env, words []string) error {
	sub, words := first(words)
	switch sub {
	case "import":
		fs := e.flags("directory import", true)
		args, err := e.parse(fs, words, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(args[0])
		if err != nil {
			return fmt.Errorf("directory import: %w", err)
		}
		var res map[string]int
		if err := call(cfg, "directory.import", map[string]string{"ldif": string(data)}, &res); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s imported; the directory lists %d\n", plural(res["imported"], "provider", "providers"), res["total"])
		return nil
	case "export":
		fs := e.flags("directory export", true)
		if _, err := e.parse(fs, words, 0, 0); err != nil {
			return err
		}
		cfg, err := e.config(fs, true)
		if err != nil {
			return err
		}
		return exportDirectory(cfg, e.stdout)
	case "list":
		var ps []appliance.ProviderInfo
		if done, err := e.fetch("directory list", words, 0, "directory.list", "", &ps); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PROVIDER\tMAIL RECEIPT\tDOMAINS\tCERTIFICATE SHA-1")
		for _, p := range ps {
			name := p.Name
			if p.Unit != "" {
				name += " (" + p.Unit + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, p.MailReceipt, strings.Join(p.ManagedDomains, ","), strings.Join(p.CertificateSHA1, ","))
		}
		return tw.Flush()
	}
	return e.usageError()
}

// exportDirectory prints this gestore's own directory entry as LDIF: its
// name, service address (mailReceipt), certificate and PEC domains (with
// the service address's domain).
func exportDirectory(cfg config.Config, stdout io.Writer) error {
	var ds []appliance.DomainInfo
	if err := call(cfg, "domain.list", nil, &ds); err != nil {
		return err
	}
	var domains []string
	for _, d := range ds {
		if d.PEC {
			domains = append(domains, d.Name)
		}
	}
	if len(domains) == 0 {
		return errors.New("directory export: no PEC domain here (sigillo domain add NAME --pec)")
	}
	if cfg.PEC.ProviderName == "" {
		return errors.New("directory export: set provider_name in [pec]")
	}
	// The service address signs every receipt as its From: its domain is
	// managed too, or other gestori would refuse our receipts (RFC 6109 §7).
	if _, sd, ok := strings.Cut(cfg.ServiceAddress(), "@"); ok && !slices.Contains(domains, strings.ToLower(sd)) {
		domains = append(domains, strings.ToLower(sd))
	}
	chain, err := appliance.GestoreCert(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return fmt.Errorf("directory export: %w", err)
	}
	p := pecdir.Provider{Name: cfg.PEC.ProviderName, MailReceipt: cfg.ServiceAddress(), ManagedDomains: domains,
		Certificates: chain[:1], CertificateHash: []string{"SHA1#" + pecdir.SHA1Hex(chain[0])}}
	return pecdir.WriteLDIF(stdout, []pecdir.Provider{p})
}
