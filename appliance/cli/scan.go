package cli

import (
	"errors"
	"fmt"

	"sigillo/appliance"
)

// scanCommand shows the virus scanner: clamd's address, whether it
// answers, its engine and signature versions, and the size of the virus
// store.
var scanCommand = command{
	name:  "scan",
	usage: "scan status",
	notes: []string{configNote, jsonNote},
	run:   runScan,
}

func runScan(e *env, words []string) error {
	var info appliance.ScanInfo
	if done, err := e.report(words, "scan", "status", "scan.status", &info); done || err != nil {
		return err
	}
	if !info.Enabled {
		fmt.Fprintf(e.stdout, "scanning off (no [scan] clamd); virus store: %s\n", plural(info.Infected, "message", "messages"))
		return nil
	}
	state := "answering"
	if !info.OK {
		state = "NOT ANSWERING: " + info.Error
	}
	fmt.Fprintf(e.stdout, "clamd %s (required %v): %s\n", info.Address, info.Required, state)
	if info.Version != "" {
		fmt.Fprintf(e.stdout, "version: %s\n", info.Version)
	}
	fmt.Fprintf(e.stdout, "virus store: %s\n", plural(info.Infected, "message", "messages"))
	if !info.OK {
		return errors.New("clamd is not answering")
	}
	return nil
}
