// Command cgroup2guest is init of the virtual machine TestMemoryLimitCgroup2
// boots: a Linux with the unified cgroup hierarchy and its memory
// controller, which the machines the tests run on bind to cgroup v1. It
// runs a function host with the default memory limiter and checks that it
// picks cgroup2, that a function allocating past its limit is killed and
// reported as out of memory, that another function keeps answering, and
// that a child an instance started in a session of its own is killed with
// it (cgroup.kill).
// The native test function is /bin/fn.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/vmtest/guest"
	"github.com/edgekit/edgekit/invoke"
)

func main() {
	guest.Setup()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := function.New(&function.Options{Logger: slog.New(slog.NewTextHandler(os.Stdout, nil))})
	if err != nil {
		guest.Fail("function.New: %v", err)
	}
	spec := func(name, behaviour string) function.Spec {
		return function.Spec{Name: name, Version: "1", Runtime: function.RuntimeExecutable, API: function.APINative,
			Handler: "fn", CodeDir: "/bin", MemoryLimitMB: 64, Env: map[string]string{"TEST_BEHAVIOUR": behaviour}}
	}
	for _, s := range []function.Spec{spec("leaky", "leak"), spec("healthy", "echo")} {
		if err := h.Deploy(ctx, s); err != nil {
			guest.Fail("deploy %s: %v", s.Name, err)
		}
	}
	_, err = h.Invoke(ctx, "leaky", invoke.Request{Payload: []byte(`{}`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "Runtime.OutOfMemory" || !strings.Contains(fe.Message, "cgroup2 64 MB") {
		guest.Fail("the leaking function: %v, want a Runtime.OutOfMemory error naming cgroup2 64 MB", err)
	}
	st, _ := h.Status("leaky")
	if st.MemoryLimit != "cgroup2 64 MB" {
		guest.Fail("Status.MemoryLimit %q, want cgroup2 64 MB", st.MemoryLimit)
	}
	if _, err := h.Invoke(ctx, "healthy", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		guest.Fail("the healthy function after the leak: %v", err)
	}
	if err := h.Deploy(ctx, spec("escapes", "setsid")); err != nil {
		guest.Fail("deploy escapes: %v", err)
	}
	if st, _ := h.Status("escapes"); st.ProcessLimit != "cgroup2 256" {
		guest.Fail("Status.ProcessLimit %q, want cgroup2 256", st.ProcessLimit)
	}
	resp, err := h.Invoke(ctx, "escapes", invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		guest.Fail("the function that starts a child: %v", err)
	}
	child, _ := strconv.Atoi(string(resp.Payload))
	if child <= 0 || !running(child) {
		guest.Fail("no running child: %q", resp.Payload)
	}
	if err := h.Remove(ctx, "escapes"); err != nil {
		guest.Fail("Remove: %v", err)
	}
	if running(child) {
		guest.Fail("the child %d in a session of its own outlived its instance", child)
	}
	if err := h.Close(ctx); err != nil {
		guest.Fail("Close: %v", err)
	}
	if entries, _ := os.ReadDir("/sys/fs/cgroup"); hasHostCgroup(entries) {
		guest.Fail("the host's cgroup is left after Close")
	}
	guest.Pass("out-of-memory kill under cgroup2 reported: %s", fe.Message)
}

func hasHostCgroup(entries []os.DirEntry) bool {
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "edgekit-") {
			return true
		}
	}
	return false
}

// running reports whether pid runs (a zombie does not).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
