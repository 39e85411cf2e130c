// Package devicetest is the conformance suite every device driver runs:
// lifecycle, Close twice, per-property results, unknown devices and
// properties, concurrent calls, context cancellation, no reports after
// Close, and discovery and batch reads (for drivers that implement
// device.Discoverer and device.BatchReader). A driver's test calls Run with a Harness that makes the driver and
// a device it can serve.
package devicetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
)

// Harness says how to test a driver.
type Harness struct {
	// New returns a fresh, unopened driver.
	New func(t *testing.T) device.Driver
	// Config is the driver's configuration for Open.
	Config json.RawMessage
	// Device returns a device named name that the driver can serve (its
	// endpoint running), with a model of at least one readable property.
	Device func(t *testing.T, name string) device.Device
	// Writes are values to write to the device's rw properties (checked
	// against its model); a driver without writable properties leaves it
	// empty.
	Writes map[string]any
	// Slow, when set, makes the device's calls take at least a second
	// (for the cancellation check); nil skips that check.
	Slow func(t *testing.T, name string) device.Device
	// Discovers names devices a driver implementing device.Discoverer
	// finds with Config (its scan's targets running).
	Discovers []string
}

// Host records what a driver reports; Run uses it, and driver tests may too.
type Host struct {
	mu      sync.Mutex
	closed  bool
	reports []Report
	states  map[string]device.State
	late    atomic.Int32 // reports after Close
}

// Report is one recorded report or event.
type Report struct {
	Device string
	Event  string // "" for property values
	Values map[string]any
	At     time.Time
}

// NewHost returns an empty recording host.
func NewHost() *Host { return &Host{states: map[string]device.State{}} }

func (h *Host) record(r Report) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		h.late.Add(1)
		return device.ErrClosed
	}
	h.reports = append(h.reports, r)
	return nil
}

// Report records property values.
func (h *Host) Report(_ context.Context, dev string, values map[string]any, at time.Time) error {
	return h.record(Report{Device: dev, Values: values, At: at})
}

// Emit records an event.
func (h *Host) Emit(_ context.Context, dev, event string, out map[string]any, at time.Time) error {
	return h.record(Report{Device: dev, Event: event, Values: out, At: at})
}

// SetState records a device's state.
func (h *Host) SetState(dev string, s device.State, _ error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states[dev] = s
}

// Logger discards.
func (h *Host) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Reports returns what was recorded.
func (h *Host) Reports() []Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Report(nil), h.reports...)
}

// State returns a device's last state.
func (h *Host) State(dev string) device.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.states[dev]
}

func (h *Host) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
}

// checked converts values to the model's types, as the Manager hands
// them to a driver.
func checked(t *testing.T, m *device.Model, values map[string]any) map[string]any {
	t.Helper()
	out := make(map[string]any, len(values))
	for id, v := range values {
		c, err := m.PropertyValue(id, v)
		if err != nil {
			t.Fatalf("Harness.Writes: %v", err)
		}
		out[id] = c
	}
	return out
}

// Run runs the conformance suite.
func Run(t *testing.T, h Harness) {
	open := func(t *testing.T) (device.Driver, *Host) {
		t.Helper()
		d := h.New(t)
		host := NewHost()
		if err := d.Open(context.Background(), h.Config, host); err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = d.Close(context.Background()) })
		return d, host
	}
	readable := func(m *device.Model) []string {
		var ids []string
		for _, p := range m.Properties {
			ids = append(ids, p.Identifier)
		}
		return ids
	}
	ctx := context.Background()

	t.Run("Discovery", func(t *testing.T) {
		d, _ := open(t)
		disc, ok := d.(device.Discoverer)
		if !ok {
			t.Log("the driver does not implement device.Discoverer")
			return
		}
		var mu sync.Mutex
		var found []string
		discover := func(ctx context.Context) error {
			done := make(chan error, 1)
			go func() {
				done <- disc.Discover(ctx, func(dev device.Device) {
					mu.Lock()
					defer mu.Unlock()
					found = append(found, dev.Name)
					if dev.Name == "" {
						t.Error("a device found without a name")
					}
				})
			}()
			select {
			case err := <-done:
				return err
			case <-time.After(10 * time.Second):
				t.Fatal("Discover did not return within 8 s of its context's end")
				return nil
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := discover(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Discover: %v", err)
		}
		mu.Lock()
		for _, name := range h.Discovers {
			if !slices.Contains(found, name) {
				t.Errorf("Discover found %v, not %s", found, name)
			}
		}
		mu.Unlock()
		_ = d.Close(ctx)
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		_ = discover(cctx) // after Close: an error or nothing, but it returns
	})

	t.Run("BatchReads", func(t *testing.T) {
		d, _ := open(t)
		br, ok := d.(device.BatchReader)
		if !ok {
			t.Log("the driver does not implement device.BatchReader")
			return
		}
		reads := map[string][]string{"no-such-device": {"x"}}
		for _, name := range []string{"batch-1", "batch-2"} {
			dev := h.Device(t, name)
			if err := d.Attach(ctx, dev); err != nil {
				t.Fatal(err)
			}
			reads[name] = append(readable(dev.Model), "noSuchProperty")
		}
		got, err := br.ReadBatch(ctx, reads)
		if err != nil {
			t.Fatalf("ReadBatch: %v", err)
		}
		for name, ids := range reads {
			if len(got[name]) != len(ids) {
				t.Errorf("%s: %d readings for %d properties", name, len(got[name]), len(ids))
			}
		}
		if !errors.Is(got["batch-1"]["noSuchProperty"].Err, device.ErrUnknownProperty) {
			t.Errorf("unknown property in a batch: %v, want ErrUnknownProperty", got["batch-1"]["noSuchProperty"].Err)
		}
		if !errors.Is(got["no-such-device"]["x"].Err, device.ErrUnknownDevice) {
			t.Errorf("unknown device in a batch: %v, want ErrUnknownDevice in its readings", got["no-such-device"]["x"].Err)
		}
		_ = d.Close(ctx)
		if _, err := br.ReadBatch(ctx, reads); err == nil {
			t.Error("ReadBatch after Close succeeded")
		}
	})

	t.Run("Lifecycle", func(t *testing.T) {
		d, host := open(t)
		dev := h.Device(t, "dev-1")
		if err := d.Attach(ctx, dev); err != nil {
			t.Fatalf("Attach: %v", err)
		}
		got, err := d.ReadProperties(ctx, dev.Name, readable(dev.Model))
		if err != nil {
			t.Fatalf("ReadProperties: %v", err)
		}
		for id, r := range got {
			if r.Err != nil {
				continue
			}
			if _, err := dev.Model.PropertyValue(id, r.Value); err != nil {
				t.Errorf("read %s = %#v, which does not fit the model: %v", id, r.Value, err)
			}
		}
		if len(h.Writes) > 0 {
			res, err := d.WriteProperties(ctx, dev.Name, checked(t, dev.Model, h.Writes))
			if err != nil {
				t.Fatalf("WriteProperties: %v", err)
			}
			var ids []string
			for id := range h.Writes {
				if res[id] != nil {
					t.Errorf("write %s: %v", id, res[id])
				}
				ids = append(ids, id)
			}
			back, err := d.ReadProperties(ctx, dev.Name, ids)
			if err != nil {
				t.Fatalf("reading back: %v", err)
			}
			for id, want := range h.Writes {
				w, _ := dev.Model.PropertyValue(id, want)
				if back[id].Err != nil || fmt.Sprint(back[id].Value) != fmt.Sprint(w) {
					t.Errorf("wrote %s = %v, read back %v (%v)", id, w, back[id].Value, back[id].Err)
				}
			}
		}
		if err := d.Update(ctx, dev); err != nil {
			t.Errorf("Update: %v", err)
		}
		if err := d.Detach(ctx, dev.Name); err != nil {
			t.Errorf("Detach: %v", err)
		}
		if _, err := d.ReadProperties(ctx, dev.Name, readable(dev.Model)); !errors.Is(err, device.ErrUnknownDevice) {
			t.Errorf("reading a detached device: %v, want ErrUnknownDevice", err)
		}
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := d.Close(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
		_ = host
	})

	t.Run("PerPropertyResults", func(t *testing.T) {
		d, _ := open(t)
		dev := h.Device(t, "dev-2")
		if err := d.Attach(ctx, dev); err != nil {
			t.Fatal(err)
		}
		ids := append(readable(dev.Model), "noSuchProperty")
		got, err := d.ReadProperties(ctx, dev.Name, ids)
		if err != nil {
			t.Fatalf("one unknown property failed the whole read: %v", err)
		}
		if !errors.Is(got["noSuchProperty"].Err, device.ErrUnknownProperty) {
			t.Errorf("unknown property: %v, want ErrUnknownProperty", got["noSuchProperty"].Err)
		}
		if len(got) != len(ids) {
			t.Errorf("%d results for %d properties", len(got), len(ids))
		}
		if _, err := d.ReadProperties(ctx, "no-such-device", ids); !errors.Is(err, device.ErrUnknownDevice) {
			t.Errorf("unknown device: %v, want ErrUnknownDevice", err)
		}
		for _, p := range dev.Model.Properties {
			if p.Access == device.ReadOnly {
				res, err := d.WriteProperties(ctx, dev.Name, map[string]any{p.Identifier: nil})
				if err == nil && !errors.Is(res[p.Identifier], device.ErrReadOnly) {
					t.Errorf("write to read-only %s: %v, want ErrReadOnly", p.Identifier, res[p.Identifier])
				}
				break
			}
		}
	})

	t.Run("ConcurrentCalls", func(t *testing.T) {
		d, _ := open(t)
		var devs []device.Device
		for i := range 4 {
			dev := h.Device(t, fmt.Sprintf("dev-c%d", i))
			if err := d.Attach(ctx, dev); err != nil {
				t.Fatal(err)
			}
			devs = append(devs, dev)
		}
		var wg sync.WaitGroup
		for _, dev := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					if _, err := d.ReadProperties(ctx, dev.Name, readable(dev.Model)); err != nil {
						t.Errorf("concurrent read of %s: %v", dev.Name, err)
						return
					}
					if len(h.Writes) > 0 {
						if _, err := d.WriteProperties(ctx, dev.Name, checked(t, dev.Model, h.Writes)); err != nil {
							t.Errorf("concurrent write to %s: %v", dev.Name, err)
							return
						}
					}
				}
			}()
		}
		wg.Wait()
	})

	t.Run("Cancellation", func(t *testing.T) {
		if h.Slow == nil {
			t.Skip("the harness has no slow device")
		}
		d, _ := open(t)
		dev := h.Slow(t, "dev-slow")
		if err := d.Attach(ctx, dev); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := d.ReadProperties(cctx, dev.Name, readable(dev.Model))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("read past its deadline: %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("the read returned %v after its context ended", took-50*time.Millisecond)
		}
	})

	t.Run("NoReportsAfterClose", func(t *testing.T) {
		d, host := open(t)
		for i := range 3 {
			if err := d.Attach(ctx, h.Device(t, fmt.Sprintf("dev-r%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if err := d.Close(ctx); err != nil {
			t.Fatal(err)
		}
		host.close()
		time.Sleep(100 * time.Millisecond)
		if n := host.late.Load(); n != 0 {
			t.Errorf("%d reports after Close returned", n)
		}
		if _, err := d.ReadProperties(ctx, "dev-r0", nil); err == nil {
			t.Error("a read after Close succeeded")
		}
	})
}
