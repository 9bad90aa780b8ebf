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

func TestTheClusterTableSaysWhereTheNodeListensAndWhomToJoin(t *testing.T) {
	cfg, err := Load(write(t, "[cluster]\nnode_id = \"n2\"\nraft_addr = \"0.0.0.0:7001\"\nadvertise = \"10.0.0.2:7001\"\n"+
		"join = [\"10.0.0.1:7001\", \"mx3.example.test:7001\"]\ntoken_file = \"/etc/sigillo/join.token\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if !c.Clustered() || c.AdvertiseAddr() != "10.0.0.2:7001" || len(c.Join) != 2 || c.TokenFile != "/etc/sigillo/join.token" {
		t.Fatalf("[cluster] read as %+v", c)
	}
	cfg, err = Load(write(t, "[cluster]\nraft_addr = \"127.0.0.1:7001\"\n"))
	if err != nil || cfg.Cluster.AdvertiseAddr() != "127.0.0.1:7001" || len(cfg.Cluster.Join) != 0 {
		t.Fatalf("first node: %+v, %v; want advertise = raft_addr and no join (it bootstraps)", cfg.Cluster, err)
	}
	for text, want := range map[string]string{
		"[cluster]\nraft_addr = \"7001\"":                                   "cluster.raft_addr",
		"[cluster]\nraft_addr = \"127.0.0.1:99999\"":                        "cluster.raft_addr",
		"[cluster]\nraft_addr = \"0.0.0.0:7001\"":                           "set advertise",
		"[cluster]\nraft_addr = \":7001\"":                                  "set advertise",
		"[cluster]\nraft_addr = \"127.0.0.1:7001\"\njoin = [\"x\"]":         "cluster.join",
		"[cluster]\nraft_addr = \"127.0.0.1:7001\"\nadvertise = \"[::]:1\"": "cluster.advertise",
		"[cluster]\njoin = [\"127.0.0.1:7001\"]":                            "cluster.join needs cluster.raft_addr",
		"[cluster]\ntoken_file = \"/x\"":                                    "cluster.token_file needs cluster.raft_addr",
	} {
		if _, err := Load(write(t, text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", text, err, want)
		}
	}
}
