package podman

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// cgroupRoot is where this host mounts its cgroups.
const cgroupRoot = "/sys/fs/cgroup"

// oomKills reads how many processes the kernel's OOM killer has killed in
// a container's cgroup (its path as podman reports it), from cgroup v2's
// memory.events or v1's memory.oom_control. ok is false when neither can
// be read: a service on another host, a cgroup already removed, a kernel
// without the counter.
func oomKills(root, cgroupPath string) (n uint64, ok bool) {
	if cgroupPath == "" {
		return 0, false
	}
	for _, f := range []string{
		filepath.Join(root, cgroupPath, "memory.events"),
		filepath.Join(root, "memory", cgroupPath, "memory.oom_control"),
	} {
		if data, err := os.ReadFile(f); err == nil {
			if n, ok := parseOOMKill(data); ok {
				return n, true
			}
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
			return n, err == nil
		}
	}
	return 0, false
}
