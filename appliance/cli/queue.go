package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
)

var queueCommand = command{
	name:  "queue",
	usage: "queue list",
	notes: []string{configNote, jsonNote},
	run:   runQueue,
}

func runQueue(e *env, words []string) error {
	if sub, _ := first(words); sub != "list" {
		return e.usageError()
	}
	fs := e.flags("queue list", true)
	asJSON := jsonFlag(fs)
	if _, err := e.parse(fs, words[1:], 0, 0); err != nil {
		return err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return err
	}
	var items []appliance.QueueInfo
	if err := call(cfg, "queue.list", nil, &items); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(items)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIZE\tSENDER\tRECIPIENTS\tATTEMPTS\tNEXT\tLAST ERROR")
	for _, it := range items {
		sender := it.Sender
		if sender == "" {
			sender = "<>"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", it.ID, it.Size, sender, strings.Join(it.Recipients, ","),
			it.Attempts, it.NextAttempt.Local().Format(time.DateTime), it.LastError)
	}
	return tw.Flush()
}
