package container_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/container/memruntime"
	"github.com/edgekit/edgekit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const image = "localhost/edgekit-test:1"

func newRuntime(t *testing.T) *memruntime.Runtime {
	t.Helper()
	rt := memruntimeFor(t)
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	return rt
}

// memruntimeFor is an in-memory runtime holding the test image.
func memruntimeFor(t testing.TB) *memruntime.Runtime {
	t.Helper()
	rt := memruntime.New(nil)
	if err := rt.ImportImage(context.Background(), image, strings.NewReader("rootfs")); err != nil {
		t.Fatal(err)
	}
	return rt
}

func manager(t *testing.T, rt container.Runtime) *container.Manager {
	t.Helper()
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, RestartMax: 80 * time.Millisecond,
		Stable: time.Second, CrashLoop: 3})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func app(version string, env map[string]string) container.App {
	return container.App{Name: "web", Version: version, Spec: container.Spec{Image: image, Env: env, StopGrace: 200 * time.Millisecond},
		Probation: 300 * time.Millisecond}
}

func status(m *container.Manager, name string) container.AppStatus {
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	return container.AppStatus{}
}

// TestRunAndAdopt: an app runs; a new manager (a gateway restart) adopts
// its container instead of making another.
func TestRunAndAdopt(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	id := status(m, "web").ContainerID
	_ = m.Close(ctx)

	m2 := manager(t, rt)
	if err := m2.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "adopted", func() bool { return status(m2, "web").State == container.AppRunning })
	if got := status(m2, "web").ContainerID; got != id {
		t.Errorf("adopted %s, want %s", got, id)
	}
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 {
		t.Errorf("%d containers for the app", len(list))
	}
}

// TestRestartPolicies: always restarts with backoff and shows a crash
// loop without giving up; on-failure leaves a clean exit; a kill from
// outside is noticed.
func TestRestartPolicies(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	crash := app("1", map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "2", "EDGEKIT_TEST_AFTER": "5ms"})
	clean := crash
	clean.Name, clean.Restart = "job", container.OnFailure
	clean.Spec.Env = map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "0", "EDGEKIT_TEST_AFTER": "5ms"}
	if err := m.Apply(ctx, []container.App{crash, clean}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "crash loop", func() bool {
		s := status(m, "web")
		return s.Restarts >= 5 && (s.State == container.AppCrashLoop || s.State == container.AppExited)
	})
	if s := status(m, "web"); s.LastExitCode != 2 {
		t.Errorf("last exit %d", s.LastExitCode)
	}
	restarts := status(m, "web").Restarts
	time.Sleep(300 * time.Millisecond)
	if status(m, "web").Restarts <= restarts {
		t.Error("an always app stopped being restarted")
	}
	testenv.Eventually(t, "the job's clean exit", func() bool { return status(m, "job").State == container.AppExited })
	time.Sleep(100 * time.Millisecond)
	if s := status(m, "job"); s.Restarts != 0 || s.LastExitCode != 0 {
		t.Errorf("on-failure after exit 0: %+v", s)
	}

	// A kill from outside is handled by the policy.
	svc := app("1", nil)
	svc.Name = "svc"
	svc.Spec.Resources.MemoryBytes = 64 << 20
	if err := m.Apply(ctx, []container.App{crash, clean, svc}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "svc running", func() bool { return status(m, "svc").State == container.AppRunning })
	if err := rt.Kill(ctx, status(m, "svc").ContainerID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "svc restarted", func() bool { s := status(m, "svc"); return s.Restarts == 1 && s.State == container.AppRunning })
	if s := status(m, "svc"); s.LastExitCode != 137 || !s.OOMKilled {
		t.Errorf("a 137 exit with a memory limit: %+v, want OOMKilled", s)
	}
}

// TestUpgradeAndRollback: a healthy new version replaces the old one; one
// that fails in its probation is rolled back, the old version running.
func TestUpgradeAndRollback(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "v1 running", func() bool { return status(m, "web").State == container.AppRunning })
	if err := m.Apply(ctx, []container.App{app("2", map[string]string{"EDGEKIT_TEST_MODE": "serve"})}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "v2 running", func() bool { s := status(m, "web"); return s.Version == "2" && s.State == container.AppRunning })
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 || list[0].Labels[container.LabelVersion] != "2" {
		t.Errorf("containers after the upgrade: %+v", list)
	}
	v2 := status(m, "web").ContainerID

	bad := app("3", map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "1", "EDGEKIT_TEST_AFTER": "10ms"})
	if err := m.Apply(ctx, []container.App{bad}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the rollback", func() bool { return status(m, "web").RolledBack != "" })
	s := status(m, "web")
	if s.Version != "2" || s.ContainerID != v2 || !strings.Contains(s.RolledBack, "version 3") {
		t.Errorf("after the rollback: %+v", s)
	}
	testenv.Eventually(t, "v2 running again", func() bool { return status(m, "web").State == container.AppRunning })
	if c, _ := rt.Inspect(ctx, v2); c.State != container.Running || c.Name != "edgekit-web" {
		t.Errorf("the old container: %+v", c)
	}
}

// TestRemoveAndBadInput: an app left out is removed; bad desired states
// are refused naming the field.
func TestRemoveAndBadInput(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "removed", func() bool {
		list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"})
		return len(list) == 0
	})
	for _, tc := range []struct {
		apps []container.App
		says string
	}{
		{[]container.App{{Name: "", Spec: container.Spec{Image: image}}}, "name"},
		{[]container.App{{Name: "a"}}, "spec.image"},
		{[]container.App{{Name: "a", Spec: container.Spec{Image: image}, Restart: "sometimes"}}, "restart"},
		{[]container.App{{Name: "a", Spec: container.Spec{Image: image}}, {Name: "a", Spec: container.Spec{Image: image}}}, "twice"},
	} {
		if err := m.Apply(ctx, tc.apps); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Apply %+v: %v, want an error naming %s", tc.apps, err, tc.says)
		}
	}
}

// brokenWait is a runtime whose Wait stream breaks at once, as podman's
// does when its service restarts.
type brokenWait struct{ *memruntime.Runtime }

func (brokenWait) Wait(context.Context, string, container.WaitCondition) (int, error) {
	return 0, container.ErrUnavailable
}

// eventless is a runtime without events and with a broken Wait.
type eventless struct{ brokenWait }

func (e eventless) Info(ctx context.Context) (container.Info, error) {
	info, err := e.Runtime.Info(ctx)
	info.Capabilities.Events = false
	return info, err
}

// TestPollBackstop: with no events and no working Wait, an exit is still
// seen (by the inspect poll) and the app restarted.
func TestPollBackstop(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := container.NewManager(eventless{brokenWait{rt}}, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, Poll: 20 * time.Millisecond})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	if err := rt.Kill(ctx, status(m, "web").ContainerID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "restarted", func() bool { s := status(m, "web"); return s.Restarts == 1 && s.LastExitCode == 137 })
}

// flakyEvents is a runtime with a broken Wait whose event streams end
// after a few events, as podman's do when its service restarts.
type flakyEvents struct {
	brokenWait
	opened atomic.Int64
}

func (f *flakyEvents) Events(ctx context.Context, labels map[string]string) (<-chan container.Event, error) {
	f.opened.Add(1)
	in, err := f.Runtime.Events(ctx, labels)
	if err != nil {
		return nil, err
	}
	out := make(chan container.Event)
	go func() {
		defer close(out)
		for range 3 {
			select {
			case ev, ok := <-in:
				if !ok {
					return
				}
				out <- ev
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// TestEventsNoticeExits: with no working Wait and a poll too slow to
// matter, kills from outside are noticed through the runtime's events,
// also after the event stream broke and was opened again.
func TestEventsNoticeExits(t *testing.T) {
	rt := &flakyEvents{brokenWait: brokenWait{newRuntime(t)}}
	ctx := context.Background()
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, RestartMax: 20 * time.Millisecond, Poll: time.Hour})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		testenv.Eventually(t, "running", func() bool { s := status(m, "web"); return s.State == container.AppRunning && s.Restarts == i-1 })
		if err := rt.Kill(ctx, status(m, "web").ContainerID, "SIGKILL"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "restarted", func() bool { return status(m, "web").Restarts == i })
	}
	if n := rt.opened.Load(); n < 2 {
		t.Errorf("the event stream was opened %d times; it ends every 3 events", n)
	}
}

// TestLogsStatsAndChanges: an app's logs and stats through the manager, and
// its state changes told as they happen.
func TestLogsStatsAndChanges(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	changes := make(chan container.AppStatus, 100)
	m := container.NewManager(rt, &container.ManagerOptions{OnChange: func(s container.AppStatus) { changes <- s }})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	var logs strings.Builder
	if err := m.Logs(ctx, "web", container.LogOptions{}, &logs); err != nil || !strings.Contains(logs.String(), "started") {
		t.Errorf("logs %q, %v", logs.String(), err)
	}
	if st, err := m.Stats(ctx, "web"); err != nil || st.MemoryBytes == 0 {
		t.Errorf("stats %+v, %v", st, err)
	}
	if err := m.Logs(ctx, "nope", container.LogOptions{}, &logs); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("logs of an unknown app: %v", err)
	}
	select {
	case s := <-changes:
		if s.Name != "web" {
			t.Errorf("change %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Error("no state change told")
	}
}

// TestRetriesUntilTheImageComes: an app whose image is missing is failed,
// says why, and is retried with backoff; when the image arrives it runs,
// with no new Apply.
func TestRetriesUntilTheImageComes(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	late := app("1", nil)
	late.Spec.Image = "localhost/edgekit-late:1"
	if err := m.Apply(ctx, []container.App{late}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the failure", func() bool { return status(m, "web").State == container.AppFailed })
	if s := status(m, "web"); !strings.Contains(s.LastError, "localhost/edgekit-late:1") {
		t.Errorf("the error does not name the image: %+v", s)
	}
	if err := rt.ImportImage(ctx, "localhost/edgekit-late:1", strings.NewReader("rootfs")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running once the image is there", func() bool { return status(m, "web").State == container.AppRunning })
}

// countingStarts counts Start calls.
type countingStarts struct {
	*memruntime.Runtime
	starts atomic.Int64
}

func (c *countingStarts) Start(ctx context.Context, id string) error {
	c.starts.Add(1)
	return c.Runtime.Start(ctx, id)
}

// TestRetriesUntilThePortIsFree: an app whose host port is taken is failed
// naming the port, and its start retried with backoff (not in a busy
// loop); when the port is free it runs, with no new Apply.
func TestRetriesUntilThePortIsFree(t *testing.T) {
	rt := &countingStarts{Runtime: newRuntime(t)}
	ctx := context.Background()
	m := manager(t, rt)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	web := app("1", nil)
	web.Spec.Ports = []container.Port{{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 80}}
	if err := m.Apply(ctx, []container.App{web}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the failure", func() bool { return status(m, "web").State == container.AppFailed })
	if s := status(m, "web"); !strings.Contains(s.LastError, strconv.Itoa(port)) || !strings.Contains(s.LastError, container.ErrPortInUse.Error()) {
		t.Errorf("the error does not name the port: %+v", s)
	}
	before := rt.starts.Load()
	time.Sleep(500 * time.Millisecond)
	// The backoff grows to 80 ms: about 7 tries in 500 ms; a busy loop
	// makes thousands.
	if n := rt.starts.Load() - before; n > 20 {
		t.Errorf("%d start attempts in 500 ms", n)
	}
	l.Close()
	testenv.Eventually(t, "running once the port is free", func() bool { return status(m, "web").State == container.AppRunning })
	if s := status(m, "web"); s.Restarts != 0 {
		t.Errorf("failed starts counted as restarts: %+v", s)
	}
}

// TestStartOrder: an app waits for the apps it starts after, created only
// once they run; a new manager adopts both without waiting; an unknown name
// or a cycle in the order is refused.
func TestStartOrder(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	db := app("1", nil)
	db.Name, db.Spec.Image = "db", "localhost/edgekit-late:1"
	web := app("1", nil)
	web.After = []string{"db"}
	if err := m.Apply(ctx, []container.App{web, db}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "web waiting for db", func() bool {
		return status(m, "web").State == container.AppWaiting && status(m, "db").State == container.AppFailed
	})
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 0 {
		t.Errorf("web created before db runs: %+v", list)
	}
	if err := rt.ImportImage(ctx, "localhost/edgekit-late:1", strings.NewReader("rootfs")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "both running", func() bool {
		return status(m, "web").State == container.AppRunning && status(m, "db").State == container.AppRunning
	})
	dbC, _ := rt.Inspect(ctx, status(m, "db").ContainerID)
	webC, _ := rt.Inspect(ctx, status(m, "web").ContainerID)
	if !webC.StartedAt.After(dbC.StartedAt) {
		t.Errorf("web started at %v, db at %v", webC.StartedAt, dbC.StartedAt)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}

	m2 := manager(t, rt)
	if err := m2.Apply(ctx, []container.App{web, db}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "both adopted", func() bool {
		return status(m2, "web").ContainerID == webC.ID && status(m2, "db").ContainerID == dbC.ID
	})

	for _, tc := range []struct {
		apps []container.App
		says string
	}{
		{[]container.App{{Name: "a", Spec: container.Spec{Image: image}, After: []string{"ghost"}}}, `"ghost", which is not among the apps`},
		{[]container.App{
			{Name: "a", Spec: container.Spec{Image: image}, After: []string{"b"}},
			{Name: "b", Spec: container.Spec{Image: image}, After: []string{"c"}},
			{Name: "c", Spec: container.Spec{Image: image}, After: []string{"a"}},
		}, "cycle: a -> b -> c -> a"},
		{[]container.App{{Name: "a", Spec: container.Spec{Image: image}, After: []string{"a"}}}, "cycle: a -> a"},
	} {
		if err := m2.Apply(ctx, tc.apps); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Apply %+v: %v, want an error naming %s", tc.apps, err, tc.says)
		}
	}
	if s := m2.Status(); len(s) != 2 {
		t.Errorf("a refused Apply changed the apps: %+v", s)
	}
}

// TestPullCredentials: the Manager pulls a missing image with the app's
// credentials; wrong ones leave the app failed, saying so, until an Apply
// brings the right ones.
func TestPullCredentials(t *testing.T) {
	rt := memruntime.New(map[string]memruntime.Credentials{"registry.example/app:1": {Username: "edge", Password: "s3cret"}})
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	ctx := context.Background()
	m := manager(t, rt)
	web := app("1", nil)
	web.Spec.Image = "registry.example/app:1"
	web.Pull = &container.PullOptions{Username: "edge", Password: "wrong"}
	if err := m.Apply(ctx, []container.App{web}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the failure", func() bool { return status(m, "web").State == container.AppFailed })
	if s := status(m, "web"); !strings.Contains(s.LastError, container.ErrUnauthorized.Error()) {
		t.Errorf("the error does not say unauthorized: %+v", s)
	}
	web.Pull.Password = "s3cret" // Apply copied the first credentials
	if err := m.Apply(ctx, []container.App{web}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
}

// stopOrder records the order of Stop calls, by container name.
type stopOrder struct {
	*memruntime.Runtime
	mu    sync.Mutex
	names []string
}

func (s *stopOrder) Stop(ctx context.Context, id string, grace time.Duration) error {
	c, _ := s.Inspect(ctx, id)
	s.mu.Lock()
	s.names = append(s.names, c.Name)
	s.mu.Unlock()
	return s.Runtime.Stop(ctx, id, grace)
}

// TestRemovalOrder: apps an Apply leaves out are stopped in the reverse of
// their start order.
func TestRemovalOrder(t *testing.T) {
	rt := &stopOrder{Runtime: newRuntime(t)}
	ctx := context.Background()
	m := manager(t, rt)
	db, web, cache := app("1", nil), app("1", nil), app("1", nil)
	db.Name, cache.Name = "db", "cache"
	web.After, cache.After = []string{"db"}, []string{"web", "db"}
	if err := m.Apply(ctx, []container.App{cache, db, web}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "all running", func() bool {
		return status(m, "cache").State == container.AppRunning && status(m, "web").State == container.AppRunning && status(m, "db").State == container.AppRunning
	})
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "all removed", func() bool {
		list, err := rt.List(ctx, map[string]string{})
		return err == nil && len(list) == 0
	})
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if want := []string{"edgekit-cache", "edgekit-web", "edgekit-db"}; !slices.Equal(rt.names, want) {
		t.Errorf("stopped %v, want %v", rt.names, want)
	}
}

// TestProbes: HTTP, TCP and exec probes run on the manager's schedule; an
// app is running only while healthy, unhealthy after Retries failures in a
// row, running again when its probe passes; an upgrade whose probe never
// passes is rolled back.
func TestProbes(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	var status500 atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if status500.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	probed := func(name string, p container.Probe) container.App {
		a := app("1", nil)
		a.Name, a.Probation = name, 500*time.Millisecond
		p.Interval, p.Retries = 20*time.Millisecond, 2
		a.Health = &p
		return a
	}
	web := probed("web", container.Probe{HTTP: srv.URL + "/health"})
	tcp := probed("tcp", container.Probe{TCP: l.Addr().String()})
	exec := probed("exec", container.Probe{Exec: []string{"exit", "0"}})
	broken := probed("broken", container.Probe{Exec: []string{"exit", "1"}})
	if err := m.Apply(ctx, []container.App{web, tcp, exec, broken}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "tcp", "exec"} {
		testenv.Eventually(t, name+" healthy", func() bool {
			s := status(m, name)
			return s.State == container.AppRunning && s.Health == container.HealthHealthy
		})
	}
	testenv.Eventually(t, "broken unhealthy", func() bool {
		s := status(m, "broken")
		return s.State == container.AppUnhealthy && s.Health == container.HealthUnhealthy && strings.Contains(s.LastError, "exited 1")
	})

	status500.Store(true)
	testenv.Eventually(t, "web unhealthy", func() bool { return status(m, "web").State == container.AppUnhealthy })
	if s := status(m, "web"); !strings.Contains(s.LastError, "status 500") {
		t.Errorf("web's error: %q", s.LastError)
	}
	status500.Store(false)
	testenv.Eventually(t, "web healthy again", func() bool { return status(m, "web").State == container.AppRunning })
	l.Close()
	testenv.Eventually(t, "tcp unhealthy", func() bool { return status(m, "tcp").Health == container.HealthUnhealthy })

	bad := exec
	bad.Version, bad.Health = "2", &container.Probe{Exec: []string{"exit", "3"}, Interval: 20 * time.Millisecond}
	if err := m.Apply(ctx, []container.App{web, bad}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the rollback", func() bool { return status(m, "exec").RolledBack != "" })
	if s := status(m, "exec"); s.Version != "1" || !strings.Contains(s.RolledBack, "not healthy within") {
		t.Errorf("after the rollback: %+v", s)
	}
	testenv.Eventually(t, "exec healthy on version 1", func() bool { return status(m, "exec").Health == container.HealthHealthy })
}

// TestStableRunResetsBackoff: an app that runs longer than Stable before
// each exit is restarted at the first backoff step every time and never
// marked crash-looping; one that exits at once is.
func TestStableRunResetsBackoff(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	var mu sync.Mutex
	crashLooped := map[string]bool{}
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, RestartMax: time.Second,
		Stable: 50 * time.Millisecond, CrashLoop: 3,
		OnChange: func(s container.AppStatus) {
			if s.State == container.AppCrashLoop {
				mu.Lock()
				crashLooped[s.Name] = true
				mu.Unlock()
			}
		}})
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	steady := app("1", map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "1", "EDGEKIT_TEST_AFTER": "80ms"})
	flaky := app("1", map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "1", "EDGEKIT_TEST_AFTER": "1ms"})
	steady.Name, flaky.Name = "steady", "flaky"
	if err := m.Apply(ctx, []container.App{steady, flaky}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "five restarts of the steady app", func() bool { return status(m, "steady").Restarts >= 5 })
	testenv.Eventually(t, "the flaky app crash-looping", func() bool { mu.Lock(); defer mu.Unlock(); return crashLooped["flaky"] })
	mu.Lock()
	defer mu.Unlock()
	if crashLooped["steady"] {
		t.Error("an app running longer than Stable before each exit was marked crash-looping")
	}
}

// slowStop is a runtime whose Stop waits until release is closed, holding a
// removal half done.
type slowStop struct {
	*memruntime.Runtime
	stopping chan string // the id of each container whose stop began
	release  chan struct{}
}

func (s *slowStop) Stop(ctx context.Context, id string, grace time.Duration) error {
	s.stopping <- id
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Runtime.Stop(ctx, id, grace)
}

// TestRemovedAndAddedAgain: an app removed and added again at once (as a
// rollback does) gets a container of its own once the removal is done; it
// never adopts the one being deleted, and runs on when that removal ends.
// Apply after Close is refused with ErrClosed.
func TestRemovedAndAddedAgain(t *testing.T) {
	rt := &slowStop{Runtime: newRuntime(t), stopping: make(chan string, 4), release: make(chan struct{})}
	ctx := context.Background()
	var mu sync.Mutex
	var ids []string // the containers the app reported, in order
	m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 10 * time.Millisecond, OnChange: func(s container.AppStatus) {
		mu.Lock()
		defer mu.Unlock()
		if s.ContainerID != "" && (len(ids) == 0 || ids[len(ids)-1] != s.ContainerID) {
			ids = append(ids, s.ContainerID)
		}
	}})
	t.Cleanup(func() { _ = m.Close(ctx) })
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	old := status(m, "web").ContainerID
	if err := m.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if id := <-rt.stopping; id != old {
		t.Fatalf("stopping %s, want %s", id, old)
	}
	mu.Lock()
	ids = nil
	mu.Unlock()
	if err := m.Apply(ctx, []container.App{app("1", nil)}); err != nil {
		t.Fatal(err)
	}
	close(rt.release)
	testenv.Eventually(t, "running in a new container", func() bool {
		s := status(m, "web")
		if s.State != container.AppRunning || s.ContainerID == old {
			return false
		}
		c, err := rt.Inspect(ctx, s.ContainerID)
		return err == nil && c.State == container.Running
	})
	if _, err := rt.Inspect(ctx, old); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("the removed container: %v, want it gone", err)
	}
	mu.Lock()
	if want := []string{status(m, "web").ContainerID}; !slices.Equal(ids, want) {
		t.Errorf("added again, the app reported containers %v, want only %v", ids, want)
	}
	mu.Unlock()
	if s := status(m, "web"); s.Restarts != 0 {
		t.Errorf("added again, the app restarted %d times", s.Restarts)
	}
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 {
		t.Errorf("%d containers for the app", len(list))
	}

	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, []container.App{app("2", nil)}); !errors.Is(err, container.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
}

// TestPull: Pull leaves an image the runtime has alone, pulls one it
// lacks, names what cannot be had, and is refused after Close.
func TestPull(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := container.NewManager(rt, nil)
	if err := m.Pull(ctx, image, nil); err != nil {
		t.Errorf("an image the runtime has: %v", err)
	}
	err := m.Pull(ctx, "localhost/missing:1", nil)
	if !errors.Is(err, container.ErrImageNotFound) || !strings.Contains(err.Error(), "localhost/missing:1") {
		t.Errorf("an image no registry has: %v, want ErrImageNotFound naming it", err)
	}
	_ = m.Close(ctx)
	if err := m.Pull(ctx, image, nil); !errors.Is(err, container.ErrClosed) {
		t.Errorf("Pull after Close: %v, want ErrClosed", err)
	}
}

// TestAdoptionRemovesWhatAnUpgradeLeft: a gateway killed during an upgrade
// leaves the version it was replacing, renamed; the next manager adopts the
// app's container and removes that one, so the app has one container.
func TestAdoptionRemovesWhatAnUpgradeLeft(t *testing.T) {
	rt := newRuntime(t)
	ctx := context.Background()
	m := manager(t, rt)
	if err := m.Apply(ctx, []container.App{app("2", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "running", func() bool { return status(m, "web").State == container.AppRunning })
	kept := status(m, "web").ContainerID
	_ = m.Close(ctx)
	// What the upgrade from version 1 had renamed and not yet removed.
	left, err := rt.Create(ctx, container.Spec{Name: "edgekit-web-previous", Image: image,
		Labels: map[string]string{container.LabelApp: "web", container.LabelVersion: "1", container.LabelSpec: "old"}})
	if err != nil {
		t.Fatal(err)
	}

	m2 := manager(t, rt)
	if err := m2.Apply(ctx, []container.App{app("2", nil)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "adopted", func() bool { return status(m2, "web").State == container.AppRunning })
	if got := status(m2, "web").ContainerID; got != kept {
		t.Errorf("adopted %s, want %s", got, kept)
	}
	if _, err := rt.Inspect(ctx, left); !errors.Is(err, container.ErrNotFound) {
		t.Errorf("what the upgrade left: %v, want it removed", err)
	}
	if list, _ := rt.List(ctx, map[string]string{container.LabelApp: "web"}); len(list) != 1 {
		t.Errorf("%d containers for the app", len(list))
	}
}
