package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Proposer is the write path as every user of it sees it: the front ends,
// the gestore, the queue, certstore and the control handler. It proposes a
// command to the replicated log and returns once the command is applied.
// A refusal by the command is a *Error; any other error means the command
// may not have been applied and the client should retry later. The raft
// node (raftfsm.Node) is one; a node that forwards to the leader will be
// another; apptest.Proposer is the tests' one.
type Proposer interface {
	Apply(ctx context.Context, cmd Command) (Applied, error)
}

// Applied is what a committed command gave: the log index it was applied
// at and its value, of the command's result type (ResultType; nil for a
// command that has none).
type Applied struct {
	Index uint64
	Value any
}

// ApplyAs applies cmd through p and returns its value as T, the command's
// result type (ResultType). No value gives T's zero value; a value of
// another type is an error, not a panic.
func ApplyAs[T any](ctx context.Context, p Proposer, cmd Command) (T, error) {
	var zero T
	a, err := p.Apply(ctx, cmd)
	if err != nil {
		return zero, err
	}
	if a.Value == nil {
		return zero, nil
	}
	v, ok := a.Value.(T)
	if !ok {
		return zero, fmt.Errorf("%s: value %T is not a %T", cmd.Op(), a.Value, zero)
	}
	return v, nil
}

// ResultType is the type of the value a command with op gives, nil when it
// gives none.
func ResultType(op string) reflect.Type {
	switch op {
	case "add-domain", "add-mailbox", "create-folder", "pec-track-forget", "virus-store-purge":
		return reflect.TypeFor[int64]()
	case "deliver":
		return reflect.TypeFor[*DeliverResult]()
	case "store-flags":
		return reflect.TypeFor[*FlagsResult]()
	case "expunge":
		return reflect.TypeFor[[]uint32]()
	case "copy":
		return reflect.TypeFor[*CopyResult]()
	case "pec-batch":
		return reflect.TypeFor[*BatchResult]()
	case "pec-log-append":
		return reflect.TypeOf(AppendLog{}.Entries) // the entries as chained and stored
	case "pec-log-purge":
		return reflect.TypeFor[PurgeResult]()
	}
	return nil
}

// wireResult is the envelope of EncodeResult.
type wireResult struct {
	Index uint64          `json:"index"`
	Value json.RawMessage `json:"value,omitempty"`
	Err   *Error          `json:"err,omitempty"`
}

// EncodeResult encodes what applying a command with op gave at index (its
// value, or its refusal), so that it can cross the network from the node
// that applied it to the one that proposed it. Only refusals (*Error)
// travel; any other error is the caller's to report.
func EncodeResult(op string, index uint64, value any, err error) ([]byte, error) {
	w := wireResult{Index: index}
	if err != nil {
		var refusal *Error
		if !errors.As(err, &refusal) {
			return nil, fmt.Errorf("encode %s result: %w is not a refusal", op, err)
		}
		w.Err = refusal
	}
	if value != nil {
		t := ResultType(op)
		if t == nil || reflect.TypeOf(value) != t {
			return nil, fmt.Errorf("encode %s result: value of type %T, want %v", op, value, t)
		}
		b, err := json.Marshal(value)
		if err != nil {
			return nil, fmt.Errorf("encode %s result: %w", op, err)
		}
		w.Value = b
	}
	return json.Marshal(w)
}

// DecodeResult decodes what EncodeResult encoded for a command with op: the
// log index, and the value, of the command's result type, or the refusal.
func DecodeResult(op string, data []byte) (uint64, Result, error) {
	var w wireResult
	if err := json.Unmarshal(data, &w); err != nil {
		return 0, Result{}, fmt.Errorf("decode %s result: %w", op, err)
	}
	var r Result
	if len(w.Value) > 0 && string(w.Value) != "null" {
		t := ResultType(op)
		if t == nil {
			return 0, Result{}, fmt.Errorf("decode %s result: the command has no value", op)
		}
		p := reflect.New(t)
		if err := json.Unmarshal(w.Value, p.Interface()); err != nil {
			return 0, Result{}, fmt.Errorf("decode %s result: %w", op, err)
		}
		r.Value = p.Elem().Interface()
	}
	if w.Err != nil {
		r.Err = w.Err
	}
	return w.Index, r, nil
}
