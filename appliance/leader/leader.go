// Package leader runs the jobs that only the raft leader does (the
// outbound queue, the PEC timers, the legal log's keeper, the refresh of
// the local CA's certificates): one list, all started when this node
// becomes leader and all stopped, and waited for, when it stops being
// leader or the process stops.
//
// It does not decide who leads (raft does), nor run the jobs every node
// does (ACME, the text indexer); a job that returns early is logged and
// not restarted until the next gain of leadership.
package leader

import (
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Job is one leader-only job. Run works until ctx ends; an error it
// returns before that is logged.
type Job struct {
	Name string
	Run  func(ctx context.Context) error
}

// Leadership tells whether this node leads, and when that changes
// (*raftfsm.Node).
type Leadership interface {
	IsLeader() bool
	// LeaderCh delivers true when this node becomes leader and false
	// when it stops being leader.
	LeaderCh() <-chan bool
}

// Names lists the jobs' names, comma-separated, as the log shows them.
func Names(jobs []Job) string {
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.Name
	}
	return strings.Join(names, ", ")
}

// Run runs jobs while l says this node leads, until ctx ends; it returns
// once every job it started has returned.
func Run(ctx context.Context, l Leadership, jobs []Job, log *slog.Logger) {
	var (
		stop    context.CancelFunc
		running sync.WaitGroup
	)
	start := func() {
		var jctx context.Context
		jctx, stop = context.WithCancel(ctx)
		for _, j := range jobs {
			running.Add(1)
			go func() {
				defer running.Done()
				if err := j.Run(jctx); err != nil && jctx.Err() == nil {
					log.Error("leader job stopped", "job", j.Name, "err", err)
				}
			}()
		}
		log.Info("leader jobs started: " + Names(jobs))
	}
	halt := func() {
		if stop == nil {
			return
		}
		stop()
		running.Wait()
		stop = nil
		log.Info("leader jobs stopped: " + Names(jobs))
	}
	defer halt()
	if l.IsLeader() {
		start()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case leads := <-l.LeaderCh():
			switch {
			case leads && stop == nil:
				log.Info("became leader")
				start()
			case !leads && stop != nil:
				log.Info("lost leadership")
				halt()
			}
		}
	}
}
