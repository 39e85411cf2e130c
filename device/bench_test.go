package device_test

import (
	"context"
	"encoding/json"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// benchHost is the simulated driver, keeping the Host so the benchmark
// can report as the driver does.
type benchHost struct {
	*sim.Driver
	host device.Host
}

func (b *benchHost) Open(ctx context.Context, cfg json.RawMessage, h device.Host) error {
	b.host = h
	return b.Driver.Open(ctx, cfg, h)
}

// BenchmarkReports: property reports from 1,000 devices, checked against
// the model, recorded in the shadow and published on the bus, until a
// subscriber to devices/+/properties has them. Reports reports/s.
func BenchmarkReports(b *testing.B) {
	run := func(b *testing.B, bb bus.Bus) {
		var got atomic.Int64
		if _, err := bb.Subscribe(context.Background(), "devices/+/properties", func(context.Context, *bus.Message) { got.Add(1) }, nil); err != nil {
			b.Fatal(err)
		}
		drv := &benchHost{Driver: sim.New()}
		m := device.NewManager(&device.ManagerOptions{Publish: devicebus.Publisher(bb, "")})
		defer m.Close(context.Background())
		ctx := context.Background()
		if err := m.AddDriver(ctx, "sim", drv, nil); err != nil {
			b.Fatal(err)
		}
		model := boiler(b)
		const devices = 1000
		for i := range devices {
			if err := m.Attach(ctx, "sim", device.Device{Name: "d" + strconv.Itoa(i), Model: model}, nil); err != nil {
				b.Fatal(err)
			}
		}
		n := max(b.N, 20000)
		workers := 4
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					values := map[string]any{"temperature": 20 + float64(i%100)/10}
					if err := drv.host.Report(ctx, "d"+strconv.Itoa(int(i%devices)), values, time.Now()); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for got.Load() < int64(n) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "reports/s")
	}
	b.Run("membus", func(b *testing.B) {
		mb := membus.New(nil)
		defer mb.Close(context.Background())
		run(b, mb)
	})
	b.Run("mosquitto", func(b *testing.B) {
		run(b, brokertest.Connect(b, brokertest.Start(b, nil), mqttbus.Options{}))
	})
}

// BenchmarkIdleDeviceMemory: heap and stack per attached idle device,
// 1,000 of them. Reports bytes/device.
func BenchmarkIdleDeviceMemory(b *testing.B) {
	model := boiler(b)
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	for range b.N {
		m := device.NewManager(nil)
		ctx := context.Background()
		if err := m.AddDriver(ctx, "sim", sim.New(), nil); err != nil {
			b.Fatal(err)
		}
		before := measure()
		for i := range 1000 {
			if err := m.Attach(ctx, "sim", device.Device{Name: "d" + strconv.Itoa(i), Model: model}, nil); err != nil {
				b.Fatal(err)
			}
		}
		after := measure()
		b.ReportMetric(float64(after-before)/1000, "bytes/device")
		_ = m.Close(ctx)
	}
}
