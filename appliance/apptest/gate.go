package apptest

import "sync/atomic"

// Gate is the node's readiness as a test sets it: ready until Down, ready
// again after Up. Pass its Ready method where a front end takes a
// Ready func() (ok bool, reason string). It is the seam the appliance fills
// from the raft node, not a stand-in for a component; safe for concurrent
// use.
type Gate struct {
	down atomic.Pointer[string] // the reason while not ready; nil: ready
}

// Ready reports what the test last set.
func (g *Gate) Ready() (ok bool, reason string) {
	if r := g.down.Load(); r != nil {
		return false, *r
	}
	return true, ""
}

// Down makes the node not ready, for reason.
func (g *Gate) Down(reason string) { g.down.Store(&reason) }

// Up makes the node ready again.
func (g *Gate) Up() { g.down.Store(nil) }
