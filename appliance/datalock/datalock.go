// Package datalock keeps a data directory to one `sigillo serve`: the
// server holds an exclusive flock on the file "lock" in the directory,
// which names its pid. The kernel drops the lock when the process ends,
// however it ends, so a file left behind never blocks the next start.
//
// It is not a lock for readers: commands that read the database file of a
// stopped server take no lock, and a server starting meanwhile is not kept
// waiting by them.
package datalock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FileName is the lock file's name in the data directory.
const FileName = "lock"

// Lock is a held data directory.
type Lock struct {
	f *os.File
}

// HeldError says that another process holds the directory.
type HeldError struct {
	Dir string
	PID int // 0 when the holder has not written it (yet)
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("data directory %s is in use by process %d (another sigillo serve): stop it first", e.Dir, e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by another process (another sigillo serve): stop it first", e.Dir)
}

// Acquire takes dir's lock without waiting: it fails at once with a
// *HeldError when another process has it.
func Acquire(dir string) (*Lock, error) {
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Dir: dir, PID: holder(f)}
		}
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// holder reads the pid the lock's holder wrote. A holder that has just
// taken the lock writes it a moment later: wait a little for it.
func holder(f *os.File) int {
	for range 10 {
		buf := make([]byte, 32)
		n, _ := f.ReadAt(buf, 0)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n]))); err == nil && pid > 0 {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// Release gives the directory up. The file stays: removing it would let
// a process that opened it just before lock a file nobody else sees.
func (l *Lock) Release() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("data directory lock: %w", err)
	}
	return nil
}
