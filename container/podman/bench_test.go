package podman_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/internal/benchutil"
)

// BenchmarkManager: on real podman, create→running through the Manager
// against the runtime's own create, start and wait (the baseline, run
// alternately; target ≤ 1.1×); exit (podman's time of it) → running again
// at the first backoff step (100 ms); and an upgrade through its probation
// (1 s, no probe). Reports medians in ms.
func BenchmarkManager(b *testing.B) {
	_, rt := setup(b)
	ctx := context.Background()
	spec := func(env map[string]string) container.Spec {
		return container.Spec{Image: ref, Command: []string{"/testprog"}, NetworkMode: "none", Env: env, StopGrace: time.Second}
	}
	report := func(b *testing.B, d []time.Duration) {
		b.ReportMetric(float64(benchutil.Median(d).Microseconds())/1e3, "ms")
	}
	b.Run("create", func(b *testing.B) {
		// Alternating, so that both see the same machine: the runtime's
		// create+start+wait(running), then the Manager's Apply until the
		// app is running (set once its start has returned).
		running := make(chan struct{}, 1)
		m := container.NewManager(rt, &container.ManagerOptions{OnChange: func(s container.AppStatus) {
			if s.State == container.AppRunning {
				running <- struct{}{}
			}
		}})
		defer m.Close(ctx)
		var raw, managed []time.Duration
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
			raw = append(raw, time.Since(start))
			_ = rt.Remove(ctx, id, true)

			app := container.App{Name: "bench-" + strconv.Itoa(i), Version: "1", Spec: spec(nil)}
			start = time.Now()
			if err := m.Apply(ctx, []container.App{app}); err != nil {
				b.Fatal(err)
			}
			<-running
			managed = append(managed, time.Since(start))
			if err := m.Apply(ctx, nil); err != nil {
				b.Fatal(err)
			}
			waitGone(ctx, rt, app.Name)
		}
		r, mm := benchutil.Median(raw), benchutil.Median(managed)
		b.ReportMetric(float64(r.Microseconds())/1e3, "raw-ms")
		b.ReportMetric(float64(mm.Microseconds())/1e3, "manager-ms")
		b.ReportMetric(float64(mm)/float64(r), "ratio")
	})
	b.Run("restart", func(b *testing.B) {
		exitedAt := make(chan time.Time, 100)
		delays := make(chan time.Duration, 100) // the backoff chosen, jittered
		runningAt := make(chan time.Time, 100)
		m := container.NewManager(rt, &container.ManagerOptions{RestartMin: 100 * time.Millisecond, RestartMax: 100 * time.Millisecond,
			OnChange: func(s container.AppStatus) {
				switch s.State {
				case container.AppExited:
					exitedAt <- s.LastExitAt // podman's own time of the exit
				case container.AppBackoff, container.AppCrashLoop:
					delays <- s.RestartDelay
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
		var d []time.Duration
		for range b.N {
			exited, delay := <-exitedAt, <-delays
			d = append(d, (<-runningAt).Sub(exited)-delay)
		}
		report(b, d)
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
		var d []time.Duration
		for i := range b.N {
			app.Version = strconv.Itoa(i + 1)
			start := time.Now()
			if err := m.Apply(ctx, []container.App{app}); err != nil {
				b.Fatal(err)
			}
			for s := m.Status()[0]; s.Version != app.Version || s.State != container.AppRunning; s = m.Status()[0] {
				time.Sleep(time.Millisecond)
			}
			d = append(d, time.Since(start))
		}
		report(b, d)
		_ = m.Apply(ctx, nil)
		waitGone(ctx, rt, app.Name)
	})
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
