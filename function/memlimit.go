package function

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MemoryLimiter names how out-of-process instances are held to
// Spec.MemoryLimitMB.
type MemoryLimiter string

// Memory limiters.
const (
	// MemoryAuto picks the cgroup v1 memory controller when the host may
	// write it, else RLIMIT_DATA.
	MemoryAuto MemoryLimiter = ""
	// MemoryCgroup1 puts each instance in its own memory cgroup (v1):
	// resident memory is limited and an out-of-memory kill is reported as
	// such.
	MemoryCgroup1 MemoryLimiter = "cgroup1"
	// MemoryRlimitAS limits each instance's address space (RLIMIT_AS):
	// allocations past it fail inside the function. Runtimes that reserve
	// much virtual memory at start (Node.js's V8) need a limit well above
	// their real use.
	MemoryRlimitAS MemoryLimiter = "rlimit-as"
	// MemoryRlimitData limits each instance's data segment (RLIMIT_DATA,
	// Linux ≥ 4.7: private writable memory, not reserved address space):
	// allocations past it fail inside the function. Go and Node.js start
	// under it, which they do not under RLIMIT_AS at function-sized
	// limits.
	MemoryRlimitData MemoryLimiter = "rlimit-data"
	// MemoryNone applies no limit.
	MemoryNone MemoryLimiter = "none"
)

const cgroup1Memory = "/sys/fs/cgroup/memory"

// memoryLimiter applies the chosen mechanism to instance processes.
type memoryLimiter struct {
	kind MemoryLimiter
	root string // cgroup1: the host's directory under the memory hierarchy
}

// newMemoryLimiter resolves want ("" for auto) on this machine.
func newMemoryLimiter(want MemoryLimiter, hostID string) (*memoryLimiter, error) {
	switch want {
	case MemoryNone, MemoryRlimitAS, MemoryRlimitData:
		return &memoryLimiter{kind: want}, nil
	case MemoryAuto, MemoryCgroup1:
		root := filepath.Join(cgroup1Memory, "edgekit-"+hostID)
		err := os.Mkdir(root, 0o755)
		if err == nil || errors.Is(err, os.ErrExist) {
			return &memoryLimiter{kind: MemoryCgroup1, root: root}, nil
		}
		if want == MemoryCgroup1 {
			return nil, fmt.Errorf("function: memory limiter cgroup1: cannot create %s: %w", root, err)
		}
		return &memoryLimiter{kind: MemoryRlimitData}, nil
	default:
		return nil, fmt.Errorf("function: unknown memory limiter %q (want cgroup1, rlimit-data, rlimit-as or none)", want)
	}
}

// limit is one instance's applied limit.
type limit struct {
	kind  MemoryLimiter
	bytes int64
	dir   string // cgroup1
}

// apply limits the running process pid to mb megabytes.
func (m *memoryLimiter) apply(pid int, instance string, mb int) (*limit, error) {
	l := &limit{kind: m.kind, bytes: int64(mb) << 20}
	switch m.kind {
	case MemoryCgroup1:
		l.dir = filepath.Join(m.root, instance)
		if err := os.Mkdir(l.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("memory cgroup %s: %w", l.dir, err)
		}
		if err := writeCgroup(l.dir, "memory.limit_in_bytes", l.bytes); err != nil {
			return nil, err
		}
		// Limit swap too where swap accounting is on; without it the
		// file is absent or refuses the write, and RAM is what counts.
		_ = writeCgroup(l.dir, "memory.memsw.limit_in_bytes", l.bytes)
		if err := writeCgroup(l.dir, "cgroup.procs", int64(pid)); err != nil {
			return nil, err
		}
	case MemoryRlimitAS, MemoryRlimitData:
		resource, name := unix.RLIMIT_AS, "RLIMIT_AS"
		if m.kind == MemoryRlimitData {
			resource, name = unix.RLIMIT_DATA, "RLIMIT_DATA"
		}
		lim := &unix.Rlimit{Cur: uint64(l.bytes), Max: uint64(l.bytes)}
		if err := unix.Prlimit(pid, resource, lim, nil); err != nil {
			return nil, fmt.Errorf("%s on pid %d: %w", name, pid, err)
		}
	}
	return l, nil
}

func writeCgroup(dir, file string, v int64) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(v, 10)), 0o644); err != nil {
		return fmt.Errorf("memory cgroup %s: %w", file, err)
	}
	return nil
}

// oomKilled reports whether the kernel killed something in the instance's
// cgroup for exceeding its limit.
func (l *limit) oomKilled() bool {
	if l == nil || l.kind != MemoryCgroup1 {
		return false
	}
	b, err := os.ReadFile(filepath.Join(l.dir, "memory.oom_control"))
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok && v != "0" {
			return true
		}
	}
	return false
}

// String says which limit is in force, for Status.
func (l *limit) String() string {
	if l == nil || l.kind == MemoryNone {
		return "none"
	}
	return fmt.Sprintf("%s %d MB", l.kind, l.bytes>>20)
}

// release removes the instance's cgroup once its processes are gone.
func (l *limit) release() {
	if l == nil || l.dir == "" {
		return
	}
	for range 50 {
		if err := os.Remove(l.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond) // killed processes leave the cgroup asynchronously
	}
}

// close removes the host's cgroup directory.
func (m *memoryLimiter) close() {
	if m.root != "" {
		_ = os.Remove(m.root)
	}
}
