package config

import "sigillo/appliance/nodeid"

// Cluster is the [cluster] table: this node's place in the cluster. Left
// out, the node gets an ID of its own the first time it starts, kept in
// the data directory (appliance/nodeid).
type Cluster struct {
	// NodeID names this node: the raft server ID and the owner of the
	// locks it takes. Default: chosen once and kept in DATA/node-id; a
	// data directory cannot change its node's ID afterwards.
	NodeID string `toml:"node_id"`
}

func (c Cluster) validate() error {
	if c.NodeID == "" {
		return nil
	}
	return nodeid.Check(c.NodeID)
}
