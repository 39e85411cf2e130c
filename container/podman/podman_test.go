package podman_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/containertest"
	"github.com/edgekit/edgekit/container/podman"
	"github.com/edgekit/edgekit/internal/podmantest"
	"github.com/edgekit/edgekit/internal/registrytest"
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
// after a kill from outside; a new Manager adopts it, and after a reboot
// (the container stopped) a new Manager starts the same container again.
func TestManagerOnPodman(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	opts := &container.ManagerOptions{RestartMin: 50 * time.Millisecond, RestartMax: time.Second}
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
	if err := m2.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "adopted", func() bool { return status(m2).State == container.AppRunning })
	if status(m2).ContainerID != id {
		t.Errorf("adopted %s, want %s", status(m2).ContainerID, id)
	}
	if err := m2.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A gateway reboot: nothing restarts the container but the manager.
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	m3 := container.NewManager(rt, opts)
	defer m3.Close(ctx)
	if err := m3.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the stopped container started", func() bool {
		c, err := rt.Inspect(ctx, id)
		return err == nil && c.State == container.Running && status(m3).State == container.AppRunning
	})
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 || status(m3).ContainerID != id {
		t.Errorf("after the reboot: %d containers, status %+v", len(list), status(m3))
	}
}

// TestManagerFaultsOnPodman: on real podman, a crashing app is restarted
// with growing delays; an app that allocates past its memory limit is
// reported as OOM; an upgrade that never becomes healthy is rolled back;
// removal leaves no container with the manager's labels.
func TestManagerFaultsOnPodman(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	var mu sync.Mutex
	var delays []time.Duration // the backoff chosen before each restart
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: 2 * time.Second,
		OnChange: func(s container.AppStatus) {
			if s.Name != "crasher" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch s.State {
			case container.AppBackoff, container.AppCrashLoop:
				delays = append(delays, s.RestartDelay)
			}
		}})
	defer m.Close(ctx)
	spec := func(env map[string]string) container.Spec {
		return container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none", Env: env, StopGrace: time.Second}
	}
	web := container.App{Name: "web", Version: "1", Spec: spec(nil), Probation: 2 * time.Second}
	crasher := container.App{Name: "crasher", Version: "1", Spec: spec(map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "4", "EDGEKIT_TEST_AFTER": "10ms"})}
	hog := container.App{Name: "hog", Version: "1", Restart: container.Never,
		Spec: spec(map[string]string{"EDGEKIT_TEST_MODE": "alloc", "EDGEKIT_TEST_MB": "256"})}
	hog.Spec.Resources.MemoryBytes = 32 << 20
	if err := m.Apply(ctx, []container.App{web, crasher, hog}); err != nil {
		t.Fatal(err)
	}
	find := func(name string) container.AppStatus {
		for _, s := range m.Status() {
			if s.Name == name {
				return s
			}
		}
		return container.AppStatus{}
	}
	testenv.Eventually(t, "web running", func() bool { return find("web").State == container.AppRunning })
	testenv.Eventually(t, "four restarts of the crasher", func() bool { return find("crasher").Restarts >= 4 })
	if s := find("crasher"); s.LastExitCode != 4 {
		t.Errorf("crasher: %+v", s)
	}
	mu.Lock()
	// The backoff doubles: 100, 200, 400 ms, each ±20%.
	if n := len(delays); n < 3 {
		t.Errorf("%d restarts seen", n)
	} else if first, third := delays[0], delays[2]; third < 2*first {
		t.Errorf("restart delays did not grow: %v then %v", first, third)
	}
	mu.Unlock()
	testenv.Eventually(t, "the hog's OOM kill", func() bool { s := find("hog"); return s.State == container.AppExited })
	if s := find("hog"); !s.OOMKilled || s.LastExitCode != 137 {
		t.Errorf("hog: %+v, want an OOM kill", s)
	}

	bad := web
	bad.Version, bad.Spec = "2", spec(map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "1", "EDGEKIT_TEST_AFTER": "50ms"})
	if err := m.Apply(ctx, []container.App{bad, crasher, hog}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the rollback", func() bool { return find("web").RolledBack != "" })
	if s := find("web"); s.Version != "1" || !strings.Contains(s.RolledBack, "version 2") {
		t.Errorf("after the rollback: %+v", s)
	}
	testenv.Eventually(t, "web serving again", func() bool { return find("web").State == container.AppRunning })

	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "no labelled container left", func() bool {
		list, err := rt.List(ctx, map[string]string{container.LabelApp: "web"})
		all, _ := rt.List(ctx, nil)
		n := 0
		for _, c := range all {
			if c.Labels[container.LabelApp] != "" {
				n++
			}
		}
		return err == nil && len(list) == 0 && n == 0
	})
}

// TestOOMKillCounted: a process in an app's container killed by the OOM
// killer, while the container lives on, is counted from the cgroup.
func TestOOMKillCounted(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	changes := make(chan container.AppStatus, 64)
	m := container.NewManager(rt, &container.ManagerOptions{Poll: 100 * time.Millisecond, OnChange: func(s container.AppStatus) {
		select {
		case changes <- s:
		default:
		}
	}})
	defer m.Close(ctx)
	app := container.App{Name: "parent", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none", StopGrace: time.Second,
		Env:       map[string]string{"EDGEKIT_TEST_MODE": "alloc-child", "EDGEKIT_TEST_MB": "256"},
		Resources: container.Resources{MemoryBytes: 32 << 20}}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "an OOM kill counted", func() bool { return m.Status()[0].OOMKills > 0 })
	if s := m.Status()[0]; s.State != container.AppRunning || s.Restarts != 0 || s.OOMKilled {
		t.Errorf("the container should live on: %+v", s)
	}
	var told bool
	for len(changes) > 0 {
		told = told || (<-changes).OOMKills > 0
	}
	if !told {
		t.Error("the OOM kill was not told through OnChange")
	}
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// TestServiceRestart: the podman service stops and comes back while an app
// runs: the container keeps running, the manager picks up where it was,
// and nothing is duplicated or restarted. An app applied while the service
// is down fails saying so, and runs once it is back, with no new Apply.
func TestServiceRestart(t *testing.T) {
	svc, rt := setup(t)
	ctx := context.Background()
	m := container.NewManager(rt, &container.ManagerOptions{Poll: 200 * time.Millisecond})
	defer m.Close(ctx)
	app := container.App{Name: "web", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none"}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return m.Status()[0].State == container.AppRunning })
	id := m.Status()[0].ContainerID
	before, _ := rt.Inspect(ctx, id)

	svc.Stop()
	worker := container.App{Name: "worker", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none"}}
	if err := m.Apply(ctx, []container.App{app, worker}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the worker failing", func() bool { return m.Status()[1].State == container.AppFailed })
	if s := m.Status()[1]; !strings.Contains(s.LastError, container.ErrUnavailable.Error()) {
		t.Errorf("the worker's error does not say the runtime is unavailable: %+v", s)
	}
	time.Sleep(time.Second) // the manager's Wait breaks; its polls fail
	svc.Restart(t)
	testenv.Eventually(t, "the worker running once the service is back", func() bool { return m.Status()[1].State == container.AppRunning })

	time.Sleep(time.Second)
	after, err := rt.Inspect(ctx, id)
	if err != nil || after.State != container.Running || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("the container across the service restart: %+v (%v), started %v before", after, err, before.StartedAt)
	}
	s := m.Status()[0]
	if s.State != container.AppRunning || s.Restarts != 0 || s.ContainerID != id {
		t.Errorf("status after the service restart: %+v", s)
	}
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 {
		t.Errorf("%d containers for the app", len(list))
	}
	// The manager still supervises: a kill is noticed (Wait again, or the
	// poll) and handled.
	if err := rt.Kill(ctx, id, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "restarted after the kill", func() bool { s := m.Status()[0]; return s.Restarts == 1 && s.State == container.AppRunning })
}

// TestBadInput: an unreachable socket, a malformed image reference and a
// missing image are refused naming the problem.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := podman.Connect(ctx, "unix:///nonexistent/podman.sock"); !errors.Is(err, container.ErrUnavailable) || !strings.Contains(err.Error(), "/nonexistent/podman.sock") {
		t.Errorf("unreachable socket: %v", err)
	}
	svc := podmantest.Start(t)
	rt, err := podman.Connect(ctx, svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Create(ctx, container.Spec{Name: "x", Image: "localhost/Not A Ref!"}); err == nil || !strings.Contains(err.Error(), "Not A Ref!") {
		t.Errorf("malformed reference: %v", err)
	}
	if _, err := rt.Create(ctx, container.Spec{Name: "y", Image: "localhost/edgekit-missing:1"}); !errors.Is(err, container.ErrImageNotFound) {
		t.Errorf("missing image: %v", err)
	}
	if err := rt.PullImage(ctx, "127.0.0.1:1/edgekit/none:1", nil); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1/edgekit/none:1") {
		t.Errorf("pull from an unreachable registry: %v", err)
	}
}

// TestPortTakenOnPodman: an app whose host port another process holds is
// failed naming the port, and runs once the port is free, with no new
// Apply.
func TestPortTakenOnPodman(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 50 * time.Millisecond, RestartMax: 200 * time.Millisecond})
	defer m.Close(ctx)
	app := container.App{Name: "web", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, StopGrace: time.Second,
		Ports: []container.Port{{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 8080}}}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the failure", func() bool { return m.Status()[0].State == container.AppFailed })
	if s := m.Status()[0]; !strings.Contains(s.LastError, "127.0.0.1:"+strconv.Itoa(port)) || !strings.Contains(s.LastError, container.ErrPortInUse.Error()) {
		t.Errorf("the error does not name the port: %+v", s)
	}
	l.Close()
	testenv.Eventually(t, "running once the port is free", func() bool { return m.Status()[0].State == container.AppRunning })
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// TestPullCredentials: pulls from a registry on loopback that asks for
// credentials: wrong ones (and none) are refused as ErrUnauthorized naming
// the image; the Manager keeps retrying an app whose credentials are
// wrong, and runs it once they are right.
func TestPullCredentials(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	reg := registrytest.Start(t, "edge", "s3cret")
	image := reg.Add("edgekit/app", "1", podmantest.TestProgramTar(t), []string{"/testprog"})
	for _, opts := range []*container.PullOptions{{SkipTLSVerify: true}, {Username: "edge", Password: "wrong", SkipTLSVerify: true}} {
		if err := rt.PullImage(ctx, image, opts); !errors.Is(err, container.ErrUnauthorized) || !strings.Contains(err.Error(), image) {
			t.Errorf("pull as %q: %v, want ErrUnauthorized naming %s", opts.Username, err, image)
		}
	}

	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: 400 * time.Millisecond})
	defer m.Close(ctx)
	app := container.App{Name: "pulled", Version: "1", Spec: container.Spec{Image: image, NetworkMode: "none", StopGrace: time.Second},
		Pull: &container.PullOptions{Username: "edge", Password: "wrong", SkipTLSVerify: true}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the failure", func() bool { return m.Status()[0].State == container.AppFailed })
	if s := m.Status()[0]; !strings.Contains(s.LastError, container.ErrUnauthorized.Error()) || !strings.Contains(s.LastError, image) {
		t.Errorf("the error does not say unauthorized for the image: %+v", s)
	}
	denied := reg.Denied()
	testenv.Eventually(t, "a retry", func() bool { return reg.Denied() > denied })
	app.Pull.Password = "s3cret"
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running once the credentials are right", func() bool { return m.Status()[0].State == container.AppRunning })
	if ok, err := rt.ImageExists(ctx, image); !ok || err != nil {
		t.Errorf("the pulled image: %v %v", ok, err)
	}
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// TestHTTPProbeOnPodman: an app's HTTP probe reaches the program in its
// container through a published port: healthy while it serves, unhealthy
// once its server is gone (SIGSTOP from outside), healthy again after.
func TestHTTPProbeOnPodman(t *testing.T) {
	_, rt := setup(t)
	ctx := context.Background()
	port := freePort(t)
	m := container.NewManager(rt, nil)
	defer m.Close(ctx)
	app := container.App{Name: "web", Version: "1", Spec: container.Spec{Image: ref, Command: []string{"/testprog"}, StopGrace: time.Second,
		Env:   map[string]string{"EDGEKIT_TEST_HTTP": ":8080"},
		Ports: []container.Port{{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 8080}}},
		Health: &container.Probe{HTTP: "http://127.0.0.1:" + strconv.Itoa(port) + "/health", Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond, Retries: 2}}
	if err := m.Apply(ctx, []container.App{app}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "healthy", func() bool {
		s := m.Status()[0]
		return s.State == container.AppRunning && s.Health == container.HealthHealthy
	})
	id := m.Status()[0].ContainerID
	if err := rt.Kill(ctx, id, "SIGSTOP"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "unhealthy while stopped", func() bool { return m.Status()[0].Health == container.HealthUnhealthy })
	if err := rt.Kill(ctx, id, "SIGCONT"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "healthy again", func() bool { return m.Status()[0].State == container.AppRunning })
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ref is the test program's image, which setup imports.
const ref = "localhost/edgekit-testprog:1"

// setup starts a private podman service with the test program's image and
// connects to it.
func setup(t testing.TB) (*podmantest.Service, *podman.Runtime) {
	t.Helper()
	svc := podmantest.Start(t)
	rt, err := podman.Connect(context.Background(), svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.ImportImage(context.Background(), ref, bytes.NewReader(podmantest.TestProgramTar(t))); err != nil {
		t.Fatal(err)
	}
	return svc, rt
}
