package cli

import (
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
	var items []appliance.QueueInfo
	if done, err := e.report(words, "queue", "list", "queue.list", &items); done || err != nil {
		return err
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
