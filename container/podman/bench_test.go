package podman_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/internal/backoff"
)

// BenchmarkManager: on real podman, create→running through the Manager
// against the runtime's own create, start and wait ("raw", the baseline;
// target ≤ 1.1×); exit→running again at the first backoff step (100 ms);
// and an upgrade through its probation (1 s, no probe). Reports ms/op.
func BenchmarkManager(b *testing.B) {
	_, rt := setup(b)
	ctx := context.Background()
	spec := func(env map[string]string) container.Spec {
		return container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none", Env: env, StopGrace: time.Second}
	}
	report := func(b *testing.B, total time.Duration, n int) {
		b.ReportMetric(float64(total.Microseconds())/1e3/float64(n), "ms/op")
	}
	b.Run("raw", func(b *testing.B) {
		var total time.Duration
		for i := range b.N {
			s := spec(nil)
			s.Name = "raw-" + strconv.Itoa(i)
			start := time.Now()
			id, err := rt.Create(ctx, s)
			if err != nil {
				b.Fatal(err)
			}
			if err := rt.Start(ctx, id); err != nil {
				b.Fatal(err)
			}
			if _, err := rt.Wait(ctx, id, container.WaitRunning); err != nil {
				b.Fatal(err)
			}
			total += time.Since(start)
			_ = rt.Remove(ctx, id, true)
		}
		report(b, total, b.N)
	})
	b.Run("manager", func(b *testing.B) {
		m := container.NewManager(rt, nil)
		defer m.Close(ctx)
		var total time.Duration
		for i := range b.N {
			app := container.App{Name: "bench-" + strconv.Itoa(i), Version: "1", Spec: spec(nil)}
			start := time.Now()
			if err := m.Apply(ctx, []container.App{app}); err != nil {
				b.Fatal(err)
			}
			for m.Status()[0].ContainerID == "" || !running(ctx, rt, m.Status()[0].ContainerID) {
				time.Sleep(time.Millisecond)
			}
			total += time.Since(start)
			if err := m.Apply(ctx, nil); err != nil {
				b.Fatal(err)
			}
			for len(m.Status()) > 0 {
				time.Sleep(time.Millisecond)
			}
			waitGone(ctx, rt, app.Name)
		}
		report(b, total, b.N)
	})
	b.Run("restart", func(b *testing.B) {
		exitedAt := make(chan time.Time, 100)
		runningAt := make(chan time.Time, 100)
		m := container.NewManager(rt, &container.ManagerOptions{Backoff: backoff.Policy{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.01},
			OnChange: func(s container.AppStatus) {
				switch s.State {
				case container.AppExited:
					exitedAt <- time.Now()
				case container.AppRunning:
					runningAt <- time.Now()
				}
			}})
		defer m.Close(ctx)
		app := container.App{Name: "flapper", Version: "1", Spec: spec(map[string]string{"EDGEKIT_TEST_MODE": "exit", "EDGEKIT_TEST_CODE": "1", "EDGEKIT_TEST_AFTER": "300ms"})}
		if err := m.Apply(ctx, []container.App{app}); err != nil {
			b.Fatal(err)
		}
		<-runningAt
		var total time.Duration
		for range b.N {
			exited := <-exitedAt
			total += (<-runningAt).Sub(exited)
		}
		report(b, total, b.N)
		_ = m.Apply(ctx, nil)
		waitGone(ctx, rt, app.Name)
	})
	b.Run("upgrade", func(b *testing.B) {
		m := container.NewManager(rt, nil)
		defer m.Close(ctx)
		app := container.App{Name: "upgraded", Version: "0", Spec: spec(nil), Probation: time.Second}
		if err := m.Apply(ctx, []container.App{app}); err != nil {
			b.Fatal(err)
		}
		for m.Status()[0].State != container.AppRunning {
			time.Sleep(time.Millisecond)
		}
		var total time.Duration
		for i := range b.N {
			app.Version = strconv.Itoa(i + 1)
			start := time.Now()
			if err := m.Apply(ctx, []container.App{app}); err != nil {
				b.Fatal(err)
			}
			for s := m.Status()[0]; s.Version != app.Version || s.State != container.AppRunning; s = m.Status()[0] {
				time.Sleep(time.Millisecond)
			}
			total += time.Since(start)
		}
		report(b, total, b.N)
		_ = m.Apply(ctx, nil)
		waitGone(ctx, rt, app.Name)
	})
}

func running(ctx context.Context, rt container.Runtime, id string) bool {
	c, err := rt.Inspect(ctx, id)
	return err == nil && c.State == container.Running
}

func waitGone(ctx context.Context, rt container.Runtime, app string) {
	for {
		list, err := rt.List(ctx, map[string]string{container.LabelApp: app})
		if err != nil || len(list) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
