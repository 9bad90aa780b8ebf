package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteJSON writes one JSON object per result, one per line.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the results as a table: one row per scenario (its
// main operation), then one row per kind of operation where a scenario
// has several.
func WriteTable(w io.Writer, results []Result) error {
	type row struct {
		scenario, server, op string
		nums                 string
		note                 string
	}
	var rows []row
	for _, r := range results {
		note := ""
		switch {
		case r.Error != "":
			note = "  (" + r.Error + ")"
		case r.Interrupted:
			note = "  (interrupted)"
		}
		main := mainOps[r.Scenario]
		rows = append(rows, row{r.Scenario, r.Server, main, fmt.Sprintf("%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t",
			r.Count, r.OpsPerS, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.Errors), note})
		for _, op := range r.Ops {
			if r.Error != "" && op.Count == 0 && op.Errors == 0 {
				continue // a scenario that could not start
			}
			if op.Op == main && (op.Errors == 0 || op.Errors == r.Errors) {
				continue // the same as the scenario's row
			}
			rows = append(rows, row{"", "", "  " + op.Op, fmt.Sprintf("%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t",
				op.Count, op.OpsPerS, op.P50Ms, op.P90Ms, op.P99Ms, op.MaxMs, op.Errors), ""})
		}
	}
	// Text columns left-aligned by hand, numbers right-aligned by tabwriter.
	ws := [3]int{len("scenario"), len("server"), len("op")}
	for _, r := range rows {
		ws[0], ws[1], ws[2] = max(ws[0], len(r.scenario)), max(ws[1], len(r.server)), max(ws[2], len(r.op))
	}
	text := func(a, b, c string) string { return fmt.Sprintf("%-*s  %-*s  %-*s", ws[0], a, ws[1], b, ws[2], c) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tcount\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\t\n", text("scenario", "server", "op"))
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s%s\n", text(r.scenario, r.server, r.op), r.nums, r.note)
	}
	return tw.Flush()
}

// mainOps is the operation of each scenario's top-level figures.
var mainOps = map[string]string{"smtp": "submit", "deliver": "deliver", "imap": "all", "pop3": "retr", "pec": "consegna"}
