package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"sigillo/appliance/settings"
)

// settingsCommand shows and changes the cluster-wide settings: the keys
// every node must agree on, kept in the replicated store (appliance/
// settings). A change reaches every node without a restart.
var settingsCommand = command{
	name:  "settings",
	usage: "settings list | get KEY | set KEY VALUE",
	notes: []string{configNote, jsonNote,
		"settings: the cluster-wide keys (README: Cluster-wide and node-local settings); set applies on every node within a second",
		"VALUE: as in the TOML; sizes also 30M; lists and routes comma-separated: 10.0.0.0/8,192.0.2.1 and example.org=10.0.0.5:25"},
	run: runSettings,
}

// disagreeNote explains list's mark.
const disagreeNote = "!: this node's TOML gives another value; the cluster's is used " +
	"(sigillo settings set KEY VALUE to change the cluster's, or remove the key from this node's TOML)"

func runSettings(e *env, words []string) error {
	sub, words := first(words)
	switch sub {
	case "list":
		var rows []settings.Row
		if done, err := e.fetch("settings list", words, 0, "settings.list", "", &rows); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\t")
		marked := false
		for _, r := range rows {
			mark := ""
			if r.Disagrees {
				mark, marked = "! this node's TOML: "+r.TOML, true
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Key, r.Value, r.Source, mark)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if marked {
			fmt.Fprintln(e.stdout, disagreeNote)
		}
		return nil
	case "get", "set":
		n := 1
		if sub == "set" {
			n = 2
		}
		fs := e.flags("settings "+sub, true)
		asJSON := jsonFlag(fs)
		args, err := e.parse(fs, words, n, n)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		req := map[string]string{"key": args[0]}
		if sub == "set" {
			req["value"] = args[1]
		}
		var r settings.Row
		if err := call(cfg, "settings."+sub, req, &r); err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(e.stdout).Encode(r)
		}
		if sub == "get" {
			fmt.Fprintln(e.stdout, r.Value)
		} else {
			fmt.Fprintf(e.stdout, "%s = %s for every node\n", r.Key, r.Value)
		}
		if r.Disagrees {
			fmt.Fprintf(e.stderr, "sigillo: warning: this node's TOML says %s = %s; the cluster's value is used (remove the key from the TOML)\n", r.Key, r.TOML)
		}
		return nil
	}
	return e.usageError()
}
