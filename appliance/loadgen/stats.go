package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// ReservoirSize caps the latency samples one Recorder keeps. Past it, a
// uniform random subset of everything recorded (Vitter's algorithm R)
// stands for the whole: memory stays bounded on long runs, while the
// count, the maximum and the mean stay exact.
const ReservoirSize = 200_000

// Recorder collects latencies; it is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	n       int64
	sum     time.Duration
	max     time.Duration
	limit   int
	samples []time.Duration
	rng     *rand.Rand
}

// NewRecorder returns a Recorder keeping at most ReservoirSize samples.
func NewRecorder() *Recorder { return newRecorder(ReservoirSize) }

func newRecorder(limit int) *Recorder {
	return &Recorder{limit: limit, rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// Record adds one latency (a negative one counts as 0).
func (r *Recorder) Record(d time.Duration) {
	d = max(d, 0)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.sum += d
	r.max = max(r.max, d)
	if len(r.samples) < r.limit {
		r.samples = append(r.samples, d)
		return
	}
	// Algorithm R: the n-th sample replaces a kept one with probability
	// limit/n, so every sample seen is kept with the same probability.
	if i := r.rng.Int64N(r.n); i < int64(r.limit) {
		r.samples[i] = d
	}
}

// Stats is a summary of recorded latencies.
type Stats struct {
	Count              int64
	Mean               time.Duration
	P50, P90, P99, Max time.Duration
}

// Stats summarises what was recorded so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	sorted := slices.Clone(r.samples)
	s := Stats{Count: r.n, Max: r.max}
	if r.n > 0 {
		s.Mean = r.sum / time.Duration(r.n)
	}
	r.mu.Unlock()
	slices.Sort(sorted)
	s.P50 = Percentile(sorted, 50)
	s.P90 = Percentile(sorted, 90)
	s.P99 = Percentile(sorted, 99)
	return s
}

// Count is how many latencies were recorded.
func (r *Recorder) Count() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of sorted
// samples: the smallest sample that at least p% of the samples do not
// exceed. It is 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted)) / 100)) // p·n first: exact for whole p
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
