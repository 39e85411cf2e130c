// Package testenv holds the one rule for tests that need a real component
// (Mosquitto, node, python3, root): under CI (CI set) a missing component
// fails the test, because CI must run every real-component test; elsewhere
// the test is skipped, saying why.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Missing reports a missing real component: a failure under CI, a skip
// elsewhere.
func Missing(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%v: CI must run every real-component test (run `make test` as root to install it)", err)
	}
	t.Skipf("%v; skipping outside CI (run `make test` as root to install it)", err)
}

// Tool requires an executable in PATH.
func Tool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Missing(t, fmt.Errorf("%s is not installed: %w", name, err))
	}
}

// Root requires the test to run as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Getuid() != 0 {
		Missing(t, fmt.Errorf("not running as root, which %s needs", why))
	}
}

// Eventually waits up to 10 s for cond, failing the test naming what it
// waited for.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, what, 10*time.Second, cond)
}

// ProcessGone reports whether process pid has ended (it is gone, or a
// zombie or dead in /proc).
func ProcessGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// Await waits up to within for cond and reports whether it came, without
// failing: for a test that acts at a moment (kills a process when a step
// begins) and goes on either way.
func Await(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// EventuallyWithin is Eventually with a bound of its own, for a step that
// is slow by nature (a whole gateway starting, with Mosquitto and its
// functions, on a loaded machine): the bound only says when to give up.
func EventuallyWithin(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	if !Await(within, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Buffer is a bytes.Buffer safe for a writer and a reader on different
// goroutines (a program's output read by its test while it runs).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Reset forgets what was written.
func (s *Buffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

// String returns what was written.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
