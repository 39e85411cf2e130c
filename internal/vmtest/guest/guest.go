// Package guest is the init side of package vmtest: a guest program calls
// Setup first, and ends with Pass or Fail, which print the result line
// vmtest.Result reads and power the machine off.
package guest

import (
	"fmt"
	"os"
	"syscall"
)

// ResultPrefix starts the line that carries the guest's result.
const ResultPrefix = "VMTEST-RESULT: "

// Setup mounts what a program expects: /proc, /sys, /dev, a /tmp in
// memory, and the unified cgroup hierarchy at /sys/fs/cgroup.
func Setup() {
	for _, m := range []struct{ fstype, target string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/tmp"},
		{"cgroup2", "/sys/fs/cgroup"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			Fail("mkdir %s: %v", m.target, err)
		}
		if err := syscall.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil && err != syscall.EBUSY {
			Fail("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
	os.Setenv("TMPDIR", "/tmp")
	os.Setenv("PATH", "/bin")
}

// Pass reports success and powers off.
func Pass(format string, args ...any) { end("PASS", format, args...) }

// Fail reports failure and powers off.
func Fail(format string, args ...any) { end("FAIL", format, args...) }

func end(verdict, format string, args ...any) {
	fmt.Printf("\n%s%s %s\n", ResultPrefix, verdict, fmt.Sprintf(format, args...))
	os.Stdout.Sync()
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {} // init must not exit
}
