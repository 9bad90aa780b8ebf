package raftfsm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// mapDropper returns a function that drops the resident pages of every
// mapping of the file path in this process (bolt's read-only, shared map of
// raft.db) with madvise(MADV_DONTNEED). For a shared file mapping that only
// unmaps the pages from the process: their data stays in the file and the
// page cache, and the next read maps them again. The caller must make sure
// the mapping is not replaced meanwhile (bolt remaps only inside a write).
func mapDropper(path string) func() error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real // /proc/self/maps names the file without symlinks
	}
	return func() error {
		ranges, err := mappingsOf(abs)
		if err != nil {
			return err
		}
		for _, r := range ranges {
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], syscall.MADV_DONTNEED); errno != 0 {
				return fmt.Errorf("madvise %s: %w", abs, errno)
			}
		}
		return nil
	}
}

// mappingsOf lists the [start, end) address ranges of this process's
// mappings of the file abs, from /proc/self/maps.
func mappingsOf(abs string) ([][2]uintptr, error) {
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	return parseMaps(data, abs), nil
}

// parseMaps reads lines "start-end perms offset dev inode pathname" and
// keeps those of pathname abs.
func parseMaps(data []byte, abs string) [][2]uintptr {
	var out [][2]uintptr
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != abs {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, [2]uintptr{uintptr(start), uintptr(end)})
	}
	return out
}
