//go:build !linux

package raftfsm

// mapDropper drops nothing outside Linux: raft.db's map pages stay resident
// until the system reclaims them.
func mapDropper(path string) func() error { return nil }
