package cluster

// Forwarding: a follower's writes go to the leader's /cluster/v1/apply as
// encoded commands; the follower answers once it has applied the index
// the leader gives back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"sigillo/raftfsm"
	"sigillo/storage"
)

// applyAnswer is the leader's answer to a forwarded command.
type applyAnswer struct {
	Index uint64 `json:"index"`
	// Result is storage.EncodeResult's: the value, or the refusal.
	Result json.RawMessage `json:"result"`
	// Refusal repeats a refusal for readers other than a Forwarder.
	Refusal *refusal `json:"refusal,omitempty"`
}

type refusal struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// defaultMaxApply bounds a forwarded command when MaxApplyBytes is 0: a
// message at the largest size Sigillo accepts, and room to spare.
const defaultMaxApply = 256 << 20

func (s *Service) handleApply(w http.ResponseWriter, r *http.Request) {
	limit := s.MaxApplyBytes
	if limit <= 0 {
		limit = defaultMaxApply
	}
	if r.ContentLength > limit {
		writeError(w, http.StatusRequestEntityTooLarge, &rpcError{Code: codeInvalid,
			Message: fmt.Sprintf("command of %d bytes, at most %d", r.ContentLength, limit)})
		return
	}
	data, err := readBody(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: "read the command: " + err.Error()})
		return
	}
	cmd, err := storage.Decode(data)
	if err != nil {
		// A command this build does not know (a newer node during an
		// upgrade) is refused here, before it reaches the log.
		writeError(w, http.StatusBadRequest, &rpcError{Code: codeInvalid, Message: err.Error()})
		return
	}
	// Forwarded commands are not passed on again: the sender retries at
	// the leader named here.
	if !s.Node.IsLeader() {
		writeError(w, http.StatusMisdirectedRequest, notLeader(s.Node.Leader()))
		return
	}
	a, err := s.Node.Apply(r.Context(), cmd)
	var ref *storage.Error
	if err != nil && !errors.As(err, &ref) {
		code, e := statusFor(err, s.Node)
		writeError(w, code, e)
		return
	}
	res, encErr := storage.EncodeResult(cmd.Op(), a.Index, a.Value, err)
	if encErr != nil {
		// Applied, but the value cannot travel: a bug, and the sender
		// cannot know whether the command took effect.
		s.logger().Error("encoding a forwarded command's result failed", "op", cmd.Op(), "index", a.Index, "err", encErr)
		writeError(w, http.StatusInternalServerError, &rpcError{Code: codeUnavailable, Message: encErr.Error()})
		return
	}
	ans := applyAnswer{Index: a.Index, Result: res}
	if ref != nil {
		ans.Refusal = &refusal{Code: string(ref.Code), Message: ref.Msg}
	}
	writeJSON(w, http.StatusOK, ans)
}

// readBody reads a whole body, into one buffer of the announced size when
// there is one.
func readBody(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// ForwardNode is the raft node as a Forwarder uses it (raftfsm.Node is
// one).
type ForwardNode interface {
	storage.Proposer
	IsLeader() bool
	Leader() (id, addr string)
	WaitApplied(ctx context.Context, index uint64) error
}

// Forwarder is the write path of every node (a storage.Proposer): it
// applies a command on the node when the node leads, and otherwise sends
// it to the leader's /cluster/v1/apply; then it waits until the node has
// applied the command's index, so that what the client reads next on this
// node includes its write. A refusal comes back as the same
// *storage.Error. When no leader is known, or the leader cannot be
// reached, the error wraps raftfsm.ErrUnavailable (a temporary failure
// for the client).
//
// A command is sent again only when the leader surely did not take it:
// it answered that it does not lead (then the command goes to the leader
// it names, or the one this node learns of), or the connection could not
// be made; three sends at most. Once sent, a
// lost answer is ErrUnavailable: the client retries, and deliveries are
// deduplicated by the store.
type Forwarder struct {
	Node   ForwardNode
	Client Doer
	Logger *slog.Logger
	// Timeout bounds a write whose context has no deadline (default 10 s).
	Timeout time.Duration
	// LeaderWait is how long to wait for a leader to be known, as during
	// an election (default 5 s: after a leader is killed the election
	// takes 1 to 3 s, and an SMTP client told 4xx comes back only
	// minutes later).
	LeaderWait time.Duration
}

var _ storage.Proposer = (*Forwarder)(nil)

// Apply implements storage.Proposer.
func (f *Forwarder) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	// A follower does not try locally: that would copy the command (a
	// whole message) for nothing.
	if f.Node.IsLeader() {
		a, err := f.Node.Apply(ctx, cmd)
		if !errors.Is(err, raftfsm.ErrNotLeader) {
			return a, err
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := f.Timeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	data, err := storage.Encode(cmd)
	if err != nil {
		return storage.Applied{}, err
	}
	op := cmd.Op()
	hint, refused := "", ""
	for attempt := 0; ; attempt++ {
		addr := hint
		if addr == "" {
			if addr, err = f.leader(ctx, refused); err != nil {
				return storage.Applied{}, fmt.Errorf("%w: %s: %w", raftfsm.ErrUnavailable, op, err)
			}
			if addr == "" { // this node leads now
				return f.Node.Apply(ctx, cmd)
			}
		}
		a, res, next, err := f.send(ctx, addr, op, data)
		if err == nil {
			if res.Err != nil {
				// A refusal changed nothing: nothing to wait for.
				return storage.Applied{Index: a}, res.Err
			}
			if err := f.Node.WaitApplied(ctx, a); err != nil {
				return storage.Applied{}, fmt.Errorf("%w: %s committed at index %d, not yet applied here: %w",
					raftfsm.ErrUnavailable, op, a, err)
			}
			return storage.Applied{Index: a, Value: res.Value}, nil
		}
		if !next.retry || attempt+1 >= maxSends {
			return storage.Applied{}, fmt.Errorf("%w: %s through the leader at %s: %w", raftfsm.ErrUnavailable, op, addr, err)
		}
		f.logger().Debug("forwarding again", "op", op, "to", next.addr, "after", err)
		hint, refused = next.addr, addr
	}
}

func (f *Forwarder) logger() *slog.Logger {
	if f.Logger == nil {
		return slog.Default()
	}
	return f.Logger
}

// maxSends bounds the sends of one command: each send after the first
// follows a failure that surely left the command out of the log (a node
// that does not lead, a connection never made), while leadership moves.
const maxSends = 3

// refusedGrace is how long a node that said it does not lead is passed
// over while this node still names it: after that it is asked again, since
// it may have been elected again meanwhile (an election takes 0.5 to 1 s).
const refusedGrace = time.Second

// leader is the leader's address, "" when this node leads; it waits up to
// LeaderWait for one to be known, preferring for refusedGrace one other
// than refused (a node that has just said it does not lead).
func (f *Forwarder) leader(ctx context.Context, refused string) (string, error) {
	wait := f.LeaderWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	start := time.Now()
	deadline := start.Add(wait)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if f.Node.IsLeader() {
			return "", nil
		}
		if _, addr := f.Node.Leader(); addr != "" && (addr != refused || time.Since(start) >= refusedGrace) {
			return addr, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader known after %v", wait)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// retry says whether a failed send may be made again (the leader surely
// did not take the command) and where to ("": ask the node).
type retry struct {
	retry bool
	addr  string
}

// send posts the encoded command to the leader at addr.
func (f *Forwarder) send(ctx context.Context, addr, op string, data []byte) (uint64, storage.Result, retry, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+PathApply, bytes.NewReader(data))
	if err != nil {
		return 0, storage.Result{}, retry{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = int64(len(data))
	resp, err := f.Client.Do(req)
	if err != nil {
		// Nothing was sent when the connection could not be made.
		var oe *net.OpError
		return 0, storage.Result{}, retry{retry: errors.As(err, &oe) && oe.Op == "dial"}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, storage.Result{}, retry{}, fmt.Errorf("the answer was lost: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e rpcError
		if json.Unmarshal(body, &e) != nil || e.Code == "" {
			e = rpcError{Code: strconv.Itoa(resp.StatusCode), Message: string(truncate(body, 200))}
		}
		if e.Code == codeNotLeader {
			next := retry{retry: true, addr: e.LeaderAddr}
			if next.addr == addr { // it is out of date: ask this node
				next.addr = ""
			}
			return 0, storage.Result{}, next, &e
		}
		return 0, storage.Result{}, retry{}, &statusErr{status: resp.StatusCode, err: &e}
	}
	var ans applyAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, storage.Result{}, retry{}, fmt.Errorf("the leader's answer: %w", err)
	}
	index, res, err := storage.DecodeResult(op, ans.Result)
	if err != nil {
		return 0, storage.Result{}, retry{}, err
	}
	return index, res, retry{}, nil
}
