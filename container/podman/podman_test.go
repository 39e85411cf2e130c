package podman_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/containertest"
	"github.com/edgekit/edgekit/container/podman"
	"github.com/edgekit/edgekit/container/podman/internal/podmantest"
	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/internal/testenv"
)

// TestConformance runs containertest against a real podman service.
func TestConformance(t *testing.T) {
	svc := podmantest.Start(t)
	rootfs := podmantest.TestProgramTar(t)
	containertest.Run(t, containertest.Harness{
		Runtime: func(t *testing.T) container.Runtime {
			rt, err := podman.Connect(context.Background(), svc.URL)
			if err != nil {
				t.Fatal(err)
			}
			return rt
		},
		Image: func(t *testing.T, rt container.Runtime) string {
			const ref = "localhost/edgekit-testprog:1"
			if err := rt.ImportImage(context.Background(), ref, bytes.NewReader(rootfs)); err != nil {
				t.Fatal(err)
			}
			return ref
		},
		Command: []string{"/testprog"},
	})
}

// TestManagerOnPodman: the Manager runs an app on podman, restarts it
// after a kill from outside, and a new Manager adopts it.
func TestManagerOnPodman(t *testing.T) {
	svc := podmantest.Start(t)
	ctx := context.Background()
	rt, err := podman.Connect(ctx, svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "localhost/edgekit-testprog:1"
	if err := rt.ImportImage(ctx, ref, bytes.NewReader(podmantest.TestProgramTar(t))); err != nil {
		t.Fatal(err)
	}
	opts := &container.ManagerOptions{Backoff: backoff.Policy{Min: 50 * time.Millisecond, Max: time.Second}}
	m := container.NewManager(rt, opts)
	app := container.App{Name: "web", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none", StopGrace: time.Second}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	status := func(m *container.Manager) container.AppStatus { return m.Status()[0] }
	testenv.Eventually(t, "running", func() bool { return status(m).State == container.AppRunning })
	id := status(m).ContainerID
	if err := rt.Kill(ctx, id, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "restarted after the kill", func() bool { s := status(m); return s.Restarts == 1 && s.State == container.AppRunning })
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m2 := container.NewManager(rt, opts)
	defer m2.Close(ctx)
	if err := m2.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "adopted", func() bool { return status(m2).State == container.AppRunning })
	if status(m2).ContainerID != id {
		t.Errorf("adopted %s, want %s", status(m2).ContainerID, id)
	}
}
