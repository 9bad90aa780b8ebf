// Package clusternet is the cluster port of a Sigillo node: one TCP port,
// mutual TLS, that carries raft's traffic (ALPN "sigillo-raft/1") and an
// HTTP RPC service (ALPN "h2", "http/1.1" or none), and the cluster's PKI:
// the cluster CA, node certificates, the identity files a node keeps, and
// the join token a new node presents.
//
// Who may do what on the port:
//   - raft: only a peer whose certificate the cluster CA signed; anyone else
//     is disconnected right after the handshake;
//   - RPC: every handler sees the verified peer node (PeerNode) or none;
//     RequireNode answers 403 to a request without one. A joining node has
//     no certificate yet, so the join handler is the one left unwrapped;
//   - a client certificate from another CA fails the handshake; a client
//     silent for 10 s is dropped before it finishes the handshake.
//
// It is not the RPC handlers (appliance/cluster), not raft membership
// (raftfsm), and not where tokens are stored or revoked: it hashes and
// compares them, and the store keeps the hashes.
package clusternet
