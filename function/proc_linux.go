package function

import "syscall"

// processGroupAttr puts an instance in its own process group, so that a
// timeout or stop ends its children too, and kills it if the host dies.
func processGroupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
