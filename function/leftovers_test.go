package function_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// killedHost is the child of TestLeftoversOfAKilledHost: a host on the
// data directory dir whose function starts a child in a session of its
// own, then waits to be killed.
func killedHost(dir string) {
	binDir = os.Getenv("EDGEKIT_BIN_DIR")
	h, err := function.New(&function.Options{DataDir: dir})
	if err != nil {
		fmt.Println("host:", err)
		os.Exit(1)
	}
	s := lambdaSpec("escapes", "event")
	if err := h.Deploy(context.Background(), s); err != nil {
		fmt.Println("deploy:", err)
		os.Exit(1)
	}
	pidFile := filepath.Join(dir, "escaped.pid")
	if _, err := h.InvokeAsync(context.Background(), s.Name, invoke.Request{Payload: fmt.Appendf(nil, `{"do":"setsid-hang","pidfile":%q}`, pidFile)}); err != nil {
		fmt.Println("invoke:", err)
		os.Exit(1)
	}
	for {
		if b, err := os.ReadFile(pidFile); err == nil && len(b) > 0 {
			fmt.Println("ready", strings.TrimSpace(string(b)))
			break
		}
	}
	select {} // until killed
}

// TestLeftoversOfAKilledHost: a host killed with SIGKILL leaves a
// function's escaped child behind; the next host on the same data
// directory kills it before it starts. While a host holds the directory,
// another is refused.
func TestLeftoversOfAKilledHost(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGEKIT_KILLED_HOST="+dir, "EDGEKIT_BIN_DIR="+binDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the host said %q", lines.Text())
	}
	var escaped int
	fmt.Sscan(strings.TrimPrefix(lines.Text(), "ready "), &escaped)
	if _, err := function.New(&function.Options{DataDir: dir}); err == nil || !strings.Contains(err.Error(), "in use by another function host") {
		t.Errorf("a second host on a directory in use: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if testenv.ProcessGone(escaped) {
		t.Fatal("the escaped child died with the host: nothing to test")
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", escaped)); !strings.Contains(string(b), "edgekit-") {
		testenv.Missing(t, fmt.Errorf("no cgroup here follows an instance's processes (the escaped child is in %q)", b))
	}
	newHost(t, &function.Options{DataDir: dir})
	testenv.Eventually(t, "the escaped child of the killed host killed", func() bool { return testenv.ProcessGone(escaped) })
}
