package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"sigillo/appliance"
	"sigillo/appliance/manage"
)

// clusterCommand shows and changes the cluster's members: every node's
// role and progress, join tokens for new nodes, removing a node for
// good, and the recovery of a cluster that lost its quorum for good.
var clusterCommand = command{
	name: "cluster",
	usage: "cluster status | token [--ttl 24h] | remove NODE_ID\n" +
		"cluster token --list | --revoke ID\n" +
		"cluster recover [--yes]",
	notes: []string{configNote, jsonNote,
		"token prints a join token for [cluster] token_file of a new node (valid --ttl, default 24h);",
		"  the cluster keeps only its hash; --list shows the tokens (no secrets), --revoke ends one",
		"recover runs on a STOPPED node when a majority of the nodes is lost for good: it makes",
		"  this node the only member (the others must then join again); it asks you to type RECOVER"},
	run: runCluster,
}

func runCluster(e *env, words []string) error {
	sub, rest := first(words)
	switch sub {
	case "status":
		var st manage.ClusterStatus
		done, err := e.fetch("cluster status", rest, 0, "cluster.status", "", &st)
		if done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tAPPLIED\tLAG\tLAST CONTACT\tVERSION\tREADY")
		for _, n := range st.Nodes {
			ready := "yes"
			if !n.Ready {
				ready = "NO: " + n.Reason
			}
			contact := "-"
			if n.Role == "follower" {
				contact = (time.Duration(n.LastContactMS) * time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", n.ID, n.Address, n.Role, n.AppliedIndex, n.Lag, contact, n.Version, ready)
		}
		return tw.Flush()
	case "token":
		fs := e.flags("cluster token", true)
		ttl := fs.Duration("ttl", 24*time.Hour, "how long the token may be used")
		list := fs.Bool("list", false, "list the join tokens")
		revoke := fs.String("revoke", "", "revoke the join token with this ID")
		asJSON := jsonFlag(fs)
		if _, err := e.parse(fs, rest, 0, 0); err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		switch {
		case *list:
			var ts []manage.JoinToken
			if err := call(cfg, "cluster.tokens", nil, &ts); err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(e.stdout).Encode(ts)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES")
			for _, t := range ts {
				exp := t.Expires.Local().Format(time.DateTime)
				if t.Expired {
					exp += " (expired)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Created.Local().Format(time.DateTime), exp)
			}
			return tw.Flush()
		case *revoke != "":
			if err := call(cfg, "cluster.revoke", map[string]string{"id": *revoke}, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "join token %s revoked\n", *revoke)
			return nil
		}
		var tok string
		if err := call(cfg, "cluster.token", map[string]string{"ttl": ttl.String()}, &tok); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, tok)
		return nil
	case "remove":
		fs := e.flags("cluster remove", true)
		args, err := e.parse(fs, rest, 1, 1)
		if err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		if err := call(cfg, "cluster.remove", map[string]string{"node": args[0]}, nil); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "node %s removed from the cluster\n", args[0])
		return nil
	case "recover":
		fs := e.flags("cluster recover", true)
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		if _, err := e.parse(fs, rest, 0, 0); err != nil {
			return err
		}
		cfg, err := e.config(fs, false)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, `WARNING: cluster recover rewrites this node's raft configuration so that it is
the ONLY member of the cluster (data directory %s). Use it only when a majority
of the nodes is lost for good: if the others come back they would form a second
cluster. Afterwards start this node, then join the others again with new data
directories (sigillo cluster token).
`, cfg.DataDir)
		if !*yes {
			fmt.Fprint(e.stderr, "Type RECOVER to go on: ")
			line, _ := bufio.NewReader(e.stdin).ReadString('\n')
			if strings.TrimSpace(line) != "RECOVER" {
				return fmt.Errorf("cluster recover: not confirmed; nothing changed")
			}
		}
		id, err := appliance.RecoverCluster(cfg)
		if err != nil {
			return fmt.Errorf("cluster recover: %w", err)
		}
		fmt.Fprintf(e.stdout, "node %s is now the only member; start it, then join the others again\n", id)
		return nil
	}
	return e.usageError()
}
