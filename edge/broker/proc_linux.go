package broker

import (
	"fmt"
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
