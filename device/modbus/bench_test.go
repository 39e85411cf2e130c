package modbus_test

import (
	"context"
	"io"
	"log"
	"log/slog"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/modbus"
	"github.com/edgekit/edgekit/internal/benchutil"
)

// BenchmarkPoll: reading one input register through the driver
// ("driver"), and through Manager.Get ("manager": a caller's read, which
// runs on a goroutine of its own so that a driver that blocks cannot hold
// the caller), against the library's own client reading the same register
// of the same server ("raw", the baseline). The poll round trip (target
// ≤ 1.2×) is BenchmarkModbusPoll in package device. Reports p50-µs and p99-µs.
func BenchmarkPoll(b *testing.B) {
	srv := startServer(b, freeAddr(b), newRegisters())
	srv.regs.set(srv.regs.input, 0, 215)
	b.Run("raw", func(b *testing.B) {
		c, err := mb.NewClient(&mb.ClientConfiguration{URL: srv.url, Timeout: time.Second, Logger: log.New(io.Discard, "", 0)})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Open(); err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		_ = c.SetUnitId(1)
		benchutil.ReportLatency(b, 500, func() error { _, err := c.ReadRegisters(0, 1, mb.INPUT_REGISTER); return err })
	})
	ctx := context.Background()
	b.Run("driver", func(b *testing.B) {
		d := modbus.New()
		_ = d.Open(ctx, nil, nopHost{})
		defer d.Close(ctx)
		if err := d.Attach(ctx, deviceOn(b, "m", srv.url, 1)); err != nil {
			b.Fatal(err)
		}
		benchutil.ReportLatency(b, 500, func() error { _, err := d.ReadProperties(ctx, "m", []string{"temperature"}); return err })
	})
	b.Run("manager", func(b *testing.B) {
		m := device.NewManager(nil)
		defer m.Close(ctx)
		if err := m.AddDriver(ctx, "modbus", modbus.New(), nil); err != nil {
			b.Fatal(err)
		}
		if err := m.Attach(ctx, "modbus", deviceOn(b, "m", srv.url, 1), nil); err != nil {
			b.Fatal(err)
		}
		benchutil.ReportLatency(b, 500, func() error { _, err := m.Get(ctx, "m", []string{"temperature"}); return err })
	})
}

// nopHost takes what a driver reports and drops it.
type nopHost struct{}

func (nopHost) Report(context.Context, string, map[string]any, time.Time) error       { return nil }
func (nopHost) Emit(context.Context, string, string, map[string]any, time.Time) error { return nil }
func (nopHost) SetState(string, device.State, error)                                  {}
func (nopHost) Logger() *slog.Logger                                                  { return slog.New(slog.DiscardHandler) }
