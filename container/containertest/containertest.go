// Package containertest is the conformance suite for container.Runtime
// implementations: images (presence, import, list, remove), the container
// lifecycle, stop with a grace period, exit codes, a host port already
// taken, listing by label, renaming, the sentinel errors, and (as the
// runtime declares them) exec, stats and events. A backend's test calls Run with a Harness.
//
// The containers run the test program (the image the harness provides),
// whose mode comes from its environment: EDGEKIT_TEST_MODE "serve" (the
// default), "exit" (EDGEKIT_TEST_CODE after EDGEKIT_TEST_AFTER) or
// "ignore-term".
package containertest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
)

// Harness says how to test a runtime.
type Harness struct {
	// Runtime returns the runtime under test, cleaned up when t ends.
	Runtime func(t *testing.T) container.Runtime
	// Image makes the test program's image available in rt and returns
	// its reference.
	Image func(t *testing.T, rt container.Runtime) string
	// Command runs the test program in the image (nil: the image's own
	// entrypoint); exec runs it with "echo ARGS".
	Command []string
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	rt := h.Runtime(t)
	img := h.Image(t, rt)
	ctx := context.Background()
	info, err := rt.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	suffix := time.Now().Format("150405.000000")
	name := func(n string) string { return "ct-" + n + "-" + strings.ReplaceAll(suffix, ".", "") }
	create := func(t *testing.T, n string, env map[string]string) string {
		t.Helper()
		id, err := rt.Create(ctx, container.Spec{Name: name(n), Image: img, Command: h.Command, Env: env, Labels: map[string]string{"edgekit.test": suffix, "case": n},
			NetworkMode: "none", StopGrace: time.Second})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		t.Cleanup(func() { _ = rt.Remove(context.Background(), id, true) })
		return id
	}

	t.Run("Images", func(t *testing.T) {
		if ok, err := rt.ImageExists(ctx, img); err != nil || !ok {
			t.Errorf("ImageExists(%s): %v %v", img, ok, err)
		}
		if ok, err := rt.ImageExists(ctx, "localhost/edgekit-no-such-image:0"); err != nil || ok {
			t.Errorf("ImageExists of a missing image: %v %v", ok, err)
		}
		if _, err := rt.Create(ctx, container.Spec{Name: name("noimage"), Image: "localhost/edgekit-no-such-image:0"}); !errors.Is(err, container.ErrImageNotFound) {
			t.Errorf("Create from a missing image: %v, want ErrImageNotFound", err)
		}
		if err := rt.RemoveImage(ctx, "localhost/edgekit-no-such-image:0"); !errors.Is(err, container.ErrImageNotFound) {
			t.Errorf("RemoveImage of a missing image: %v, want ErrImageNotFound", err)
		}

		// An image imported, listed and removed; one in use stays.
		var scratch bytes.Buffer
		tw := tar.NewWriter(&scratch)
		_ = tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: 3, ModTime: time.Now()})
		_, _ = tw.Write([]byte("hi\n"))
		_ = tw.Close()
		ref := "localhost/edgekit-ct-scratch:" + strings.ReplaceAll(suffix, ".", "")
		if err := rt.ImportImage(ctx, ref, &scratch); err != nil {
			t.Fatalf("ImportImage: %v", err)
		}
		listed := func(ref string) bool {
			list, err := rt.ListImages(ctx)
			if err != nil {
				t.Fatalf("ListImages: %v", err)
			}
			return slices.ContainsFunc(list, func(i container.Image) bool { return slices.Contains(i.Names, ref) })
		}
		if !listed(ref) || !listed(img) {
			t.Errorf("ListImages lacks %s or %s", ref, img)
		}
		if err := rt.RemoveImage(ctx, ref); err != nil {
			t.Fatalf("RemoveImage: %v", err)
		}
		if ok, err := rt.ImageExists(ctx, ref); err != nil || ok || listed(ref) {
			t.Errorf("after RemoveImage: exists %v (%v), listed %v", ok, err, listed(ref))
		}
		create(t, "user", nil)
		if err := rt.RemoveImage(ctx, img); err == nil {
			t.Error("RemoveImage of an image a container uses succeeded")
		}
		if ok, _ := rt.ImageExists(ctx, img); !ok {
			t.Error("the image in use was removed")
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		id := create(t, "life", nil)
		if c, err := rt.Inspect(ctx, id); err != nil || c.State != container.Created || c.Labels["case"] != "life" {
			t.Fatalf("after Create: %+v %v", c, err)
		}
		if err := rt.Start(ctx, id); err != nil {
			t.Fatalf("Start: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := rt.Wait(wctx, id, container.WaitRunning); err != nil {
			t.Fatalf("Wait running: %v", err)
		}
		if c, _ := rt.Inspect(ctx, name("life")); c.State != container.Running || c.ID == "" {
			t.Errorf("inspect by name: %+v", c)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var logs bytes.Buffer
			if err := rt.Logs(ctx, id, container.LogOptions{}, &logs); err != nil {
				t.Fatalf("Logs: %v", err)
			}
			if strings.Contains(logs.String(), "started") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("logs %q lack the program's first line", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := rt.Remove(ctx, id, false); err == nil {
			t.Error("removing a running container without force succeeded")
		}
		if err := rt.Stop(ctx, id, 5*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if code, err := rt.Wait(wctx, id, container.WaitExited); err != nil || code != 0 {
			t.Errorf("after Stop: exit %d, %v", code, err)
		}
		if err := rt.Remove(ctx, id, false); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		if _, err := rt.Inspect(ctx, id); !errors.Is(err, container.ErrNotFound) {
			t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
		}
	})

	t.Run("ExitCode", func(t *testing.T) {
		id := create(t, "exit", map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "3", "EDGEKIT_TEST_AFTER": "100ms"})
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if code, err := rt.Wait(wctx, id, container.WaitExited); err != nil || code != 3 {
			t.Errorf("exit %d, %v; want 3", code, err)
		}
		if c, _ := rt.Inspect(ctx, id); c.State != container.Exited || c.ExitCode != 3 {
			t.Errorf("inspect after exit: %+v", c)
		}
	})

	t.Run("PortInUse", func(t *testing.T) {
		// A host port another process holds: Start fails naming it, and
		// succeeds once the port is free.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		id, err := rt.Create(ctx, container.Spec{Name: name("port"), Image: img, Command: h.Command, Labels: map[string]string{"edgekit.test": suffix},
			Ports: []container.Port{{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 8080}}, StopGrace: time.Second})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		t.Cleanup(func() { _ = rt.Remove(context.Background(), id, true) })
		err = rt.Start(ctx, id)
		if !errors.Is(err, container.ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
			t.Fatalf("Start with the host port taken: %v, want ErrPortInUse naming port %d", err, port)
		}
		l.Close()
		if err := rt.Start(ctx, id); err != nil {
			t.Fatalf("Start once the port is free: %v", err)
		}
		if err := rt.Stop(ctx, id, time.Second); err != nil {
			t.Fatal(err)
		}
		// The port is free again after the stop.
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Errorf("the port after Stop: %v", err)
		} else {
			l2.Close()
		}
	})

	t.Run("StopGrace", func(t *testing.T) {
		id := create(t, "stubborn", map[string]string{"EDGEKIT_TEST_MODE": "ignore-term"})
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := rt.Wait(wctx, id, container.WaitRunning); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the program has set up its signal handling
		start := time.Now()
		if err := rt.Stop(ctx, id, 500*time.Millisecond); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("a program that ignores SIGTERM stopped after %v, before its grace", took)
		}
		if c, _ := rt.Inspect(ctx, id); c.State != container.Exited || c.ExitCode != 137 {
			t.Errorf("after the kill: %+v, want exited with 137", c)
		}
	})

	t.Run("NamesAndLabels", func(t *testing.T) {
		a := create(t, "a", nil)
		create(t, "b", nil)
		if _, err := rt.Create(ctx, container.Spec{Name: name("a"), Image: img, Command: h.Command, NetworkMode: "none"}); !errors.Is(err, container.ErrNameInUse) {
			t.Errorf("a second container named %s: %v, want ErrNameInUse", name("a"), err)
		}
		got, err := rt.List(ctx, map[string]string{"edgekit.test": suffix, "case": "a"})
		if err != nil || len(got) != 1 || got[0].Name != name("a") {
			t.Errorf("List by label: %+v %v", got, err)
		}
		if err := rt.Rename(ctx, a, name("a-old")); err != nil {
			t.Fatalf("Rename: %v", err)
		}
		if c, err := rt.Inspect(ctx, name("a-old")); err != nil || c.ID != a {
			t.Errorf("inspect by the new name: %+v %v", c, err)
		}
		if err := rt.Rename(ctx, a, name("b")); !errors.Is(err, container.ErrNameInUse) {
			t.Errorf("rename onto a taken name: %v, want ErrNameInUse", err)
		}
		if err := rt.Start(ctx, "edgekit-no-such-container"); !errors.Is(err, container.ErrNotFound) {
			t.Errorf("Start of a missing container: %v, want ErrNotFound", err)
		}
	})

	t.Run("Capabilities", func(t *testing.T) {
		var events <-chan container.Event
		ectx, cancel := context.WithCancel(ctx)
		defer cancel()
		if info.Capabilities.Events {
			var err error
			if events, err = rt.Events(ectx, map[string]string{"edgekit.test": suffix, "case": "caps"}); err != nil {
				t.Fatalf("Events: %v", err)
			}
		}
		id := create(t, "caps", nil)
		if err := rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		if _, err := rt.Wait(wctx, id, container.WaitRunning); err != nil {
			t.Fatal(err)
		}
		if info.Capabilities.Exec {
			res, err := rt.Exec(ctx, id, append(slices.Clone(h.Command), "echo", "hello"))
			if err != nil || res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != "hello" {
				t.Errorf("Exec echo: %+v %v", res, err)
			}
			// Execs (health probes) run while the runtime serves other
			// calls (a Wait in flight, inspections): each answers as alone.
			wait, stopWait := context.WithCancel(ctx)
			var waiting sync.WaitGroup
			waiting.Go(func() { _, _ = rt.Wait(wait, id, container.WaitExited) })
			var execs sync.WaitGroup
			for i := range 3 {
				execs.Go(func() {
					for j := range 5 {
						word := fmt.Sprintf("e%d-%d", i, j)
						res, err := rt.Exec(ctx, id, append(slices.Clone(h.Command), "echo", word))
						if err != nil || strings.TrimSpace(string(res.Stdout)) != word {
							t.Errorf("Exec alongside other calls: %+v %v, want %s", res, err, word)
						}
						if _, err := rt.Inspect(ctx, id); err != nil {
							t.Errorf("Inspect alongside Exec: %v", err)
						}
					}
				})
			}
			execs.Wait()
			stopWait()
			waiting.Wait()
		}
		if info.Capabilities.Stats {
			if _, err := rt.Stats(ctx, id); err != nil {
				t.Errorf("Stats: %v", err)
			}
		}
		if err := rt.Kill(ctx, id, "SIGKILL"); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if code, err := rt.Wait(wctx, id, container.WaitExited); err != nil || code != 137 {
			t.Errorf("after SIGKILL: exit %d, %v", code, err)
		}
		if err := rt.Kill(ctx, id, "SIGKILL"); !errors.Is(err, container.ErrNotRunning) {
			t.Errorf("Kill of an exited container: %v, want ErrNotRunning", err)
		}
		if events == nil {
			return
		}
		seen := map[string]bool{}
		timeout := time.After(20 * time.Second)
		for !seen["start"] || !seen["die"] {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatal("the event stream ended")
				}
				seen[ev.Action] = true
				if ev.Action == "die" && ev.ExitCode != 137 {
					t.Errorf("die event with exit code %d, want 137", ev.ExitCode)
				}
			case <-timeout:
				t.Fatalf("events seen: %v; want start and die", seen)
			}
		}
		// The stream ends with its context, even unread.
		cancel()
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
			case <-timeout:
				t.Fatal("the event stream did not end with its context")
			}
		}
	})
}
