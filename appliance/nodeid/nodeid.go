// Package nodeid gives this node its name in the cluster: the raft server
// ID and the owner of the locks it takes in the replicated store. The name
// is chosen once, kept in the data directory's node-id file, and never
// changes afterwards, whatever the host name (several nodes behind one MX
// share theirs).
//
// It does not check that the name is unique in a cluster (the cluster's
// join does), nor does it rename a node.
package nodeid

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// FileName is the file of the data directory that holds the node's ID.
const FileName = "node-id"

// Legacy is the ID of a data directory made before node IDs were chosen:
// its raft configuration names the one server "node1".
const Legacy = "node1"

var valid = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Check tells whether id can name a node: 1 to 64 letters, digits, '.',
// '_' or '-', starting with a letter or digit.
func Check(id string) error {
	if !valid.MatchString(id) {
		return fmt.Errorf("node id %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// New returns a fresh random ID: "n-" and 8 base32 characters (40 bits).
func New() (string, error) {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	return "n-" + strings.ToLower(base32.StdEncoding.EncodeToString(b)), nil
}

// Load returns the ID of the node whose data directory is dataDir, and
// writes it there the first time:
//   - the ID in dataDir's node-id file, if there is one; configured, when
//     set, must be the same (a raft log cannot change its server's name);
//   - else configured, when set;
//   - else Legacy, when raftDir already holds raft state (a data directory
//     from before node IDs, whose cluster knows its server as "node1");
//   - else a new random ID.
func Load(dataDir, raftDir, configured string) (string, error) {
	if configured != "" {
		if err := Check(configured); err != nil {
			return "", err
		}
	}
	path := filepath.Join(dataDir, FileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(b))
		if err := Check(id); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if configured != "" && configured != id {
			return "", fmt.Errorf("[cluster] node_id is %q but the data directory %s belongs to node %q (%s): a node cannot be renamed", configured, dataDir, id, path)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("node id: %w", err)
	}

	id := configured
	if HasRaftState(raftDir) {
		if id != "" && id != Legacy {
			return "", fmt.Errorf("[cluster] node_id is %q but the data directory %s was made before node IDs and its raft log names this node %q: leave node_id out or set it to %q", id, dataDir, Legacy, Legacy)
		}
		id = Legacy
	}
	if id == "" {
		if id, err = New(); err != nil {
			return "", err
		}
	}
	if err := write(path, id); err != nil {
		return "", err
	}
	return id, nil
}

// HasRaftState tells whether raftDir holds a raft log or a snapshot.
func HasRaftState(raftDir string) bool {
	if fi, err := os.Stat(filepath.Join(raftDir, "raft.db")); err == nil && fi.Size() > 0 {
		return true
	}
	snaps, _ := os.ReadDir(filepath.Join(raftDir, "snapshots"))
	return len(snaps) > 0
}

// write puts id in path atomically (a crash leaves no half-written ID).
func write(path, id string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), FileName+".tmp*")
	if err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(id + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("node id: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("node id: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("node id: %w", err)
	}
	return nil
}
