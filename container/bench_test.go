package container_test

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/edgekit/edgekit/container"
)

// BenchmarkSupervisedAppMemory: the manager's heap and stacks per running,
// supervised app (100 apps on the in-memory runtime, whose own containers
// are counted apart). Target ≤ 50 KB. Reports bytes/app.
func BenchmarkSupervisedAppMemory(b *testing.B) {
	measure := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for range b.N {
		rt := memruntimeFor(b)
		ctx := context.Background()
		var apps []container.App
		for i := range 100 {
			apps = append(apps, container.App{Name: "a" + strconv.Itoa(i), Version: "1", Spec: container.Spec{Image: image}})
		}
		// The runtime's containers alone, as a baseline.
		var ids []string
		base0 := measure()
		for i := range 100 {
			id, _ := rt.Create(ctx, container.Spec{Name: "base" + strconv.Itoa(i), Image: image})
			_ = rt.Start(ctx, id)
			ids = append(ids, id)
		}
		runtimeCost := measure() - base0
		for _, id := range ids {
			_ = rt.Remove(ctx, id, true)
		}
		before := measure()
		m := container.NewManager(rt, &container.ManagerOptions{Poll: time.Hour})
		if err := m.Apply(ctx, apps); err != nil {
			b.Fatal(err)
		}
		for {
			n := 0
			for _, s := range m.Status() {
				if s.State == container.AppRunning {
					n++
				}
			}
			if n == 100 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		after := measure()
		b.ReportMetric((float64(after-before)-float64(runtimeCost))/100, "bytes/app")
		_ = m.Close(ctx)
		_ = rt.Close(context.Background())
	}
}
