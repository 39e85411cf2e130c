// Package sim is a simulated device driver: its devices keep their property
// values in memory, drift their numeric read-only properties and report
// them on an interval, answer services by echoing input parameters into
// output parameters of the same name, raise events when told (Raise), and
// can be made slow or failing.
// Examples and tests use it; it passes device/devicetest like any driver.
//
// Device config (device.Device.Config), every field optional:
//
//	{
//	  "interval": "1s",                 // report drifting values this often; default none
//	  "latency": "5ms",                 // every call takes this long (ctx ends it sooner)
//	  "values": {"temperature": 21.5},  // initial values; others start at their type's zero (or min)
//	  "failing": ["humidity"]           // reads of these properties fail
//	}
//
// Driver config (Open), optional: the devices Discover finds, as a scan of
// a simulated network would, each with a TSL model and a device config:
//
//	{"discoverable": [{"name": "boiler-2", "model": {…TSL…}, "config": {"interval": "1s"}}]}
package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/edgekit/edgekit/device"
)

// Config is a simulated device's configuration (see the package doc).
type Config struct {
	Interval string         `json:"interval,omitempty"`
	Latency  string         `json:"latency,omitempty"`
	Values   map[string]any `json:"values,omitempty"`
	Failing  []string       `json:"failing,omitempty"`
}

// DriverConfig is the simulated driver's configuration (see the package
// doc).
type DriverConfig struct {
	Discoverable []Discoverable `json:"discoverable,omitempty"`
}

// Discoverable is a device Discover finds.
type Discoverable struct {
	Name   string          `json:"name"`
	Model  json.RawMessage `json:"model,omitempty"` // TSL; none: the finder does not know it
	Config json.RawMessage `json:"config,omitempty"`
}

// Driver is the simulated driver. The zero value is not usable: use New.
type Driver struct {
	mu           sync.Mutex
	host         device.Host
	devices      map[string]*simDevice
	discoverable []device.Device
	closed       bool
	wg           sync.WaitGroup
}

var (
	_ device.Discoverer  = (*Driver)(nil)
	_ device.BatchReader = (*Driver)(nil)
)

type simDevice struct {
	dev      device.Device
	latency  time.Duration
	interval time.Duration
	failing  map[string]bool
	stop     chan struct{}

	mu     sync.Mutex
	values map[string]any
}

// New returns a simulated driver.
func New() *Driver { return &Driver{devices: make(map[string]*simDevice)} }

// Open records the host.
func (d *Driver) Open(_ context.Context, config json.RawMessage, host device.Host) error {
	var c DriverConfig
	if len(bytes.TrimSpace(config)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return fmt.Errorf("sim: driver config: %w", err)
		}
	}
	var found []device.Device
	for i, f := range c.Discoverable {
		if f.Name == "" {
			return fmt.Errorf("sim: driver config: discoverable[%d].name is empty", i)
		}
		dev := device.Device{Name: f.Name, Config: f.Config}
		if len(f.Model) > 0 {
			m, err := device.ParseTSL(f.Model)
			if err != nil {
				return fmt.Errorf("sim: driver config: discoverable[%d].model: %w", i, err)
			}
			dev.Model = m
		}
		found = append(found, dev)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.host, d.discoverable = host, found
	return nil
}

// Discover finds the devices of the driver config's discoverable list,
// except those attached.
func (d *Driver) Discover(ctx context.Context, found func(device.Device)) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("sim: discover: %w", device.ErrClosed)
	}
	var out []device.Device
	for _, dev := range d.discoverable {
		if _, attached := d.devices[dev.Name]; !attached {
			out = append(out, dev)
		}
	}
	d.mu.Unlock()
	for _, dev := range out {
		if err := ctx.Err(); err != nil {
			return err
		}
		found(dev)
	}
	return nil
}

func parse(dev device.Device) (*simDevice, error) {
	var c Config
	if len(bytes.TrimSpace(dev.Config)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(dev.Config))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("sim: device %s: config: %w", dev.Name, err)
		}
	}
	s := &simDevice{dev: dev, failing: map[string]bool{}, values: map[string]any{}, stop: make(chan struct{})}
	for field, v := range map[string]struct {
		text string
		to   *time.Duration
	}{"interval": {c.Interval, &s.interval}, "latency": {c.Latency, &s.latency}} {
		if v.text == "" {
			continue
		}
		dur, err := time.ParseDuration(v.text)
		if err != nil || dur < 0 {
			return nil, fmt.Errorf("sim: device %s: config.%s: %q is not a duration", dev.Name, field, v.text)
		}
		*v.to = dur
	}
	for _, p := range c.Failing {
		s.failing[p] = true
	}
	for _, p := range dev.Model.Properties {
		v := zero(p.Type)
		if given, ok := c.Values[p.Identifier]; ok {
			var err error
			if v, err = p.Type.Value("config.values."+p.Identifier, given); err != nil {
				return nil, fmt.Errorf("sim: device %s: %w", dev.Name, err)
			}
		}
		s.values[p.Identifier] = v
	}
	return s, nil
}

// zero is a type's starting value: its minimum, first enum value, or zero.
func zero(t device.DataType) any {
	switch t.Kind {
	case device.Int, device.Enum:
		if t.Kind == device.Enum && len(t.Values) > 0 {
			return slices.Min(slices.Collect(maps.Keys(t.Values)))
		}
		if t.Min != nil {
			return int64(*t.Min)
		}
		return int64(0)
	case device.Float, device.Double:
		if t.Min != nil {
			return *t.Min
		}
		return 0.0
	case device.Bool:
		return false
	case device.Text:
		return ""
	case device.Date:
		return time.Unix(0, 0).UTC()
	case device.Struct:
		m := map[string]any{}
		for _, f := range t.Fields {
			m[f.Identifier] = zero(f.Type)
		}
		return m
	default:
		return []any{}
	}
}

// Attach adds a device and starts its reports.
func (d *Driver) Attach(_ context.Context, dev device.Device) error {
	s, err := parse(dev)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("sim: attach %s: %w", dev.Name, device.ErrClosed)
	}
	if _, ok := d.devices[dev.Name]; ok {
		return fmt.Errorf("sim: device %s is attached already", dev.Name)
	}
	d.start(s)
	return nil
}

// start registers s and runs its reports; d.mu is held.
func (d *Driver) start(s *simDevice) {
	d.devices[s.dev.Name] = s
	d.host.SetState(s.dev.Name, device.Online, nil)
	if s.interval > 0 {
		d.wg.Add(1)
		go d.report(s)
	}
}

// Update replaces a device's model and config, keeping values that still
// fit.
func (d *Driver) Update(ctx context.Context, dev device.Device) error {
	s, err := parse(dev)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, ok := d.devices[dev.Name]
	if !ok {
		return fmt.Errorf("sim: update %s: %w", dev.Name, device.ErrUnknownDevice)
	}
	close(old.stop)
	old.mu.Lock()
	for id, v := range old.values {
		if c, err := dev.Model.PropertyValue(id, v); err == nil {
			s.values[id] = c
		}
	}
	old.mu.Unlock()
	d.start(s)
	return nil
}

// Detach removes a device.
func (d *Driver) Detach(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.devices[name]
	if !ok {
		return fmt.Errorf("sim: detach %s: %w", name, device.ErrUnknownDevice)
	}
	delete(d.devices, name)
	close(s.stop)
	return nil
}

// report drifts the numeric read-only properties and reports them.
func (d *Driver) report(s *simDevice) {
	defer d.wg.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			values := s.drift()
			if len(values) > 0 {
				_ = d.host.Report(ctx, s.dev.Name, values, now)
			}
		}
	}
}

// drift moves each numeric read-only property a little, within its limits.
func (s *simDevice) drift() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]any{}
	for _, p := range s.dev.Model.Properties {
		if p.Access != device.ReadOnly {
			continue
		}
		switch v := s.values[p.Identifier].(type) {
		case float64:
			next := v + (rand.Float64()-0.5)*0.2
			if p.Type.Min != nil {
				next = max(next, *p.Type.Min)
			}
			if p.Type.Max != nil {
				next = min(next, *p.Type.Max)
			}
			s.values[p.Identifier] = next
			out[p.Identifier] = next
		case int64:
			out[p.Identifier] = v
		}
	}
	return out
}

// device returns the attached device, after its latency.
func (d *Driver) device(ctx context.Context, name string) (*simDevice, error) {
	d.mu.Lock()
	s, ok := d.devices[name]
	closed := d.closed
	d.mu.Unlock()
	switch {
	case closed:
		return nil, fmt.Errorf("sim: %w", device.ErrClosed)
	case !ok:
		return nil, fmt.Errorf("sim: device %s: %w", name, device.ErrUnknownDevice)
	}
	if s.latency > 0 {
		t := time.NewTimer(s.latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("sim: device %s: %w", name, ctx.Err())
		}
	}
	return s, ctx.Err()
}

// ReadProperties reads values from memory.
func (d *Driver) ReadProperties(ctx context.Context, name string, ids []string) (map[string]device.Reading, error) {
	s, err := d.device(ctx, name)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]device.Reading, len(ids))
	for _, id := range ids {
		v, ok := s.values[id]
		switch {
		case !ok:
			out[id] = device.Reading{Err: fmt.Errorf("sim: %s.%s: %w", name, id, device.ErrUnknownProperty)}
		case s.failing[id]:
			out[id] = device.Reading{Err: fmt.Errorf("sim: %s.%s: simulated read failure", name, id)}
		default:
			out[id] = device.Reading{Value: v, Time: now}
		}
	}
	return out, nil
}

// ReadBatch reads several devices, one after the other (each with its
// latency).
func (d *Driver) ReadBatch(ctx context.Context, reads map[string][]string) (map[string]map[string]device.Reading, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("sim: read batch: %w", device.ErrClosed)
	}
	out := make(map[string]map[string]device.Reading, len(reads))
	for name, ids := range reads {
		got, err := d.ReadProperties(ctx, name, ids)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			got = make(map[string]device.Reading, len(ids))
			for _, id := range ids {
				got[id] = device.Reading{Err: err}
			}
		}
		out[name] = got
	}
	return out, nil
}

// Raise has a simulated device raise an event, as a real one pushes it:
// the driver hands it to its Host (which checks it against the model).
func (d *Driver) Raise(ctx context.Context, name, event string, out map[string]any) error {
	if _, err := d.device(ctx, name); err != nil {
		return err
	}
	d.mu.Lock()
	host := d.host
	d.mu.Unlock()
	return host.Emit(ctx, name, event, out, time.Now())
}

// WriteProperties stores values.
func (d *Driver) WriteProperties(ctx context.Context, name string, values map[string]any) (map[string]error, error) {
	s, err := d.device(ctx, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]error, len(values))
	for id, v := range values {
		p, ok := s.dev.Model.Property(id)
		switch {
		case !ok:
			out[id] = fmt.Errorf("sim: %s.%s: %w", name, id, device.ErrUnknownProperty)
		case p.Access != device.ReadWrite:
			out[id] = fmt.Errorf("sim: %s.%s: %w", name, id, device.ErrReadOnly)
		default:
			s.values[id] = v
			out[id] = nil
		}
	}
	return out, nil
}

// CallService answers with the output parameters: an input of the same
// name echoed, else the type's zero.
func (d *Driver) CallService(ctx context.Context, name, service string, in map[string]any) (map[string]any, error) {
	s, err := d.device(ctx, name)
	if err != nil {
		return nil, err
	}
	svc, ok := s.dev.Model.Service(service)
	if !ok {
		return nil, fmt.Errorf("sim: %s.%s: %w", name, service, device.ErrUnknownService)
	}
	out := map[string]any{}
	for _, p := range svc.Output {
		if v, ok := in[p.Identifier]; ok {
			out[p.Identifier] = v
		} else {
			out[p.Identifier] = zero(p.Type)
		}
	}
	return out, nil
}

// Close stops every device's reports.
func (d *Driver) Close(context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	devices := maps.Clone(d.devices)
	clear(d.devices)
	d.mu.Unlock()
	for _, s := range devices {
		close(s.stop)
	}
	d.wg.Wait()
	return nil
}
