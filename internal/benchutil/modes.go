package benchutil

import (
	"os/exec"
	"syscall"
	"testing"
)

// Modes runs body as two sub-benchmarks, one per mode of the machine:
// "idle", with the other cores left as they are, and "busy", with a
// process spinning beside it. On a virtual machine whose idle cores halt,
// waking a sleeping thread or process costs tens of microseconds more in
// idle mode than when every core is running (see docs/PERFORMANCE.md), so
// each figure is reported in both.
func Modes(b *testing.B, body func(b *testing.B)) {
	b.Run("idle", body)
	b.Run("busy", func(b *testing.B) {
		stop := Spin(b)
		defer stop()
		body(b)
	})
}

// Spin starts a process that keeps one core busy until stop is called (or
// the benchmark ends).
func Spin(b *testing.B) (stop func()) {
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the spinner: %v", err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	b.Cleanup(stop)
	return stop
}
