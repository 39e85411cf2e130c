package broker

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts mosquitto in its own process group (terminal signals to
// the gateway do not reach it) and kills it if the gateway process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// raiseFileLimit lifts the started broker's open-file limit to the hard
// limit: a child gets the soft limit the gateway started with (often
// 1,024, less than MaxConnections and the database need), not the one the
// Go runtime raised for itself.
func raiseFileLimit(pid int) error {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
		return err
	}
	lim := unix.Rlimit{Cur: own.Max, Max: own.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return fmt.Errorf("raising the open-file limit of pid %d to %d: %w", pid, own.Max, err)
	}
	return nil
}

// searchable reports whether a process of uid and gid may pass through
// dir.
func searchable(dir string, uid, gid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	m := st.Mode().Perm()
	switch {
	case int(sys.Uid) == uid:
		m &= 0o100
	case int(sys.Gid) == gid:
		m &= 0o010
	default:
		m &= 0o001
	}
	if m == 0 {
		return fmt.Errorf("%s (mode %v, owner uid %d gid %d) cannot be passed through", dir, st.Mode().Perm(), sys.Uid, sys.Gid)
	}
	return nil
}
