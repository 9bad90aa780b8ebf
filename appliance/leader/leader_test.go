package leader_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigillo/appliance/apptest"
	"sigillo/appliance/leader"
)

// leadership is raft's view as a test sets it.
type leadership struct {
	leads atomic.Bool
	ch    chan bool
}

func (l *leadership) IsLeader() bool        { return l.leads.Load() }
func (l *leadership) LeaderCh() <-chan bool { return l.ch }
func (l *leadership) set(v bool)            { l.leads.Store(v); l.ch <- v }

// running records which jobs are running now.
type running struct {
	mu  sync.Mutex
	now map[string]bool
}

func (r *running) job(name string) leader.Job {
	return leader.Job{Name: name, Run: func(ctx context.Context) error {
		r.mu.Lock()
		r.now[name] = true
		r.mu.Unlock()
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // a job takes a moment to stop
		r.mu.Lock()
		delete(r.now, name)
		r.mu.Unlock()
		return nil
	}}
}

func (r *running) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.now)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestJobsFollowLeadership(t *testing.T) {
	var logs apptest.LogBuffer
	r := &running{now: map[string]bool{}}
	jobs := []leader.Job{r.job("queue"), r.job("pec-timers"), r.job("legal-log"), r.job("ca-refresh")}
	l := &leadership{ch: make(chan bool, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		leader.Run(ctx, l, jobs, logs.Logger(slog.LevelInfo))
	}()

	lines := func(want string) {
		t.Helper()
		waitFor(t, "the log line "+want, func() bool { return strings.Count(logs.String(), want) > 0 })
	}
	// A follower runs none of them.
	time.Sleep(20 * time.Millisecond)
	if n := r.count(); n != 0 {
		t.Fatalf("%d leader jobs run on a follower", n)
	}

	l.set(true)
	waitFor(t, "all four jobs to run", func() bool { return r.count() == 4 })
	lines("leader jobs started: queue, pec-timers, legal-log, ca-refresh")
	t.Logf("leadership gained: running %s", leader.Names(jobs))

	l.set(false)
	// Loss of leadership returns only once every job has returned: the
	// log line comes after the last job stopped.
	lines("leader jobs stopped: queue, pec-timers, legal-log, ca-refresh")
	if n := r.count(); n != 0 {
		t.Fatalf("leadership lost but %d jobs still run", n)
	}
	t.Logf("leadership lost: stopped %s", leader.Names(jobs))

	l.set(true)
	waitFor(t, "the jobs to run again", func() bool { return r.count() == 4 })
	cancel()
	<-done
	if n := r.count(); n != 0 {
		t.Fatalf("Run returned with %d jobs running", n)
	}
	if got := strings.Count(logs.String(), "leader jobs started"); got != 2 {
		t.Errorf("started %d times, want 2", got)
	}
	if got := strings.Count(logs.String(), "leader jobs stopped"); got != 2 {
		t.Errorf("stopped %d times, want 2", got)
	}
	t.Logf("log:\n%s", logs.String())
}

func TestLeaderAtStartRunsAtOnceAndAFailedJobIsLogged(t *testing.T) {
	var logs apptest.LogBuffer
	l := &leadership{ch: make(chan bool, 1)}
	l.leads.Store(true) // one node alone leads before Run
	var ran atomic.Bool
	jobs := []leader.Job{
		{Name: "broken", Run: func(context.Context) error { return errors.New("no configuration") }},
		{Name: "queue", Run: func(ctx context.Context) error { ran.Store(true); <-ctx.Done(); return ctx.Err() }},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		leader.Run(ctx, l, jobs, logs.Logger(slog.LevelInfo))
	}()
	waitFor(t, "the queue to run", ran.Load)
	waitFor(t, "the broken job's error", func() bool {
		return strings.Contains(logs.String(), `leader job stopped" job=broken err="no configuration"`)
	})
	// A repeated "true" (raft may send one for the leadership Run saw
	// already) starts nothing twice.
	l.set(true)
	cancel()
	<-done
	if got := strings.Count(logs.String(), "leader jobs started"); got != 1 {
		t.Errorf("started %d times, want 1:\n%s", got, logs.String())
	}
	// The queue returned ctx.Err() after the end: not an error.
	if strings.Contains(logs.String(), "job=queue") {
		t.Errorf("a job stopped by the end of leadership was logged as failed:\n%s", logs.String())
	}
}
