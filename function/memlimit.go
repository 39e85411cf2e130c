package function

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgekit/edgekit/internal/cgroupmem"
)

// MemoryLimiter names how out-of-process instances are held to
// Spec.MemoryLimitMB.
type MemoryLimiter string

// Memory limiters.
const (
	// MemoryAuto picks the first that works here: cgroup2, cgroup1,
	// rlimit-data.
	MemoryAuto MemoryLimiter = ""
	// MemoryCgroup2 puts each instance in its own cgroup of the unified
	// hierarchy (v2), under the host's cgroup or Options.CgroupParent:
	// memory.max limits resident memory, swap is refused, and an
	// out-of-memory kill is reported as such. The process starts inside
	// its cgroup (clone3 CLONE_INTO_CGROUP): nothing it allocates escapes.
	MemoryCgroup2 MemoryLimiter = "cgroup2"
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
	root string // cgroups: the host's directory, one subdirectory per instance
	// How processes are bounded and tracked (procs.go): the pids
	// controller in root's instance cgroups (v2), or the host's directory
	// in the v1 pids hierarchy.
	pidsV2   bool
	pidsRoot string
}

// newMemoryLimiter resolves want ("" for auto) on this machine. parent is
// Options.CgroupParent. A cgroup mechanism that cannot be used is an error
// when asked for by name; auto then tries the next, and notes why in
// skipped.
func newMemoryLimiter(want MemoryLimiter, hostID, parent string) (m *memoryLimiter, skipped []error, err error) {
	defer func() {
		if err == nil {
			m.setupPids("edgekit-" + hostID)
		}
	}()
	try := func(kind MemoryLimiter, setup func(string) (string, error)) bool {
		root, e := setup("edgekit-" + hostID)
		if e == nil {
			m = &memoryLimiter{kind: kind, root: root}
			return true
		}
		e = fmt.Errorf("function: memory limiter %s: %w", kind, e)
		if want == kind {
			err = e
			return true
		}
		skipped = append(skipped, e)
		return false
	}
	switch want {
	case MemoryNone, MemoryRlimitAS, MemoryRlimitData:
		return &memoryLimiter{kind: want}, nil, nil
	case MemoryCgroup2:
		try(MemoryCgroup2, func(name string) (string, error) { return setupCgroup2(parent, name) })
	case MemoryCgroup1:
		try(MemoryCgroup1, setupCgroup1)
	case MemoryAuto:
		if !try(MemoryCgroup2, func(name string) (string, error) { return setupCgroup2(parent, name) }) &&
			!try(MemoryCgroup1, setupCgroup1) {
			m = &memoryLimiter{kind: MemoryRlimitData}
		}
	default:
		return nil, nil, fmt.Errorf("function: unknown memory limiter %q (want cgroup2, cgroup1, rlimit-data, rlimit-as or none)", want)
	}
	return m, skipped, err
}

func setupCgroup1(name string) (string, error) {
	root := filepath.Join(cgroup1Memory, name)
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cannot create %s: %w", root, err)
	}
	return root, nil
}

// errNoCgroup2Memory: the unified hierarchy is absent, or its memory
// controller is bound to a v1 hierarchy or not handed down to the host.
var errNoCgroup2Memory = errors.New("no cgroup v2 memory controller available")

// setupCgroup2 makes the host's cgroup under parent (default: the host's
// own cgroup) with the memory controller enabled for its children.
func setupCgroup2(parent, name string) (string, error) {
	if parent == "" {
		mount, err := cgroup2Mount()
		if err != nil {
			return "", err
		}
		own, err := ownCgroup2()
		if err != nil {
			return "", err
		}
		parent = filepath.Join(mount, own)
	}
	controllers, err := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoCgroup2Memory, err)
	}
	if !slices.Contains(strings.Fields(string(controllers)), "memory") {
		return "", fmt.Errorf("%w in %s (controllers: %q)", errNoCgroup2Memory, parent, strings.TrimSpace(string(controllers)))
	}
	if err := enableController(parent, "memory"); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			// The no-internal-processes rule: a cgroup that holds
			// processes (the host's own, unless it is the root) cannot
			// hand controllers to children.
			return "", fmt.Errorf("%w; %s holds processes: give the host a delegated cgroup without processes of its own (Options.CgroupParent)", err, parent)
		}
		return "", err
	}
	root := filepath.Join(parent, name)
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cannot create %s: %w", root, err)
	}
	if err := enableController(root, "memory"); err != nil {
		_ = os.Remove(root)
		return "", err
	}
	return root, nil
}

// cgroup2Mount finds where the unified hierarchy is mounted.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoCgroup2Memory, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && len(fields) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return fields[4], nil
		}
	}
	return "", fmt.Errorf("%w: cgroup2 is not mounted", errNoCgroup2Memory)
}

// ownCgroup2 is the host's cgroup in the unified hierarchy.
func ownCgroup2() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoCgroup2Memory, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path, nil
		}
	}
	return "", fmt.Errorf("%w: the host is in no cgroup v2", errNoCgroup2Memory)
}

// limit is one instance's limit: made by prepare before its process
// starts, completed by enter once it runs.
type limit struct {
	kind     MemoryLimiter
	bytes    int64
	dir      string   // cgroups
	fd       *os.File // cgroup2: the directory the process starts in, until enter
	pidsDir  string   // the v1 pids cgroup (procs.go)
	maxProcs int
}

// prepare makes instance's limits of mb megabytes and maxProcs processes;
// under cgroup2 it sets attr so that the process starts in its cgroup.
func (m *memoryLimiter) prepare(instance string, mb, maxProcs int, attr *syscall.SysProcAttr) (*limit, error) {
	l := &limit{kind: m.kind, bytes: int64(mb) << 20}
	fail := func(err error) (*limit, error) {
		l.release()
		return nil, err
	}
	if m.root != "" {
		l.dir = filepath.Join(m.root, instance)
		if err := os.Mkdir(l.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("memory cgroup %s: %w", l.dir, err)
		}
	}
	if err := m.preparePids(l, instance, maxProcs); err != nil {
		return fail(err)
	}
	switch m.kind {
	case MemoryCgroup2:
		if err := writeCgroup(l.dir, "memory.max", l.bytes); err != nil {
			return fail(err)
		}
		// Without swap accounting the file is absent, and RAM is what
		// counts.
		_ = writeCgroup(l.dir, "memory.swap.max", 0)
		fd, err := os.Open(l.dir)
		if err != nil {
			return fail(fmt.Errorf("memory cgroup %s: %w", l.dir, err))
		}
		l.fd = fd
		attr.UseCgroupFD, attr.CgroupFD = true, int(fd.Fd())
	case MemoryCgroup1:
		if err := writeCgroup(l.dir, "memory.limit_in_bytes", l.bytes); err != nil {
			return fail(err)
		}
		// Limit swap too where swap accounting is on; without it the
		// file is absent or refuses the write, and RAM is what counts.
		_ = writeCgroup(l.dir, "memory.memsw.limit_in_bytes", l.bytes)
	}
	return l, nil
}

// enter applies the limits to the started process pid, which runs as uid.
func (l *limit) enter(pid, uid int) error {
	if err := l.enterPids(pid, uid); err != nil {
		return err
	}
	switch l.kind {
	case MemoryCgroup2:
		l.closeFD() // the process started inside the cgroup
	case MemoryCgroup1:
		return writeCgroup(l.dir, "cgroup.procs", int64(pid))
	case MemoryRlimitAS, MemoryRlimitData:
		resource, name := unix.RLIMIT_AS, "RLIMIT_AS"
		if l.kind == MemoryRlimitData {
			resource, name = unix.RLIMIT_DATA, "RLIMIT_DATA"
		}
		lim := &unix.Rlimit{Cur: uint64(l.bytes), Max: uint64(l.bytes)}
		if err := unix.Prlimit(pid, resource, lim, nil); err != nil {
			return fmt.Errorf("%s on pid %d: %w", name, pid, err)
		}
	}
	return nil
}

func (l *limit) closeFD() {
	if l.fd != nil {
		l.fd.Close()
		l.fd = nil
	}
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
	if l == nil || l.dir == "" {
		return false
	}
	n, _ := cgroupmem.OOMKills(l.dir)
	return n > 0
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
	if l == nil {
		return
	}
	l.closeFD()
	for _, dir := range l.procDirs() {
		removeCgroup(dir)
	}
}

// removeCgroup removes an instance's cgroup once its processes are gone.
func removeCgroup(dir string) {
	for range 50 {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond) // killed processes leave the cgroup asynchronously
	}
}

// close removes the host's cgroup directory, and any instance cgroup
// whose processes were still leaving when their instance stopped.
func (m *memoryLimiter) close() {
	for _, root := range []string{m.root, m.pidsRoot} {
		if root != "" {
			removeCgroupTree(root)
		}
	}
}

// removeCgroupTree removes a host cgroup and the instance cgroups in it.
func removeCgroupTree(root string) {
	for range 100 {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if e.IsDir() {
				_ = os.Remove(filepath.Join(root, e.Name()))
			}
		}
		if err := os.Remove(root); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
