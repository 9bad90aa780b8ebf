// Package raftfsm replicates Sigillo's store with hashicorp/raft: it is the
// one write path. A command is encoded, appended to the raft log (fsynced
// to disk in raft.db, package logstore), and applied by the FSM to the node's SQLite
// store; Apply returns only after that, so a front end acknowledges only
// committed state. Snapshots are consistent copies of the SQLite database,
// taken by the Node's policy (snapshots.go: by log bytes, entries and
// time), and a restart rebuilds from snapshot + log, going through the log
// after the snapshot without reading what the database already holds.
//
// A lone node is a one-node cluster that bootstrapped itself, because its
// caller said so (Config.Bootstrap); a node that is not its cluster's sole
// voter starts without leading. Joining nodes over mutual TLS, forwarding
// writes to the leader and backups to remote targets are later work; the
// seams for them are the Transport in Config, storage.Proposer (a
// forwarder is another one), ErrNotLeader and the Node's leader
// observation. It is not a storage layer: it knows nothing
// of the schema, only of storage.Command and storage.Store.Apply.
package raftfsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"sigillo/raftfsm/logstore"
	"sigillo/storage"
)

// ErrUnavailable means a command could not be committed now (no leader, no
// quorum, store failing, shutting down). The client should retry later.
var ErrUnavailable = errors.New("replicated store unavailable")

// ErrNotLeader means this node does not lead the cluster, so it cannot
// propose a command: nothing was appended. Unlike ErrUnavailable it says
// where to go: to the leader (forwarding comes with the cluster).
var ErrNotLeader = errors.New("not the raft leader")

// Config says where a node keeps its raft state and who it is.
type Config struct {
	// Dir holds raft.db (log and stable store) and snapshots/.
	Dir string
	// NodeID names this node in the cluster; default "node1".
	NodeID string
	// Bootstrap makes a node with no raft state a one-node cluster that
	// elects itself: the caller's decision, for a single node or the first
	// node of a cluster. Without it such a node starts as a member that
	// waits for a leader to add it. A node with raft state ignores it.
	Bootstrap bool
	// Transport carries raft traffic; nil means an in-memory transport,
	// enough for a one-node cluster.
	Transport raft.Transport
	Logger    *slog.Logger
	// A snapshot (a copy of the database) is taken, and the log before it
	// truncated, when the log since the last one holds SnapshotBytes of
	// commands (default 256 MiB) or SnapshotThreshold entries (default
	// 4096, at most once a minute), or SnapshotInterval has passed with
	// anything new (default 1 h). See snapshots.go for the costs.
	SnapshotBytes     int64
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs and TrailingBytes bound what stays in the log behind a
	// snapshot, for a follower that is a little behind (defaults 1024
	// entries, a quarter of SnapshotBytes: 64 MiB).
	TrailingLogs  uint64
	TrailingBytes int64
	// ApplyTimeout bounds a command that has no context deadline (default 10 s).
	ApplyTimeout time.Duration
	// ProgressEvery is how often a start that replays the log says how far
	// it is (default 5 s).
	ProgressEvery time.Duration
	// Now is the clock of the snapshot policy (default time.Now).
	Now func() time.Time
	// NotReadyAfter is how long a node may be without a leader, or
	// without hearing from it, and still be ready (Health; default 3 s).
	NotReadyAfter time.Duration
	// MaxLag is how many committed entries a ready node's store may still
	// have to apply (Health; default 1000).
	MaxLag uint64

	// checkEvery is how often the snapshot policy looks (1 s; tests).
	checkEvery time.Duration
	// translate stands for a newer binary in tests (fsm.translate).
	translate func([]byte) []byte
	// compactMinFree is the free space in raft.db below which it is not
	// compacted (logstore.MinWaste; tests).
	compactMinFree int64
}

func (cfg *Config) setDefaults() {
	if cfg.NodeID == "" {
		cfg.NodeID = "node1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SnapshotBytes <= 0 {
		cfg.SnapshotBytes = 256 << 20
	}
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = 4096
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = time.Hour
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 1024
	}
	if cfg.TrailingBytes <= 0 {
		cfg.TrailingBytes = cfg.SnapshotBytes / 4
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.checkEvery <= 0 {
		cfg.checkEvery = time.Second
	}
	if cfg.NotReadyAfter <= 0 {
		cfg.NotReadyAfter = 3 * time.Second
	}
	if cfg.MaxLag == 0 {
		cfg.MaxLag = 1000
	}
	if cfg.compactMinFree <= 0 {
		cfg.compactMinFree = logstore.MinWaste
	}
}

// Node is one raft member with its FSM.
type Node struct {
	raft      *raft.Raft
	id        raft.ServerID
	fsm       *fsm
	logStore  *logstore.Store
	logs      *logCache // raft's view of logStore
	transport raft.Transport
	logger    *slog.Logger
	timeout   time.Duration
	policy    *policy
	health    *healthState
	stopped   chan struct{} // closed by Close
	closeOnce sync.Once
	latency   commitLatency // latency.go
}

// Open starts the node on store. A node with no raft state bootstraps a
// one-node cluster if cfg.Bootstrap says so. A node whose configuration
// has it as the only voter (the one-node cluster) will elect itself: Open
// returns once it is the leader and has applied every committed entry,
// however long the log is to replay (saying how far it is every
// ProgressEvery), or with an error when ctx ends first. Any other node
// (one that names other servers, or one not yet in any configuration)
// does not elect itself alone: Open returns once raft is running, and the
// node follows whichever leader its cluster elects; until then Apply
// returns ErrNotLeader.
func Open(ctx context.Context, cfg Config, store *storage.Store) (*Node, error) {
	cfg.setDefaults()
	openedAt := time.Now()
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft dir: %w", err)
	}
	RemoveStaleTemp(filepath.Dir(store.Path()))
	logger := cfg.Logger.With("component", "raft")

	snaps, err := raft.NewFileSnapshotStore(filepath.Join(cfg.Dir), 2, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	// The data directory's lock (appliance/datalock) keeps other servers
	// out; a raft.db still held is another program's, or an older server's
	// that took no such lock.
	logStore, err := logstore.Open(ctx, filepath.Join(cfg.Dir, "raft.db"), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	// A raft.db that an older version left at its peak size (or a crash
	// between a truncation and its compaction) shrinks now.
	if c, done, err := logStore.CompactIfWasteful(ctx, cfg.compactMinFree); err != nil {
		logger.Warn("raft.db not compacted; it stays as large as it is", "err", err)
	} else if done {
		logCompaction(logger, "raft.db compacted at start", c)
	}
	// The database normally holds everything up to its applied index, so
	// raft need not restore a snapshot at every start; if the database is
	// behind the newest snapshot (lost or rolled back), restore it here.
	snapIndex, err := catchUpFromSnapshot(ctx, snaps, store, logStore, logger)
	if err != nil {
		logStore.Close()
		return nil, err
	}
	// Entries carry whole messages: cache only the small ones, and keep
	// raft.db's map from holding them (see logStore).
	cache, err := newLogCache(32, logStore, filepath.Join(cfg.Dir, "raft.db"))
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("raft log cache: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	// Snapshots are the policy's (snapshots.go): raft's own trigger counts
	// entries only, blind to their size.
	rc.SnapshotThreshold = math.MaxUint64
	rc.SnapshotInterval = 24 * time.Hour
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true
	// raft's defaults: a leader unheard of for 1 to 2 s is replaced
	// (failover within about 3 s), and a loaded machine (the race
	// detector, a burst on two cores) does not lose its leader for
	// nothing, as it did with half these values.
	rc.HeartbeatTimeout = time.Second
	rc.ElectionTimeout = time.Second
	rc.LeaderLeaseTimeout = 500 * time.Millisecond
	// A follower learns that an entry is committed from the leader's next
	// append; when no command follows, that comes after CommitTimeout (to
	// twice it). A follower that forwarded a write waits for it before
	// answering (read your own writes): 5 ms, not raft's 50.
	rc.CommitTimeout = 5 * time.Millisecond
	if cfg.Transport == nil {
		// Alone, the heartbeat timeout is only the wait before the node
		// elects itself at start (raft waits 1 to 2 times it).
		rc.HeartbeatTimeout = 50 * time.Millisecond
		rc.ElectionTimeout = 50 * time.Millisecond
		rc.LeaderLeaseTimeout = 50 * time.Millisecond
	}
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{logger}})

	transport := cfg.Transport
	if transport == nil {
		_, transport = raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID))
	}
	f := newFSM(store, logger, int(cfg.TrailingLogs))
	f.translate = cfg.translate

	has, err := raft.HasExistingState(cache, logStore, snaps)
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("raft state: %w", err)
	}
	switch {
	case !has && cfg.Bootstrap:
		conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: transport.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, cache, logStore, snaps, transport, conf); err != nil {
			logStore.Close()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		logger.Info("bootstrapped a one-node cluster", "node", cfg.NodeID)
	case !has:
		logger.Info("no raft state and no bootstrap: waiting for a leader to add this node", "node", cfg.NodeID)
	}

	// Raft reads every entry after the newest snapshot twice at start:
	// for configuration changes in NewRaft, then to replay them through
	// the FSM, where the database skips the commands it already has. A
	// node alone in its cluster (the in-memory transport: no peer can
	// reach it, so nothing else reads the log meanwhile) reads those
	// commands without their data. Say what is to come, ask the kernel for
	// the rest, and report while it goes.
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		logStore.Close()
		return nil, err
	}
	f.meter.applied(max(applied, snapIndex))
	alone := cfg.Transport == nil
	if alone {
		logStore.SkipCommandData(applied)
	}
	prog, err := startProgress(logger, cfg.ProgressEvery, snapIndex, applied, alone, logStore, f.meter)
	if err != nil {
		logStore.Close()
		return nil, err
	}
	r, err := raft.NewRaft(rc, f, cache, cache, snaps, transport)
	if err != nil {
		prog.stop()
		logStore.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	prog.replaying()
	n := &Node{raft: r, id: rc.LocalID, fsm: f, logStore: logStore, logs: cache, transport: transport, logger: logger, timeout: cfg.ApplyTimeout, stopped: make(chan struct{})}
	n.health = startHealth(r, cfg, openedAt)
	handOver := n.handOver
	f.onHalt.Store(&handOver)
	sole, err := n.soleVoter()
	if err == nil && sole {
		err = n.waitReady(ctx)
	}
	logStore.SkipCommandData(0)
	if err != nil {
		prog.stop()
		n.Close()
		return nil, err
	}
	if sole {
		prog.finished()
	} else {
		prog.stop()
		logger.Info("raft running: waiting for a leader", "node", cfg.NodeID, "applied", applied)
	}
	n.policy = startPolicy(n, cfg)
	return n, nil
}

// soleVoter reports whether this node is the only voter of its latest
// configuration, and so elects itself. A node in no configuration yet, or
// in one with other voters, needs a leader elected by a quorum.
func (n *Node) soleVoter() (bool, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return false, fmt.Errorf("raft configuration: %w", err)
	}
	voters, self := 0, false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == n.id {
			self = true
		}
	}
	return voters == 1 && self, nil
}

// waitReady waits for leadership and then for a barrier, so that every
// entry committed before the restart is in the store. Only ctx limits the
// wait: a long replay is reported, not cut short. A replay that stops at
// a command this binary does not know ends the wait too: the node runs,
// halted and not ready (Health), until it is upgraded.
func (n *Node) waitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for raft leadership: %w", ctx.Err())
		case <-t.C:
		}
	}
	// The barrier resolves once the FSM has applied everything before it;
	// raft resolves it with ErrRaftShutdown when Close stops it.
	done := make(chan error, 1)
	go func() { done <- n.raft.Barrier(0).Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("raft barrier: %w", err)
		}
		return nil
	case <-n.fsm.stuck:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("replaying the raft log: %w", ctx.Err())
	}
}

func (n *Node) timeoutFor(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return n.timeout
}

// Apply proposes cmd, waits until it is applied, and returns its value
// with the log index it was applied at (Node is a storage.Proposer). A
// refusal by the command is a *storage.Error; a node that is not the
// leader returns ErrNotLeader (nothing was appended); any other failure to
// commit wraps ErrUnavailable, as does every command on a node halted at
// a command it does not know (Health).
func (n *Node) Apply(ctx context.Context, cmd storage.Command) (storage.Applied, error) {
	data, err := storage.Encode(cmd)
	if err != nil {
		return storage.Applied{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Applied{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := n.fsm.haltedErr(); err != nil {
		return storage.Applied{}, fmt.Errorf("%w: %s: halted: %w", ErrUnavailable, cmd.Op(), err)
	}
	select {
	case <-n.stopped:
		return storage.Applied{}, fmt.Errorf("%w: %s: node stopped", ErrUnavailable, cmd.Op())
	default:
	}
	wait := n.timeoutFor(ctx)
	start := time.Now()
	f := n.raft.Apply(data, wait)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err = <-done:
	case <-n.stopped:
		// raft may have queued the entry just as it shut down; its future
		// then never resolves, so do not wait for it.
		return storage.Applied{}, fmt.Errorf("%w: %s: node stopped", ErrUnavailable, cmd.Op())
	case <-n.fsm.stuck:
		select {
		case err = <-done:
		default:
			// Proposed before the halt, committed or not: this node will
			// not apply it, or not answer for it, before it is upgraded.
			return storage.Applied{}, fmt.Errorf("%w: %s: halted: %w", ErrUnavailable, cmd.Op(), n.fsm.haltedErr())
		}
	case <-timer.C:
		return storage.Applied{}, fmt.Errorf("%w: %s: not committed within %v", ErrUnavailable, cmd.Op(), wait)
	case <-ctx.Done():
		// The entry may still commit; the caller reports a temporary
		// failure and its retry is the client's (SMTP and IMAP are
		// at-least-once here). The goroutine ends when the future does,
		// or stays parked on a future that raft dropped at shutdown.
		return storage.Applied{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, cmd.Op(), ctx.Err())
	}
	if errors.Is(err, raft.ErrNotLeader) {
		return storage.Applied{}, fmt.Errorf("%s: %w", cmd.Op(), ErrNotLeader)
	}
	if err != nil {
		return storage.Applied{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, cmd.Op(), err)
	}
	n.latency.record(time.Since(start))
	res, ok := f.Response().(storage.Result)
	if !ok {
		return storage.Applied{}, fmt.Errorf("%w: %s: no result", ErrUnavailable, cmd.Op())
	}
	if res.Err != nil && !isRefusal(res.Err) {
		return storage.Applied{}, fmt.Errorf("%w: %s: %w", ErrUnavailable, cmd.Op(), res.Err)
	}
	return storage.Applied{Index: f.Index(), Value: res.Value}, res.Err
}

func isRefusal(err error) bool {
	var e *storage.Error
	return errors.As(err, &e)
}

// IsLeader reports whether this node leads the cluster (and so runs the
// leader-only jobs).
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderCh delivers true when this node becomes leader and false when it
// stops being leader.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Stats is raft's view of the node, for status pages.
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// LogSize is how large raft.db is and how many of its bytes are in use
// (the rest are free pages), for status pages. After a snapshot's
// truncation the file is compacted when most of it is free.
func (n *Node) LogSize() (file, used int64, err error) { return n.logStore.Size() }

// Snapshot takes a snapshot now (tests and `sigillo backup`).
func (n *Node) Snapshot() error {
	if n.policy == nil {
		return fmt.Errorf("snapshot: %w: node not open", ErrUnavailable)
	}
	return n.policy.snapshot("asked")
}

// Close stops raft and closes the log. It does not close the store. A
// snapshot being written is abandoned (the previous one stays), and a
// batch being applied is rolled back, to be replayed at the next start.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.stopped)
		n.health.stop()
		n.fsm.halt()
		if n.policy != nil {
			n.policy.halt()
		}
		if e := n.raft.Shutdown().Error(); e != nil {
			err = fmt.Errorf("raft shutdown: %w", e)
		}
		if n.policy != nil {
			n.policy.wait()
		}
		if c, ok := n.transport.(io.Closer); ok {
			c.Close()
		}
		if e := n.logStore.Close(); e != nil && err == nil {
			err = fmt.Errorf("close raft log: %w", e)
		}
	})
	return err
}

// catchUpFromSnapshot restores the newest snapshot into a database that is
// behind it, and returns the snapshot's index (0: none).
func catchUpFromSnapshot(ctx context.Context, snaps *raft.FileSnapshotStore, store *storage.Store, logStore *logstore.Store,
	logger *slog.Logger) (uint64, error) {
	list, err := snaps.List()
	if err != nil {
		return 0, fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 {
		return 0, nil
	}
	applied, err := store.AppliedIndex(ctx)
	if err != nil {
		return 0, err
	}
	newest := list[0]
	if applied >= newest.Index {
		return newest.Index, nil
	}
	if dbIndex, ok := snapshotDatabaseIndex(logStore, newest.Index); ok && applied >= dbIndex {
		return newest.Index, nil
	}
	logger.Warn("database is behind the newest snapshot: restoring it", "applied", applied, "snapshot", newest.Index,
		"snapshot_mib", newest.Size>>20)
	start := time.Now()
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return 0, fmt.Errorf("open snapshot %s: %w", newest.ID, err)
	}
	defer rc.Close()
	if err := restoreFrom(ctx, store, rc); err != nil {
		return 0, err
	}
	logger.Info("database restored from the snapshot", "snapshot", newest.Index, "took", time.Since(start).Round(time.Millisecond))
	return newest.Index, nil
}

// slogWriter lets hclog write through slog, at the level raft gave.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(trimNewline(p))
	level := slog.LevelWarn
	// hclog writes "<time> [LEVEL] raft: message: key=value".
	for marker, l := range map[string]slog.Level{"[ERROR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelInfo, "[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug} {
		if i := strings.Index(line, marker); i >= 0 {
			level = l
			line = strings.TrimSpace(line[i+len(marker):])
			break
		}
	}
	// A lone node always starts with an election: nothing to warn about.
	if strings.Contains(line, "heartbeat timeout reached, starting election") {
		level = slog.LevelInfo
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
