package raftfsm

import (
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"sigillo/raftfsm/logstore"
)

// progress tells the operator what a start is doing while raft reads the
// log after the newest snapshot: first its configuration scan (inside
// raft.NewRaft), then the replay through the FSM. One goroutine, owned by
// Open.
type progress struct {
	logger    *slog.Logger
	every     time.Duration
	span      logstore.Span
	logStore  *logstore.Store
	meter     *meter
	start     time.Time
	replay    atomic.Bool
	quit      chan struct{}
	done      chan struct{}
	stopped   bool
	stallWarn time.Duration
}

func startProgress(logger *slog.Logger, every time.Duration, snapIndex, applied uint64, skipping bool,
	logStore *logstore.Store, m *meter) (*progress, error) {
	whole, err := logStore.Measure(snapIndex)
	if err != nil {
		return nil, err
	}
	m.begin(whole.Entries, whole.Bytes, whole.Last)
	// What is read whole: after the database's index when the commands it
	// has are skipped, else everything after the snapshot.
	from := snapIndex
	if skipping {
		from = max(snapIndex, applied)
	}
	read, err := logStore.Prefetch(from)
	if err != nil {
		return nil, err
	}
	p := &progress{logger: logger, every: every, span: whole, logStore: logStore, meter: m, start: time.Now(),
		quit: make(chan struct{}), done: make(chan struct{}), stallWarn: time.Minute}
	if whole.Entries > 0 {
		logger.Info("reading the raft log after the last snapshot", "snapshot_index", snapIndex, "entries", whole.Entries,
			"mib", mib(whole.Bytes), "last_index", whole.Last, "database_index", applied, "to_read_entries", read.Entries,
			"to_read_mib", mib(read.Bytes))
	}
	go p.run()
	return p, nil
}

// replaying marks the end of the configuration scan.
func (p *progress) replaying() { p.replay.Store(true) }

// stop ends the reports; after a successful start it says what it took.
func (p *progress) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	close(p.quit)
	<-p.done
}

// finished reports a completed replay.
func (p *progress) finished() {
	p.stop()
	if p.span.Entries > 0 {
		p.logger.Info("raft log replayed", "entries", p.span.Entries, "mib", mib(p.span.Bytes),
			"took", time.Since(p.start).Round(time.Millisecond))
	}
}

func (p *progress) run() {
	defer close(p.done)
	t := time.NewTicker(p.every)
	defer t.Stop()
	var lastRead int64
	var lastIndex uint64
	lastMove := time.Now()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		read, index := p.logStore.BytesRead(), p.meter.index.Load()
		if read != lastRead || index != lastIndex {
			lastRead, lastIndex, lastMove = read, index, time.Now()
		} else if still := time.Since(lastMove); still >= p.stallWarn {
			p.logger.Warn("no progress reading the raft log", "for", still.Round(time.Second), "index", index, "last_index", p.span.Last)
			lastMove = time.Now()
			continue
		}
		elapsed := time.Since(p.start).Round(time.Second)
		if !p.replay.Load() {
			// The scan reads each entry once; what it read is all of it
			// so far.
			p.logger.Info("starting: reading the raft log for configuration changes", "read_mib", mib(min(read, p.span.Bytes)),
				"of_mib", mib(p.span.Bytes), "elapsed", elapsed)
			continue
		}
		p.logger.Info("starting: replaying the raft log", "index", index, "last_index", p.span.Last,
			"read_mib", mib(max(read-p.span.Bytes, 0)), "of_mib", mib(p.span.Bytes), "elapsed", elapsed)
	}
}

// mib is b in MiB, to a tenth.
func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
