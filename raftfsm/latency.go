package raftfsm

import (
	"slices"
	"sync/atomic"
	"time"
)

// latencySamples is how many of the latest commits CommitLatency looks at.
const latencySamples = 1024

// commitLatency keeps the durations of the latest commits in a ring of
// atomics: recording is two atomic operations, no lock, so that Apply
// pays nothing measurable for it. A reader copies the ring while writers
// go on; a sample it sees half-replaced is still some recent commit's.
type commitLatency struct {
	next    atomic.Uint64
	samples [latencySamples]atomic.Int64 // nanoseconds
}

func (l *commitLatency) record(d time.Duration) {
	i := l.next.Add(1) - 1
	l.samples[i%latencySamples].Store(int64(d))
}

// CommitLatency is the median and the 99th percentile of how long this
// node's latest commands took from proposal to applied (appended, fsynced
// by a quorum, committed and applied to the store here), over the last
// 1,024 that committed. On the leader that is the replicated commit every
// write of the cluster waits for (a follower's writes arrive there through
// the Forwarder); a follower proposes nothing itself. Zero when no command
// has committed on this node since it started.
func (n *Node) CommitLatency() (p50, p99 time.Duration) {
	count := min(n.latency.next.Load(), latencySamples)
	if count == 0 {
		return 0, 0
	}
	ds := make([]int64, count)
	for i := range ds {
		ds[i] = n.latency.samples[i].Load()
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return time.Duration(ds[int(q*float64(count-1)+0.5)]) }
	return at(0.50), at(0.99)
}
