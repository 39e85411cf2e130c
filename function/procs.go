package function

import (
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
)

// Every process an instance makes is the instance's: a child that leaves
// the process group (setsid, a double fork) is still found and killed
// through the instance's cgroup, and the number of processes and threads is
// bounded (Spec.MaxProcesses). Where the host has
//
//   - cgroup v2 (the memory limiter is cgroup2): the instance's cgroup
//     gets pids.max when the pids controller can be handed down, and
//     cgroup.kill ends everything in it (Linux ≥ 5.14; before that, every
//     pid in cgroup.procs is killed until none is left);
//   - cgroup v1: a cgroup of the pids hierarchy per instance
//     (/sys/fs/cgroup/pids/edgekit-<host>/<instance>) with pids.max, the
//     process moved in right after it starts, as for the v1 memory
//     cgroup; every pid in it, and in the memory cgroup, is killed;
//   - no cgroup: RLIMIT_NPROC bounds an instance that runs as a uid of its
//     own (the limit counts the uid's processes, so it cannot serve an
//     instance that shares the host's uid), and only the process group is
//     killed: a child that calls setsid escapes. Status says which.

const cgroup1Pids = "/sys/fs/cgroup/pids"

// setupPids finds how instances' processes are bounded and tracked here,
// and sets m.pidsV2 or m.pidsRoot. It never fails: without a pids cgroup
// the host falls back as the comment above says.
func (m *memoryLimiter) setupPids(name string) {
	if m.kind == MemoryCgroup2 && m.root != "" {
		parent := filepath.Dir(m.root)
		if hasController(parent, "pids") && enableController(parent, "pids") == nil && enableController(m.root, "pids") == nil {
			m.pidsV2 = true
		}
		return
	}
	if _, err := os.Stat(filepath.Join(cgroup1Pids, "cgroup.procs")); err != nil {
		return
	}
	root := filepath.Join(cgroup1Pids, name)
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	m.pidsRoot = root
}

// processLimit says how spec's instances' processes are bounded, for
// Status.
func (m *memoryLimiter) processLimit(spec Spec) string {
	switch {
	case m.pidsV2:
		return fmt.Sprintf("cgroup2 %d", spec.MaxProcesses)
	case m.pidsRoot != "":
		return fmt.Sprintf("cgroup1 %d", spec.MaxProcesses)
	case spec.User != nil && ownUID(int(spec.User.UID)):
		return fmt.Sprintf("rlimit-nproc %d", spec.MaxProcesses)
	default:
		return "process group"
	}
}

func hasController(dir, name string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	return err == nil && slices.Contains(strings.Fields(string(b)), name)
}

// enableController hands the controller to dir's children.
func enableController(dir, name string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err == nil && slices.Contains(strings.Fields(string(b)), name) {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+name), 0o644); err != nil {
		return fmt.Errorf("enabling the %s controller below %s: %w", name, dir, err)
	}
	return nil
}

// preparePids bounds the instance's processes before it starts; l.dir is
// made already where there is one.
func (m *memoryLimiter) preparePids(l *limit, instance string, maxProcs int) error {
	l.maxProcs = maxProcs
	switch {
	case m.pidsV2:
		return writeCgroup(l.dir, "pids.max", int64(maxProcs))
	case m.pidsRoot != "":
		dir := filepath.Join(m.pidsRoot, instance)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pids cgroup %s: %w", dir, err)
		}
		l.pidsDir = dir
		return writeCgroup(dir, "pids.max", int64(maxProcs))
	}
	return nil
}

// enterPids applies the bound to the started process pid, which runs as
// uid.
func (l *limit) enterPids(pid int, uid int) error {
	switch {
	case l.pidsDir != "":
		return writeCgroup(l.pidsDir, "cgroup.procs", int64(pid))
	case l.kind == MemoryCgroup2 && l.dir != "":
		return nil // started inside its cgroup
	case ownUID(uid) && l.maxProcs > 0:
		lim := &unix.Rlimit{Cur: uint64(l.maxProcs), Max: uint64(l.maxProcs)}
		if err := unix.Prlimit(pid, unix.RLIMIT_NPROC, lim, nil); err != nil {
			return fmt.Errorf("RLIMIT_NPROC on pid %d: %w", pid, err)
		}
	}
	return nil
}

// ownUID reports whether uid is one RLIMIT_NPROC can bound an instance by:
// neither the host's (it counts the host's processes too) nor root's (the
// limit does not hold it).
func ownUID(uid int) bool { return uid != os.Getuid() && uid != 0 }

// procDirs are the cgroups that list the instance's processes.
func (l *limit) procDirs() []string {
	var dirs []string
	if l.pidsDir != "" {
		dirs = append(dirs, l.pidsDir)
	}
	if l.dir != "" {
		dirs = append(dirs, l.dir)
	}
	return dirs
}

// signalAll sends SIGKILL once to every process in the instance's
// cgroups; it reports whether it found any. It does not wait.
func (l *limit) signalAll() bool {
	if l == nil {
		return false
	}
	if l.kind == MemoryCgroup2 && l.dir != "" && os.WriteFile(filepath.Join(l.dir, "cgroup.kill"), []byte("1"), 0o644) == nil {
		return cgroupPopulated(l.dir)
	}
	found := false
	for _, dir := range l.procDirs() {
		for _, pid := range cgroupProcs(dir) {
			found = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return found
}

// killAll kills every process in the instance's cgroups and waits until
// none is left (a process forked meanwhile is found by the next pass), for
// at most about a second.
func (l *limit) killAll() {
	for range 200 {
		if !l.signalAll() {
			return
		}
		time.Sleep(5 * time.Millisecond) // killed processes leave the cgroup asynchronously
	}
}

func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupPopulated reads cgroup.events (v2): whether processes remain.
func cgroupPopulated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return len(cgroupProcs(dir)) > 0
	}
	return strings.Contains(string(b), "populated 1")
}
