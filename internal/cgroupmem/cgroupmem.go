// Package cgroupmem reads the kernel's memory cgroup counters, which the
// function host (its instances' cgroups) and the podman backend (its
// containers' cgroups) both look at.
package cgroupmem

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// OOMKills reads how many processes the OOM killer has killed in the
// memory cgroup dir, from memory.events (cgroup v2) or memory.oom_control
// (v1), whichever it holds. ok is false when neither can be read: no such
// cgroup (removed, another host's), or a kernel without the counter.
func OOMKills(dir string) (n uint64, ok bool) {
	for _, file := range []string{"memory.events", "memory.oom_control"} {
		if data, err := os.ReadFile(filepath.Join(dir, file)); err == nil {
			return parseOOMKill(data)
		}
	}
	return 0, false
}

// parseOOMKill finds the "oom_kill N" line of a cgroup memory file.
func parseOOMKill(data []byte) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, found := bytes.Cut(sc.Bytes(), []byte{' '})
		if found && string(key) == "oom_kill" {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64)
			if err != nil { // ParseUint gives the maximum on overflow
				return 0, false
			}
			return n, true
		}
	}
	return 0, false
}
