//go:build !linux

package broker

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// raiseFileLimit leaves the limit as it is where prlimit is missing.
func raiseFileLimit(int) error { return nil }
