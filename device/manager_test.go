package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/internal/testenv"
)

// notices collects what a manager publishes.
type notices struct {
	mu  sync.Mutex
	all []device.Notice
}

func (n *notices) publish(_ context.Context, x device.Notice) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.all = append(n.all, x)
	return nil
}

func (n *notices) of(kind device.NoticeKind, dev string) []device.Notice {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []device.Notice
	for _, x := range n.all {
		if x.Kind == kind && x.Device == dev {
			out = append(out, x)
		}
	}
	return out
}

// faulty is the simulated driver with one device that misbehaves.
type faulty struct {
	*sim.Driver
	bad     string // the device
	mode    string // "panic", "block" or "offline"
	release chan struct{}
}

func (f *faulty) ReadProperties(ctx context.Context, dev string, ids []string) (map[string]device.Reading, error) {
	if dev == f.bad {
		switch f.mode {
		case "panic":
			panic("driver bug")
		case "block":
			<-f.release // ignores ctx
		case "offline":
			return nil, device.ErrOffline
		}
	}
	return f.Driver.ReadProperties(ctx, dev, ids)
}

func newManager(t *testing.T, opts *device.ManagerOptions, drv device.Driver) (*device.Manager, *notices) {
	t.Helper()
	n := &notices{}
	var o device.ManagerOptions
	if opts != nil {
		o = *opts
	}
	o.Publish = n.publish
	m := device.NewManager(&o)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	if err := m.AddDriver(context.Background(), "sim", drv, nil); err != nil {
		t.Fatal(err)
	}
	return m, n
}

func attach(t *testing.T, m *device.Manager, name, config string, poll ...device.PollGroup) {
	t.Helper()
	if err := m.Attach(context.Background(), "sim", device.Device{Name: name, Model: boiler(t), Config: json.RawMessage(config)}, poll); err != nil {
		t.Fatal(err)
	}
}

func TestManagerGetSetCall(t *testing.T) {
	m, n := newManager(t, nil, sim.New())
	attach(t, m, "b1", `{"values": {"temperature": 60, "setpoint": 50}}`)
	ctx := context.Background()

	got, err := m.Get(ctx, "b1", []string{"temperature", "setpoint", "humidity"})
	if err != nil {
		t.Fatal(err)
	}
	if got["temperature"].Value != 60.0 || got["setpoint"].Value != int64(50) || !errors.Is(got["humidity"].Err, device.ErrUnknownProperty) {
		t.Errorf("Get: %+v", got)
	}

	res, err := m.Set(ctx, "b1", map[string]any{"setpoint": 70.0, "mode": 1.0})
	if err != nil || res["setpoint"] != nil || res["mode"] != nil {
		t.Fatalf("Set: %v %v", res, err)
	}
	sh, _ := m.Shadow("b1")
	if sh.State != device.Online || sh.Properties["setpoint"].Reported != int64(70) || sh.Properties["setpoint"].Desired != nil || sh.Properties["setpoint"].Version != 1 {
		t.Errorf("shadow after Set: %+v", sh)
	}
	for values, says := range map[string]string{
		`{"setpoint": 95}`:    "properties.setpoint: 95 above max 90",
		`{"temperature": 20}`: "property is read-only",
		`{"colour": 1}`:       "properties.colour: unknown property",
		`{"mode": "eco"}`:     `properties.mode: text "eco", want an integer`,
	} {
		var v map[string]any
		_ = json.Unmarshal([]byte(values), &v)
		if _, err := m.Set(ctx, "b1", v); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Set %s: %v, want an error saying %q", values, err, says)
		}
	}
	after, _ := m.Get(ctx, "b1", []string{"setpoint"})
	if after["setpoint"].Value != int64(70) {
		t.Errorf("a refused Set wrote: setpoint %v", after["setpoint"].Value)
	}

	out, err := m.Call(ctx, "b1", "selfTest", nil)
	if err != nil || out["passed"] != false {
		t.Errorf("Call: %v %v", out, err)
	}
	if _, err := m.Call(ctx, "b1", "reboot", map[string]any{"delay": 600}); err == nil || !strings.Contains(err.Error(), "services.reboot.inputData.delay: 600 above max 60") {
		t.Errorf("Call with bad input: %v", err)
	}
	if _, err := m.Get(ctx, "nobody", nil); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("unknown device: %v", err)
	}
	if len(n.of(device.PropertiesNotice, "b1")) == 0 {
		t.Error("no property notices")
	}
}

// TestManagerReports: what a driver pushes is checked and published.
func TestManagerReports(t *testing.T) {
	m, n := newManager(t, nil, sim.New())
	attach(t, m, "b1", `{"interval": "5ms", "values": {"temperature": 60}}`)
	testenv.Eventually(t, "reports", func() bool { return len(n.of(device.PropertiesNotice, "b1")) >= 3 })
	for _, x := range n.of(device.PropertiesNotice, "b1") {
		if _, ok := x.Values["temperature"].(float64); !ok {
			t.Fatalf("report %+v", x)
		}
	}
	if states := n.of(device.StateNotice, "b1"); len(states) == 0 || states[0].State != device.Online {
		t.Errorf("state notices %+v", states)
	}
}

// TestManagerPolls: a poll group reports a property when it changes, not
// on every poll.
func TestManagerPolls(t *testing.T) {
	drv := sim.New()
	m, n := newManager(t, nil, drv)
	attach(t, m, "b1", `{"values": {"setpoint": 50}}`, device.PollGroup{Properties: []string{"setpoint"}, Every: 10 * time.Millisecond})
	testenv.Eventually(t, "the first poll", func() bool { return len(n.of(device.PropertiesNotice, "b1")) == 1 })
	time.Sleep(60 * time.Millisecond)
	if k := len(n.of(device.PropertiesNotice, "b1")); k != 1 {
		t.Fatalf("%d notices for an unchanged value", k)
	}
	// The device changes by itself (written past the manager).
	if _, err := drv.WriteProperties(context.Background(), "b1", map[string]any{"setpoint": int64(65)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the change", func() bool { return len(n.of(device.PropertiesNotice, "b1")) == 2 })
	if v := n.of(device.PropertiesNotice, "b1")[1].Values["setpoint"]; v != int64(65) {
		t.Errorf("change reported as %v", v)
	}
}

// TestMisbehavingDrivers: a driver that panics or blocks on one device
// does not stall the others, and the manager keeps serving.
func TestMisbehavingDrivers(t *testing.T) {
	for _, mode := range []string{"panic", "block"} {
		t.Run(mode, func(t *testing.T) {
			drv := &faulty{Driver: sim.New(), bad: "broken", mode: mode, release: make(chan struct{})}
			defer close(drv.release)
			m, _ := newManager(t, &device.ManagerOptions{CallTimeout: 200 * time.Millisecond}, drv)
			attach(t, m, "broken", `{}`)
			attach(t, m, "fine", `{}`)
			ctx := context.Background()
			if _, err := m.Get(ctx, "broken", nil); err == nil {
				t.Error("a call to the broken device succeeded")
			}
			// Were they queued behind the stuck call, they would fail at
			// the call timeout.
			for range 10 {
				if _, err := m.Get(ctx, "fine", nil); err != nil {
					t.Fatalf("the other device: %v", err)
				}
			}
		})
	}
}

// TestOfflineAndDesired: a device whose calls keep failing goes offline; a
// value set while a driver says the device is offline is kept and written
// when it is back.
func TestOfflineAndDesired(t *testing.T) {
	drv := &faulty{Driver: sim.New(), bad: "flaky", mode: "offline"}
	m, n := newManager(t, &device.ManagerOptions{OfflineAfter: 2}, drv)
	attach(t, m, "flaky", `{}`)
	ctx := context.Background()
	for range 2 {
		_, _ = m.Get(ctx, "flaky", nil)
	}
	testenv.Eventually(t, "offline", func() bool {
		sh, _ := m.Shadow("flaky")
		return sh.State == device.Offline
	})
	_ = n

	// A driver that tells the state itself.
	host := &captureHost{}
	drv2 := sim.New()
	m2, _ := newManager(t, nil, &stateful{Driver: drv2, host: host})
	attach2 := func() {
		if err := m2.Attach(ctx, "sim", device.Device{Name: "b", Model: boiler(t)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	attach2()
	host.h.SetState("b", device.Offline, errors.New("cable unplugged"))
	if _, err := m2.Set(ctx, "b", map[string]any{"setpoint": 80}); !errors.Is(err, device.ErrOffline) {
		t.Fatalf("Set while offline: %v", err)
	}
	if sh, _ := m2.Shadow("b"); sh.Properties["setpoint"].Desired != int64(80) || sh.Cause != "cable unplugged" {
		t.Fatalf("shadow while offline: %+v", sh)
	}
	host.h.SetState("b", device.Online, nil)
	testenv.Eventually(t, "the desired value applied", func() bool {
		sh, _ := m2.Shadow("b")
		return sh.Properties["setpoint"].Reported == int64(80) && sh.Properties["setpoint"].Desired == nil
	})
	got, _ := drv2.ReadProperties(ctx, "b", []string{"setpoint"})
	if got["setpoint"].Value != int64(80) {
		t.Errorf("the device holds %v", got["setpoint"].Value)
	}
}

// stateful keeps the Host it was opened with, so the test can speak as
// the driver.
type stateful struct {
	*sim.Driver
	host *captureHost
}

type captureHost struct{ h device.Host }

func (s *stateful) Open(ctx context.Context, cfg json.RawMessage, h device.Host) error {
	s.host.h = h
	return s.Driver.Open(ctx, cfg, h)
}

func TestBadAttach(t *testing.T) {
	m, _ := newManager(t, nil, sim.New())
	ctx := context.Background()
	for _, tc := range []struct {
		driver string
		dev    device.Device
		poll   []device.PollGroup
		says   string
	}{
		{"nope", device.Device{Name: "x", Model: boiler(t)}, nil, `driver "nope": unknown driver`},
		{"sim", device.Device{Name: "x"}, nil, "no model"},
		{"sim", device.Device{Name: "x", Model: boiler(t)}, []device.PollGroup{{Properties: []string{"humidity"}, Every: time.Second}}, `poll[0]: property "humidity"`},
		{"sim", device.Device{Name: "x", Model: boiler(t)}, []device.PollGroup{{Properties: []string{"temperature"}}}, "poll[0].every"},
		{"sim", device.Device{Name: "x", Model: boiler(t), Config: json.RawMessage(`{"latency": "x"}`)}, nil, "config.latency"},
	} {
		if err := m.Attach(ctx, tc.driver, tc.dev, tc.poll); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("attach: %v, want an error saying %q", err, tc.says)
		}
	}
	if len(m.Devices()) != 0 {
		t.Errorf("refused devices were kept: %v", m.Devices())
	}
}

// plain is a driver without the optional interfaces.
type plain struct{ device.Driver }

// panicky is the simulated driver with a discovery that panics.
type panicky struct{ *sim.Driver }

func (panicky) Discover(context.Context, func(device.Device)) error { panic("driver bug") }

// TestDiscover: a driver's discovery through the manager: each device found
// once, attached ones left out, a found one attachable as it is; a driver
// without discovery, an unknown driver and a panicking discovery are
// errors, and the manager carries on.
func TestDiscover(t *testing.T) {
	tsl, err := os.ReadFile("testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, _ := newManager(t, nil, sim.New())
	config := `{"discoverable": [{"name": "b1", "model": ` + string(tsl) + `},
		{"name": "b2", "model": ` + string(tsl) + `, "config": {"values": {"temperature": 40}}}, {"name": "b2"}]}`
	if err := m.AddDriver(ctx, "scanner", sim.New(), json.RawMessage(config)); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(ctx, "scanner", device.Device{Name: "b1", Model: boiler(t)}, nil); err != nil {
		t.Fatal(err)
	}
	var found []device.Device
	if err := m.Discover(ctx, "scanner", func(d device.Device) { found = append(found, d) }); err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Name != "b2" || found[0].Model == nil {
		t.Fatalf("found %+v, want b2 once, with its model", found)
	}
	if err := m.Attach(ctx, "scanner", found[0], nil); err != nil {
		t.Fatalf("attaching what was found: %v", err)
	}
	if got, err := m.Get(ctx, "b2", []string{"temperature"}); err != nil || got["temperature"].Value != 40.0 {
		t.Errorf("the found device's reading: %+v, %v", got, err)
	}

	if err := m.AddDriver(ctx, "plain", plain{sim.New()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Discover(ctx, "plain", func(device.Device) {}); !errors.Is(err, device.ErrNotSupported) {
		t.Errorf("discovery on a driver without it: %v, want ErrNotSupported", err)
	}
	if err := m.Discover(ctx, "nope", func(device.Device) {}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("discovery on an unknown driver: %v", err)
	}
	if err := m.AddDriver(ctx, "panicky", panicky{sim.New()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Discover(ctx, "panicky", func(device.Device) {}); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("a panicking discovery: %v", err)
	}
	if _, err := m.Get(ctx, "b2", []string{"temperature"}); err != nil {
		t.Errorf("the manager after a panicking discovery: %v", err)
	}
}

// outOfModel is the simulated driver reading a temperature far outside
// the model's range.
type outOfModel struct{ *sim.Driver }

func (o outOfModel) ReadProperties(ctx context.Context, dev string, ids []string) (map[string]device.Reading, error) {
	got, err := o.Driver.ReadProperties(ctx, dev, ids)
	if r, ok := got["temperature"]; ok && r.Err == nil {
		got["temperature"] = device.Reading{Value: 999.0, Time: r.Time}
	}
	return got, err
}

// TestPollChecksValues: a polled value outside the model is dropped, as a
// read one is; the rest of the poll is reported.
func TestPollChecksValues(t *testing.T) {
	m, n := newManager(t, nil, outOfModel{sim.New()})
	attach(t, m, "b1", `{"values": {"setpoint": 50}}`, device.PollGroup{Properties: []string{"temperature", "setpoint"}, Every: 10 * time.Millisecond})
	testenv.Eventually(t, "the first poll", func() bool { return len(n.of(device.PropertiesNotice, "b1")) >= 1 })
	for _, x := range n.of(device.PropertiesNotice, "b1") {
		if v, ok := x.Values["temperature"]; ok {
			t.Errorf("an out-of-model temperature was reported: %v", v)
		}
		if x.Values["setpoint"] != int64(50) {
			t.Errorf("the setpoint was not reported: %+v", x.Values)
		}
	}
	if s, _ := m.Shadow("b1"); s.Properties["temperature"].Reported != nil {
		t.Errorf("the shadow took an out-of-model temperature: %+v", s.Properties["temperature"])
	}
}

// batching counts the simulated driver's batch reads, and can make one
// panic.
type batching struct {
	*sim.Driver
	batches atomic.Int32
	panics  atomic.Bool
}

func (b *batching) ReadBatch(ctx context.Context, reads map[string][]string) (map[string]map[string]device.Reading, error) {
	b.batches.Add(1)
	if b.panics.Load() {
		panic("driver bug")
	}
	return b.Driver.ReadBatch(ctx, reads)
}

// TestGetMany: devices of a batch-reading driver are read in one batch,
// others one by one; every reading is checked against the model and
// recorded; unknown properties and failures come per reading, an unknown
// device refuses the request, and a batch that panics fails its devices'
// readings only.
func TestGetMany(t *testing.T) {
	ctx := context.Background()
	drv := &batching{Driver: sim.New()}
	m, n := newManager(t, nil, drv)
	attach(t, m, "b1", `{"values": {"temperature": 61}}`)
	attach(t, m, "b2", `{"values": {"temperature": 62}, "failing": ["setpoint"]}`)
	if err := m.AddDriver(ctx, "plain", plain{sim.New()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(ctx, "plain", device.Device{Name: "p1", Model: boiler(t), Config: json.RawMessage(`{"values": {"temperature": 63}}`)}, nil); err != nil {
		t.Fatal(err)
	}

	got, err := m.GetMany(ctx, map[string][]string{"b1": {"temperature", "nope"}, "b2": {"temperature", "setpoint"}, "p1": {"temperature"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := drv.batches.Load(); n != 1 {
		t.Errorf("%d batch reads for b1 and b2, want 1", n)
	}
	for dev, want := range map[string]float64{"b1": 61, "b2": 62, "p1": 63} {
		if r := got[dev]["temperature"]; r.Err != nil || r.Value != want {
			t.Errorf("%s temperature: %+v, want %v", dev, r, want)
		}
	}
	if !errors.Is(got["b1"]["nope"].Err, device.ErrUnknownProperty) || got["b2"]["setpoint"].Err == nil {
		t.Errorf("per-reading failures: %+v, %+v", got["b1"]["nope"], got["b2"]["setpoint"])
	}
	if s, _ := m.Shadow("b2"); s.Properties["temperature"].Reported != 62.0 || len(n.of(device.PropertiesNotice, "b2")) != 1 {
		t.Errorf("the batch read was not recorded: %+v", s.Properties["temperature"])
	}

	if _, err := m.GetMany(ctx, map[string][]string{"b1": nil, "ghost": nil}); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("an unknown device: %v, want ErrUnknownDevice", err)
	}
	if k := drv.batches.Load(); k != 1 {
		t.Errorf("a refused request read: %d batches", k)
	}

	drv.panics.Store(true)
	got, err = m.GetMany(ctx, map[string][]string{"b1": nil, "b2": nil, "p1": nil})
	if err != nil {
		t.Fatal(err)
	}
	if r := got["b1"]["temperature"]; r.Err == nil || !strings.Contains(r.Err.Error(), "panicked") {
		t.Errorf("a panicking batch: %+v", r)
	}
	if r := got["p1"]["temperature"]; r.Err != nil {
		t.Errorf("another driver's device after a panicking batch: %+v", r)
	}
	drv.panics.Store(false)
	if r, err := m.Get(ctx, "b1", []string{"temperature"}); err != nil || r["temperature"].Value != 61.0 {
		t.Errorf("b1 after the panic: %+v %v", r, err)
	}

	// Batches and single reads taking the same devices' turns at once
	// finish: turns are taken in name order.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				var err error
				if i%2 == 0 {
					_, err = m.GetMany(ctx, map[string][]string{"b2": {"temperature"}, "b1": {"temperature"}})
				} else {
					_, err = m.Get(ctx, "b2", []string{"temperature"})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// readCounting counts the simulated driver's reads.
type readCounting struct {
	*sim.Driver
	reads atomic.Int32
}

func (r *readCounting) ReadProperties(ctx context.Context, dev string, ids []string) (map[string]device.Reading, error) {
	r.reads.Add(1)
	return r.Driver.ReadProperties(ctx, dev, ids)
}

// TestDetach: a detached device is gone from the manager and its driver,
// its polls stop, a second Detach says so, and the name can be attached
// again.
func TestDetach(t *testing.T) {
	ctx := context.Background()
	drv := &readCounting{Driver: sim.New()}
	m, _ := newManager(t, nil, drv)
	attach(t, m, "b1", `{"values": {"setpoint": 50}}`, device.PollGroup{Properties: []string{"setpoint"}, Every: 5 * time.Millisecond})
	testenv.Eventually(t, "polls", func() bool { return drv.reads.Load() >= 2 })
	if err := m.Detach(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, "b1", nil); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("Get after Detach: %v, want ErrUnknownDevice", err)
	}
	if _, err := drv.Driver.ReadProperties(ctx, "b1", []string{"setpoint"}); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("the driver still serves b1: %v", err)
	}
	if slices.Contains(m.Devices(), "b1") {
		t.Errorf("devices after Detach: %v", m.Devices())
	}
	reads := drv.reads.Load()
	time.Sleep(50 * time.Millisecond) // ten poll intervals
	if k := drv.reads.Load() - reads; k != 0 {
		t.Errorf("%d polls after Detach", k)
	}
	if err := m.Detach(ctx, "b1"); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("a second Detach: %v, want ErrUnknownDevice", err)
	}
	attach(t, m, "b1", `{"values": {"setpoint": 70}}`)
	if got, err := m.Get(ctx, "b1", []string{"setpoint"}); err != nil || got["setpoint"].Value != int64(70) {
		t.Errorf("b1 attached again: %+v %v", got, err)
	}
}

// TestEvents: an event a driver raises is checked against the model and
// published with its output in the model's types; one outside the model,
// or for a device not attached, is refused and nothing is published.
func TestEvents(t *testing.T) {
	ctx := context.Background()
	drv := sim.New()
	m, n := newManager(t, nil, drv)
	attach(t, m, "b1", `{}`)
	if err := drv.Raise(ctx, "b1", "overheat", map[string]any{"temperature": json.Number("131.5")}); err != nil {
		t.Fatal(err)
	}
	events := n.of(device.EventNotice, "b1")
	if len(events) != 1 || events[0].Event != "overheat" || events[0].Values["temperature"] != 131.5 || events[0].Time.IsZero() {
		t.Fatalf("event notices %+v", events)
	}
	for _, bad := range []struct {
		event string
		out   map[string]any
		says  string
	}{
		{"overheat", map[string]any{"temperature": 500.0}, "events.overheat.outputData.temperature: 500 above max 200"},
		{"overheat", map[string]any{"temperature": "hot"}, "events.overheat.outputData.temperature"},
		{"meltdown", nil, "events.meltdown: not in the model"},
	} {
		if err := drv.Raise(ctx, "b1", bad.event, bad.out); !errors.Is(err, device.ErrInvalidValue) || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("Raise %s %v: %v, want an error naming %s", bad.event, bad.out, err, bad.says)
		}
	}
	if k := len(n.of(device.EventNotice, "b1")); k != 1 {
		t.Errorf("%d event notices after refused events", k)
	}
	if err := drv.Raise(ctx, "ghost", "overheat", nil); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("an event of an unknown device: %v", err)
	}
}

// TestCloseReturnsByItsDeadline: a driver call that ignores its context
// does not hold Close past Close's own; the error says what was left.
func TestCloseReturnsByItsDeadline(t *testing.T) {
	drv := &faulty{Driver: sim.New(), bad: "stuck", mode: "block", release: make(chan struct{})}
	defer close(drv.release) // the stuck call ends with the test
	m := device.NewManager(&device.ManagerOptions{CallTimeout: 50 * time.Millisecond, Publish: (&notices{}).publish})
	if err := m.AddDriver(context.Background(), "sim", drv, nil); err != nil {
		t.Fatal(err)
	}
	attach(t, m, "stuck", `{}`)
	if _, err := m.Get(context.Background(), "stuck", nil); err == nil {
		t.Fatal("a call to the stuck device succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ctx) }()
	select {
	case err := <-closed:
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "left") {
			t.Fatalf("Close: %v, want its deadline's error saying a call was left", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still blocked 10 s after its 200 ms deadline")
	}
}

// TestUpdate: Update hands the driver the new model and configuration and
// checks every call after it against the new model; the shadow forgets
// properties the model dropped; the poll groups are replaced. A refused
// update (a bad model or poll group, a driver that says no, a device not
// attached) leaves the device as it was.
func TestUpdate(t *testing.T) {
	ctx := context.Background()
	drv := &readCounting{Driver: sim.New()}
	m, _ := newManager(t, nil, drv)
	attach(t, m, "b1", `{"values": {"setpoint": 50, "mode": 1}}`, device.PollGroup{Properties: []string{"setpoint"}, Every: time.Hour})
	if _, err := m.Set(ctx, "b1", map[string]any{"mode": 2.0}); err != nil {
		t.Fatal(err)
	}

	// Without "mode", and the set point may go to 100 in steps of 5.
	next := *boiler(t)
	next.Properties = slices.DeleteFunc(slices.Clone(next.Properties), func(p device.Property) bool { return p.Identifier == "mode" })
	for i, p := range next.Properties {
		if p.Identifier == "setpoint" {
			p.Type.Max = new(float64)
			*p.Type.Max = 100
			next.Properties[i] = p
		}
	}
	dev := device.Device{Name: "b1", Model: &next, Config: json.RawMessage(`{"values": {"setpoint": 55}}`)}
	for _, tc := range []struct {
		dev  device.Device
		poll []device.PollGroup
		err  error
		says string
	}{
		{device.Device{Name: "b1"}, nil, device.ErrInvalidModel, "no model"},
		{dev, []device.PollGroup{{Properties: []string{"mode"}, Every: time.Second}}, device.ErrUnknownProperty, `"mode"`},
		{device.Device{Name: "b1", Model: &next, Config: json.RawMessage(`{"values": 7}`)}, nil, nil, "updating"},
		{device.Device{Name: "b9", Model: &next}, nil, device.ErrUnknownDevice, "b9"},
	} {
		err := m.Update(ctx, tc.dev, tc.poll)
		if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Update(%s, %v): %v, want %v naming %s", tc.dev.Name, tc.poll, err, tc.err, tc.says)
		}
	}
	if _, err := m.Set(ctx, "b1", map[string]any{"setpoint": 95.0}); err == nil {
		t.Error("after refused updates, the old model's max of 90 no longer holds")
	}
	if sh, _ := m.Shadow("b1"); sh.Properties["mode"].Reported != int64(2) {
		t.Errorf("after refused updates, the shadow lost mode: %+v", sh.Properties)
	}

	if err := m.Update(ctx, dev, []device.PollGroup{{Properties: []string{"setpoint"}, Every: 5 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Set(ctx, "b1", map[string]any{"setpoint": 95.0}); err != nil || res["setpoint"] != nil {
		t.Errorf("Set 95 under the new model: %v %v", res, err)
	}
	if got, err := m.Get(ctx, "b1", []string{"mode"}); err != nil || !errors.Is(got["mode"].Err, device.ErrUnknownProperty) {
		t.Errorf("mode, which the new model lacks: %+v %v", got, err)
	}
	if sh, _ := m.Shadow("b1"); slices.Contains(slices.Collect(maps.Keys(sh.Properties)), "mode") {
		t.Errorf("the shadow keeps mode: %+v", sh.Properties)
	}
	// The new poll group runs (the old one, hourly, would not have).
	reads := drv.reads.Load()
	testenv.Eventually(t, "the new poll group", func() bool { return drv.reads.Load() >= reads+2 })
}

// lifecycle records the simulated driver's Detach and Close calls.
type lifecycle struct {
	*sim.Driver
	mu    sync.Mutex
	calls []string
}

func (l *lifecycle) Detach(ctx context.Context, name string) error {
	l.mu.Lock()
	l.calls = append(l.calls, "detach "+name)
	l.mu.Unlock()
	return l.Driver.Detach(ctx, name)
}

func (l *lifecycle) Close(ctx context.Context) error {
	l.mu.Lock()
	l.calls = append(l.calls, "close")
	l.mu.Unlock()
	return l.Driver.Close(ctx)
}

// TestRemoveDriver: removing a driver detaches its devices (each through
// the driver's Detach), closes it, and leaves other drivers' devices
// alone; its name can then be added again, and removing it twice says so.
func TestRemoveDriver(t *testing.T) {
	ctx := context.Background()
	drv := &lifecycle{Driver: sim.New()}
	m, _ := newManager(t, nil, drv)
	attach(t, m, "b1", `{"values": {"setpoint": 50}}`, device.PollGroup{Properties: []string{"setpoint"}, Every: 5 * time.Millisecond})
	other := sim.New()
	if err := m.AddDriver(ctx, "other", other, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(ctx, "other", device.Device{Name: "o1", Model: boiler(t), Config: json.RawMessage(`{}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveDriver(ctx, "sim"); err != nil {
		t.Fatal(err)
	}
	if got := m.Devices(); !slices.Equal(got, []string{"o1"}) {
		t.Errorf("devices after RemoveDriver: %v, want [o1]", got)
	}
	drv.mu.Lock()
	if want := []string{"detach b1", "close"}; !slices.Equal(drv.calls, want) {
		t.Errorf("the removed driver saw %v, want %v", drv.calls, want)
	}
	drv.mu.Unlock()
	if err := m.Attach(ctx, "sim", device.Device{Name: "b2", Model: boiler(t)}, nil); !errors.Is(err, device.ErrUnknownDriver) {
		t.Errorf("Attach to a removed driver: %v, want ErrUnknownDriver", err)
	}
	if err := m.RemoveDriver(ctx, "sim"); !errors.Is(err, device.ErrUnknownDriver) {
		t.Errorf("a second RemoveDriver: %v, want ErrUnknownDriver", err)
	}
	if _, err := m.Get(ctx, "o1", []string{"setpoint"}); err != nil {
		t.Errorf("the other driver's device: %v", err)
	}
	if err := m.AddDriver(ctx, "sim", sim.New(), nil); err != nil {
		t.Fatal(err)
	}
	attach(t, m, "b1", `{"values": {"setpoint": 70}}`)
	if got, err := m.Get(ctx, "b1", []string{"setpoint"}); err != nil || got["setpoint"].Value != int64(70) {
		t.Errorf("b1 on the driver added again: %+v %v", got, err)
	}
}
