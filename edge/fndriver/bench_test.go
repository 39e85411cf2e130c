package fndriver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// reporter is an in-process driver that reports as fast as it is asked:
// the baseline the out-of-process drivers are measured against.
type reporter struct {
	host device.Host
}

func (r *reporter) Open(_ context.Context, _ json.RawMessage, h device.Host) error {
	r.host = h
	return nil
}
func (*reporter) Attach(context.Context, device.Device) error { return nil }
func (*reporter) Update(context.Context, device.Device) error { return nil }
func (*reporter) Detach(context.Context, string) error        { return nil }
func (*reporter) ReadProperties(context.Context, string, []string) (map[string]device.Reading, error) {
	return nil, device.ErrOffline
}
func (*reporter) WriteProperties(context.Context, string, map[string]any) (map[string]error, error) {
	return nil, device.ErrOffline
}
func (*reporter) CallService(context.Context, string, string, map[string]any) (map[string]any, error) {
	return nil, device.ErrOffline
}
func (*reporter) Close(context.Context) error { return nil }

// BenchmarkDriverReports: reports per second reaching the device manager
// (checked against the model, in the shadow, handed to the publisher) from
// a driver in process, and from the Node.js and Python drivers out of
// process, one report at a time and, for Node.js, 16 under way at once.
func BenchmarkDriverReports(b *testing.B) {
	ctx := context.Background()
	b.Run("in-process", func(b *testing.B) {
		m := device.NewManager(&device.ManagerOptions{Publish: func(context.Context, device.Notice) error { return nil }})
		defer m.Close(ctx)
		r := &reporter{}
		if err := m.AddDriver(ctx, "r", r, nil); err != nil {
			b.Fatal(err)
		}
		if err := m.Attach(ctx, "r", device.Device{Name: "t1", Model: model(b)}, nil); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		start := time.Now()
		for i := range b.N {
			if err := r.host.Report(ctx, "t1", map[string]any{"temperature": float64(20 + i%10)}, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reports/s")
	})
	for _, l := range languages(b) {
		for _, inFlight := range []int{1, 16} {
			if inFlight > 1 && l.name != "node" {
				continue
			}
			b.Run(fmt.Sprintf("%s/in-flight-%d", l.name, inFlight), func(b *testing.B) {
				benchReports(b, l, inFlight)
			})
		}
	}
}

func benchReports(b *testing.B, l language, inFlight int) {
	ctx := context.Background()
	r := newRig(b)
	fn := r.deploy(b, l, `{}`, 10*time.Minute)
	m := device.NewManager(&device.ManagerOptions{Publish: func(context.Context, device.Notice) error { return nil }})
	defer m.Close(ctx)
	if err := m.AddDriver(ctx, fn, r.set.Driver(fn), nil); err != nil {
		b.Fatal(err)
	}
	if err := m.Attach(ctx, fn, device.Device{Name: "t1", Model: model(b)}, nil); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, "t1 online", func() bool {
		sh, err := m.Shadow("t1")
		return err == nil && sh.State == device.Online
	})
	flood := func(n int) {
		ev := fmt.Sprintf(`{"do": "flood", "device": "t1", "n": %d, "inFlight": %d}`, n, inFlight)
		resp, err := r.host.Invoke(ctx, fn, invoke.Request{Payload: []byte(ev)})
		if err != nil || string(resp.Payload) != `{"ok": true}` && string(resp.Payload) != `{"ok":true}` {
			b.Fatalf("flood: %s %v", resp.Payload, err)
		}
	}
	flood(100) // warm
	b.ResetTimer()
	start := time.Now()
	flood(b.N)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reports/s")
}
