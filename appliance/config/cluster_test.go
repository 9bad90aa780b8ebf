package config

import (
	"strings"
	"testing"
)

func TestTheClusterTableNamesTheNode(t *testing.T) {
	cfg, err := Load(write(t, "[cluster]\nnode_id = \"mx1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.NodeID != "mx1" {
		t.Fatalf("[cluster] read as %+v", cfg.Cluster)
	}
	cfg, err = Load(write(t, `hostname = "mail.example.test"`))
	if err != nil || cfg.Cluster.NodeID != "" {
		t.Fatalf("without [cluster]: %+v, %v; want no node_id (chosen at the first start)", cfg.Cluster, err)
	}
	for text, want := range map[string]string{
		"[cluster]\nnode_id = \"a b\"": "cluster.node_id",
		"[cluster]\nnode_id = \"-x\"":  "cluster.node_id",
		"[cluster]\nnode_id = 3":       "node_id",
		"[cluster]\npeers = [\"x:1\"]": "unknown key cluster.peers",
	} {
		if _, err := Load(write(t, text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, want)
		}
	}
}
