package function

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgekit/edgekit/internal/safefile"
)

// A host with a data directory of its own keeps its id there, so that the
// cgroups a host killed with SIGKILL left (and any process in them that
// outlived it: one that escaped its process group, a child that was not
// its instance's direct one) are found and killed by the next host on the
// same directory. A lock keeps a second host off the directory meanwhile.

var hostIDRE = regexp.MustCompile(`^[0-9a-f]{8}$`)

// claimDataDir locks dir for this host and returns the host id kept there
// (made on the first start), and the lock to release at Close.
func claimDataDir(dir string) (id string, lock *os.File, err error) {
	lock, err = os.OpenFile(filepath.Join(dir, "host.lock"), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("function: data directory lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return "", nil, fmt.Errorf("function: %s is in use by another function host: %w", dir, err)
	}
	path := filepath.Join(dir, "host-id")
	b, err := safefile.ReadOwn(path, 64)
	if id = strings.TrimSpace(string(b)); err == nil && hostIDRE.MatchString(id) {
		return id, lock, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		lock.Close()
		return "", nil, fmt.Errorf("function: the host id: %w", err)
	}
	id = newHostID()
	if err := safefile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		lock.Close()
		return "", nil, fmt.Errorf("function: the host id: %w", err)
	}
	return id, lock, nil
}

func newHostID() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// reapLeftovers kills what a previous host with this id left in its
// cgroups and removes their directories; it returns how many processes
// it killed.
func (m *memoryLimiter) reapLeftovers() int {
	killed := 0
	for _, root := range []string{m.root, m.pidsRoot} {
		if root == "" {
			continue
		}
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join(root, e.Name())
			for range 200 {
				pids := cgroupProcs(dir)
				if len(pids) == 0 {
					break
				}
				_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644) // v2; v1 has none
				for _, pid := range pids {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						killed++
					}
				}
				time.Sleep(5 * time.Millisecond) // killed processes leave the cgroup asynchronously
			}
			removeCgroup(dir)
		}
	}
	return killed
}
