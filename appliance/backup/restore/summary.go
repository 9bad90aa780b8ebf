package restore

import (
	"fmt"
	"strings"
)

// Summary is the report in one line, for the command line.
func (r Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "snapshot %s (index %d", r.Snapshot, r.Index)
	if r.LogEntries > 0 {
		fmt.Fprintf(&b, ", then %d log entries to index %d", r.LogEntries, r.FinalIndex)
	}
	fmt.Fprintf(&b, "; log: %s)", r.LogEnd)
	if len(r.Counts) > 0 {
		fmt.Fprintf(&b, ": %d domains, %d mailboxes, %d messages", r.Counts["domains"], r.Counts["mailboxes"], r.Counts["messages"])
	}
	for _, c := range r.Checks {
		if !c.OK {
			fmt.Fprintf(&b, "; %s FAILED: %s", c.Name, c.Detail)
		}
	}
	if len(r.Checks) > 0 {
		fmt.Fprintf(&b, "; %d checks", len(r.Checks))
	}
	return b.String()
}
