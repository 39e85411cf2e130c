package broker

import "syscall"

// sysProcAttr puts mosquitto in its own process group (terminal signals to
// the gateway do not reach it) and kills it if the gateway process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
