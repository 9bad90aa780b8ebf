package config

import (
	"fmt"
	"net"
	"strconv"

	"sigillo/appliance/nodeid"
)

// Cluster is the [cluster] table: this node's place in the cluster. Left
// out, the node is a one-node cluster with an ID of its own, chosen the
// first time it starts and kept in the data directory (appliance/nodeid).
type Cluster struct {
	// NodeID names this node: the raft server ID and the owner of the
	// locks it takes. Default: chosen once and kept in DATA/node-id; a
	// data directory cannot change its node's ID afterwards.
	NodeID string `toml:"node_id"`
	// RaftAddr is where this node listens for the other nodes: raft,
	// forwarded writes and joins, over mutual TLS on one port. Empty: a
	// one-node cluster that no other node can reach.
	RaftAddr string `toml:"raft_addr"`
	// Advertise is the address the other nodes dial to reach this one
	// (default raft_addr, which must then name a host, not 0.0.0.0).
	Advertise string `toml:"advertise"`
	// Join lists members to join the cluster through. Empty: this node
	// bootstraps a new cluster (the first node). A node that has joined
	// once rejoins by itself at every start; the list is then only where
	// to ask for its address to be updated.
	Join []string `toml:"join"`
	// TokenFile holds the join token (`sigillo cluster token` on a member),
	// needed by a node joining for the first time.
	TokenFile string `toml:"token_file"`
}

// Clustered reports whether the node talks to other nodes (raft_addr set).
func (c Cluster) Clustered() bool { return c.RaftAddr != "" }

// AdvertiseAddr is the address the other nodes dial.
func (c Cluster) AdvertiseAddr() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.RaftAddr
}

func (c Cluster) validate() error {
	if c.NodeID != "" {
		if err := nodeid.Check(c.NodeID); err != nil {
			return fmt.Errorf("cluster.node_id: %w", err)
		}
	}
	if c.RaftAddr == "" {
		for key, set := range map[string]bool{"advertise": c.Advertise != "", "join": len(c.Join) > 0, "token_file": c.TokenFile != ""} {
			if set {
				return fmt.Errorf("cluster.%s needs cluster.raft_addr (the address this node listens on for the others)", key)
			}
		}
		return nil
	}
	if err := hostPort(c.RaftAddr, false); err != nil {
		return fmt.Errorf("cluster.raft_addr: %w", err)
	}
	if err := hostPort(c.AdvertiseAddr(), true); err != nil {
		if c.Advertise == "" {
			return fmt.Errorf("cluster.advertise: raft_addr %q cannot be dialled by the others (%v): set advertise to this node's address", c.RaftAddr, err)
		}
		return fmt.Errorf("cluster.advertise: %w", err)
	}
	for _, j := range c.Join {
		if err := hostPort(j, true); err != nil {
			return fmt.Errorf("cluster.join: %w", err)
		}
	}
	return nil
}

// hostPort checks "host:port"; dialable also refuses an empty or
// unspecified host (0.0.0.0, ::), which another machine cannot dial.
func hostPort(s string, dialable bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	if dialable {
		if host == "" {
			return fmt.Errorf("%q has no host", s)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%q: %s is not an address another node can dial", s, host)
		}
	}
	return nil
}
