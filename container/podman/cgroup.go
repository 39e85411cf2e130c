package podman

import (
	"path/filepath"

	"github.com/edgekit/edgekit/internal/cgroupmem"
)

// cgroupRoot is where this host mounts its cgroups.
const cgroupRoot = "/sys/fs/cgroup"

// oomKills reads how many processes the kernel's OOM killer has killed in
// a container's cgroup (its path as podman reports it), under cgroup v2 or
// v1's memory controller. ok is false when it cannot be read: a service on
// another host, a cgroup already removed, a kernel without the counter.
func oomKills(root, cgroupPath string) (n uint64, ok bool) {
	if cgroupPath == "" {
		return 0, false
	}
	for _, dir := range []string{filepath.Join(root, cgroupPath), filepath.Join(root, "memory", cgroupPath)} {
		if n, ok := cgroupmem.OOMKills(dir); ok {
			return n, true
		}
	}
	return 0, false
}
