package apptest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"sigillo/storage"
)

// Proposer applies commands straight to Store, one log index after the
// other, as the raft FSM of a one-node cluster does. It is safe for
// concurrent use. A Proposer with only Store set is ready to use; its first
// command takes the index after the store's applied index, so a store that
// has applied commands before is not a trap.
type Proposer struct {
	Store *storage.Store

	fail atomic.Pointer[error]

	mu    sync.Mutex
	index uint64 // the last index used; 0: not read from the store yet
}

// NewProposer returns a Proposer for s.
func NewProposer(s *storage.Store) *Proposer {
	return &Proposer{Store: s}
}

// Apply encodes cmd, applies it at the next log index and returns the
// command's value with that index, and its refusal, as raft's Apply does
// (Proposer is a storage.Proposer). While a failure is set (FailWith), it
// applies nothing and returns that error.
func (p *Proposer) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.fail.Load(); e != nil {
		return storage.Applied{}, *e
	}
	data, err := storage.Encode(cmd)
	if err != nil {
		return storage.Applied{}, err
	}
	if p.index == 0 {
		if p.index, err = p.Store.AppliedIndex(ctx); err != nil {
			return storage.Applied{}, err
		}
	}
	p.index++
	res, err := p.Store.Apply(ctx, []storage.Entry{{Index: p.index, Data: data}})
	if err != nil {
		return storage.Applied{}, err
	}
	return storage.Applied{Index: p.index, Value: res[0].Value}, res[0].Err
}

// FailWith makes every Apply from now on fail with err, without applying
// anything, the way an unavailable raft (no quorum, no leader) fails. A nil
// err stops the failure.
func (p *Proposer) FailWith(err error) {
	if err == nil {
		p.fail.Store(nil)
		return
	}
	p.fail.Store(&err)
}

// Must applies cmd and returns its value, failing the test if the command
// is refused or cannot be applied.
func (p *Proposer) Must(t testing.TB, cmd storage.Command) any {
	t.Helper()
	a, err := p.Apply(context.Background(), cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd.Op(), err)
	}
	return a.Value
}

// ApplyAll applies cmds at the next log indexes in one batch (one SQLite
// transaction), as the raft FSM applies a batch of log entries, and
// returns each command's result. It is for filling a store quickly.
func (p *Proposer) ApplyAll(ctx context.Context, cmds []storage.Command) ([]storage.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.fail.Load(); e != nil {
		return nil, *e
	}
	var err error
	if p.index == 0 {
		if p.index, err = p.Store.AppliedIndex(ctx); err != nil {
			return nil, err
		}
	}
	entries := make([]storage.Entry, len(cmds))
	for i, cmd := range cmds {
		if entries[i].Data, err = storage.Encode(cmd); err != nil {
			return nil, err
		}
		p.index++
		entries[i].Index = p.index
	}
	return p.Store.Apply(ctx, entries)
}
