// Package fndriver makes a driver function a device.Driver: a continuous
// function written against the driver API (package fnapi's driver methods,
// spoken by the Node.js and Python edgekit modules) serves devices the
// device manager attaches to it, as an in-process driver would.
//
// The gateway asks the function by invoking it with an fnapi.DriverOp
// (attach, update, detach, get, set, call), so every request is bounded by
// the function's timeout and a request the driver does not answer in time
// gets its instance replaced by the function host. The function tells the
// gateway with calls: driver.hello when it starts, then driver.report,
// driver.event and driver.state for its devices. What it reports is
// checked against each device's thing model; it may speak only of the
// devices attached to it.
//
// A driver process that stops takes its devices offline with it; the one
// the host starts in its place says hello, is given every device again,
// and each comes back online once its attach is answered. One driver's
// process hanging or crashing touches only its own devices.
package fndriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/invoke"
)

// ErrNotDriver: a function called a driver method without being bound as a
// device driver.
var ErrNotDriver = errors.New("not bound as a device driver")

// Set holds the drivers served by functions and answers their calls. It is
// safe for concurrent use.
type Set struct {
	functions invoke.Invoker
	log       *slog.Logger

	mu      sync.Mutex
	drivers map[string]*Driver  // open ones, by function name
	hellos  map[string]instance // the instance of each function that said hello last
}

// instance is a function's instance that said hello: its id names it in
// messages, and its done (closed when it stops) tells it apart from the
// instance that takes its place, which may have the same id.
type instance struct {
	id   string
	done <-chan struct{}
}

// NewSet returns a set whose drivers invoke their functions through
// functions (a function.Host). log may be nil.
func NewSet(functions invoke.Invoker, log *slog.Logger) *Set {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Set{functions: functions, log: log, drivers: map[string]*Driver{}, hellos: map[string]instance{}}
}

// Driver returns a device.Driver served by the function named fn: add it
// to a device.Manager, which opens it, before or after the function
// starts. The function must run continuously, one instance at a time
// (MinInstances and MaxInstances 1): a driver keeps its devices'
// connections in its process. Its configuration is the function's own
// (the config a deployment gives the app, changed live); the config
// Open is given is not used.
func (s *Set) Driver(fn string) *Driver {
	return &Driver{set: s, fn: fn, devices: map[string]*thing{}, stop: make(chan struct{})}
}

// Driver is a device.Driver served by a function.
type Driver struct {
	set *Set
	fn  string

	mu      sync.Mutex
	opened  bool
	closed  bool
	host    device.Host
	devices map[string]*thing
	current <-chan struct{} // the done of the instance that said hello last, while it runs

	stop chan struct{}
	wg   sync.WaitGroup
}

// thing is an attached device with its model as the driver is given it.
type thing struct {
	dev      device.Device
	wire     fnapi.Thing // as the driver is given it
	op       []byte      // its attach op
	declared bool        // the driver told its state since the last attach began
}

var _ device.Driver = (*Driver)(nil)

// Open registers the driver for its function's calls; a function
// instance that said hello already is the driver's from now on.
func (d *Driver) Open(_ context.Context, _ json.RawMessage, host device.Host) error {
	s := d.set
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.opened {
		return fmt.Errorf("driver function %s: opened twice", d.fn)
	}
	if _, taken := s.drivers[d.fn]; taken {
		return fmt.Errorf("driver function %s: another driver is served by it already", d.fn)
	}
	d.mu.Lock()
	d.opened, d.host = true, host
	d.mu.Unlock()
	s.drivers[d.fn] = d
	if in, ok := s.hellos[d.fn]; ok {
		d.adopt(in)
	}
	return nil
}

// Attach gives the device to the driver. A driver that is not running
// (crashed, starting slowly) gets it when it says hello: the device stays
// offline until then. A driver that refuses the device fails the Attach.
func (d *Driver) Attach(ctx context.Context, dev device.Device) error {
	return d.attach(ctx, dev, fnapi.OpAttach)
}

// Update gives the driver a device's new model or config.
func (d *Driver) Update(ctx context.Context, dev device.Device) error {
	return d.attach(ctx, dev, fnapi.OpUpdate)
}

func (d *Driver) attach(ctx context.Context, dev device.Device, op string) error {
	tsl, err := dev.Model.MarshalTSL()
	if err != nil {
		return fmt.Errorf("device %s: its model: %w", dev.Name, err)
	}
	wire := fnapi.Thing{Name: dev.Name, TSL: tsl, Config: dev.Config, Labels: dev.Labels}
	body, err := json.Marshal(fnapi.DriverOp{Op: op, Device: dev.Name, Thing: &wire})
	if err != nil {
		return fmt.Errorf("device %s: %w", dev.Name, err)
	}
	t := &thing{dev: dev, wire: wire, op: body}
	d.mu.Lock()
	if d.closed || !d.opened {
		d.mu.Unlock()
		return fmt.Errorf("driver function %s: %w", d.fn, device.ErrClosed)
	}
	old := d.devices[dev.Name]
	d.devices[dev.Name] = t
	d.mu.Unlock()
	err = d.sendAttach(ctx, t)
	var fe *invoke.Error
	if errors.As(err, &fe) || ctx.Err() != nil {
		d.mu.Lock()
		if d.devices[dev.Name] == t {
			if old != nil {
				d.devices[dev.Name] = old
			} else {
				delete(d.devices, dev.Name)
			}
		}
		d.mu.Unlock()
		return err
	}
	if err != nil {
		// The device stays bound, offline until the driver has it: it is
		// given it when the driver says hello.
		if errors.Is(err, invoke.ErrNotFound) {
			// Its function is not deployed yet (a deployment binds a
			// driver app's devices first).
			d.set.log.Debug("fndriver: a device for a driver not started yet", "function", d.fn, "device", dev.Name)
		} else {
			d.set.log.Warn("fndriver: the driver did not take a device now; it is given it when it says hello", "function", d.fn, "device", dev.Name, "err", err)
		}
		d.mu.Lock()
		host := d.host
		d.mu.Unlock()
		host.SetState(dev.Name, device.Offline, fmt.Errorf("driver function %s has not taken it: %w", d.fn, err))
	}
	return nil
}

// sendAttach asks the driver to serve t and brings t online once it has,
// unless the driver told t's state meanwhile.
func (d *Driver) sendAttach(ctx context.Context, t *thing) error {
	d.mu.Lock()
	t.declared = false
	d.mu.Unlock()
	if _, err := d.ask(ctx, t.dev.Name, t.op); err != nil {
		return err
	}
	d.mu.Lock()
	current, declared, host := d.devices[t.dev.Name] == t && !d.closed, t.declared, d.host
	d.mu.Unlock()
	if current && !declared {
		host.SetState(t.dev.Name, device.Online, nil)
	}
	return nil
}

// Detach tells the driver to serve the device no more; from now on nothing
// it reports of it is taken.
func (d *Driver) Detach(ctx context.Context, name string) error {
	d.mu.Lock()
	_, ok := d.devices[name]
	delete(d.devices, name)
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("device %s: %w", name, device.ErrUnknownDevice)
	}
	body, _ := json.Marshal(fnapi.DriverOp{Op: fnapi.OpDetach, Device: name})
	if _, err := d.ask(ctx, name, body); err != nil {
		d.set.log.Warn("fndriver: the driver did not take a detach", "function", d.fn, "device", name, "err", err)
	}
	return nil
}

// device returns the attached device name.
func (d *Driver) device(name string) (device.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || !d.opened {
		return device.Device{}, fmt.Errorf("driver function %s: %w", d.fn, device.ErrClosed)
	}
	t, ok := d.devices[name]
	if !ok {
		return device.Device{}, fmt.Errorf("device %s: %w", name, device.ErrUnknownDevice)
	}
	return t.dev, nil
}

// ReadProperties asks the driver for the properties ids (none: all of the
// model's). An id the model lacks is answered ErrUnknownProperty without
// asking; a value that does not fit the model is that property's error.
func (d *Driver) ReadProperties(ctx context.Context, name string, ids []string) (map[string]device.Reading, error) {
	dev, err := d.device(name)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		for _, p := range dev.Model.Properties {
			ids = append(ids, p.Identifier)
		}
	}
	out := make(map[string]device.Reading, len(ids))
	var ask []string
	for _, id := range ids {
		if _, ok := dev.Model.Property(id); !ok {
			out[id] = device.Reading{Err: fmt.Errorf("device %s: property %s: %w", name, id, device.ErrUnknownProperty)}
		} else if !slices.Contains(ask, id) {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	body, _ := json.Marshal(fnapi.DriverOp{Op: fnapi.OpGet, Device: name, Properties: ask})
	raw, err := d.ask(ctx, name, body)
	if err != nil {
		return nil, err
	}
	var ans fnapi.DriverGetAnswer
	if err := decode(raw, &ans); err != nil {
		return nil, fmt.Errorf("device %s: the driver's answer to a read: %w: %w", name, device.ErrOffline, err)
	}
	now := time.Now()
	for _, id := range ask {
		r := device.Reading{Time: now}
		if e, ok := ans.Errors[id]; ok {
			r.Err = propertyError(name, id, e)
		} else if v, ok := ans.Properties[id]; !ok {
			r.Err = fmt.Errorf("device %s: property %s: the driver answered no value: %w", name, id, device.ErrUnknownProperty)
		} else if r.Value, err = value(v); err == nil {
			r.Value, err = dev.Model.PropertyValue(id, r.Value)
		}
		if err != nil {
			r.Value, r.Err = nil, fmt.Errorf("device %s: the driver's value: %w", name, err)
			err = nil
		}
		out[id] = r
	}
	return out, nil
}

// WriteProperties asks the driver to write values. A property the model
// lacks or holds read-only is refused without asking.
func (d *Driver) WriteProperties(ctx context.Context, name string, values map[string]any) (map[string]error, error) {
	dev, err := d.device(name)
	if err != nil {
		return nil, err
	}
	out := make(map[string]error, len(values))
	send := map[string]json.RawMessage{}
	for id, v := range values {
		p, ok := dev.Model.Property(id)
		switch {
		case !ok:
			out[id] = fmt.Errorf("device %s: property %s: %w", name, id, device.ErrUnknownProperty)
		case p.Access == device.ReadOnly:
			out[id] = fmt.Errorf("device %s: property %s: %w", name, id, device.ErrReadOnly)
		default:
			b, err := json.Marshal(v)
			if err != nil {
				out[id] = fmt.Errorf("device %s: property %s: %w: %w", name, id, device.ErrInvalidValue, err)
				continue
			}
			send[id] = b
		}
	}
	if len(send) == 0 {
		return out, nil
	}
	body, _ := json.Marshal(fnapi.DriverOp{Op: fnapi.OpSet, Device: name, Values: send})
	raw, err := d.ask(ctx, name, body)
	if err != nil {
		return nil, err
	}
	var ans fnapi.DriverSetAnswer
	if err := decode(raw, &ans); err != nil {
		return nil, fmt.Errorf("device %s: the driver's answer to a write: %w: %w", name, device.ErrOffline, err)
	}
	for id := range send {
		out[id] = nil
		if e, ok := ans.Errors[id]; ok {
			out[id] = propertyError(name, id, e)
		}
	}
	return out, nil
}

// CallService asks the driver to call a service with checked input; its
// output is checked against the model.
func (d *Driver) CallService(ctx context.Context, name, service string, in map[string]any) (map[string]any, error) {
	dev, err := d.device(name)
	if err != nil {
		return nil, err
	}
	if _, ok := dev.Model.Service(service); !ok {
		return nil, fmt.Errorf("device %s: service %s: %w", name, service, device.ErrUnknownService)
	}
	input := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		if input[k], err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("device %s: service %s: input %s: %w: %w", name, service, k, device.ErrInvalidValue, err)
		}
	}
	body, _ := json.Marshal(fnapi.DriverOp{Op: fnapi.OpCall, Device: name, Service: service, Input: input})
	raw, err := d.ask(ctx, name, body)
	if err != nil {
		return nil, err
	}
	var ans struct {
		Output map[string]any `json:"output"`
	}
	if err := decode(raw, &ans); err != nil {
		return nil, fmt.Errorf("device %s: service %s: the driver's answer: %w: %w", name, service, device.ErrOffline, err)
	}
	out, err := dev.Model.ServiceOutput(service, ans.Output)
	if err != nil {
		return nil, fmt.Errorf("device %s: the driver's output: %w", name, err)
	}
	return out, nil
}

// ask invokes the driver with op and returns its answer. The driver's own
// refusal comes back as the device error its type names; a driver that
// cannot be reached (not running, stuck, throttled) as ErrOffline.
func (d *Driver) ask(ctx context.Context, name string, op []byte) ([]byte, error) {
	resp, err := d.set.functions.Invoke(ctx, d.fn, invoke.Request{Payload: op, Source: map[string]string{"type": fnapi.DriverSource}})
	if err == nil {
		return resp.Payload, nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return nil, fmt.Errorf("device %s: %w", name, cerr)
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < time.Millisecond {
		// The deadline passed (the host's timer for it fired before
		// ctx's), or is within the millisecond the native protocol
		// carries deadlines in (the driver's own context ended): the
		// request ended by it.
		return nil, fmt.Errorf("device %s: %w: %w", name, context.DeadlineExceeded, err)
	}
	var fe *invoke.Error
	if errors.As(err, &fe) {
		if kind := deviceKind(fe.Type); kind != nil {
			return nil, fmt.Errorf("device %s: %w: %w", name, kind, err)
		}
		return nil, fmt.Errorf("device %s: %w", name, err)
	}
	return nil, fmt.Errorf("device %s: driver function %s: %w: %w", name, d.fn, device.ErrOffline, err)
}

// Close stops taking the function's calls: nothing it reports is taken
// after Close returns. The function itself runs on; its host stops it.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	opened := d.opened
	d.mu.Unlock()
	if opened {
		d.set.mu.Lock()
		if d.set.drivers[d.fn] == d {
			delete(d.set.drivers, d.fn)
		}
		d.set.mu.Unlock()
	}
	close(d.stop)
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("driver function %s: closing: %w", d.fn, ctx.Err())
	}
}

// Serve answers a driver method (fnapi.Driver*) a function called; the
// gateway's call handler (package edge/fncall) hands them over.
func (s *Set) Serve(ctx context.Context, c *function.Call) ([]byte, error) {
	if c.InstanceDone == nil {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: driver methods travel over the native protocol", c.Method)
	}
	if c.Method == fnapi.DriverHello {
		return s.hello(c)
	}
	s.mu.Lock()
	d := s.drivers[c.Function.Name]
	s.mu.Unlock()
	if d == nil {
		return nil, fnapi.Errorf(fnapi.ErrForbidden, "%s: function %s is %v", c.Method, c.Function.Name, ErrNotDriver)
	}
	d.mu.Lock()
	closed, current, host := d.closed, d.current, d.host
	d.mu.Unlock()
	switch {
	case closed:
		return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: the driver is closed", c.Method)
	case current != c.InstanceDone:
		return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: instance %s is not the driver's (it says hello first, or another took its place)", c.Method, c.Instance)
	}
	switch c.Method {
	case fnapi.DriverReport:
		var a fnapi.DriverReportArgs
		if err := c.DecodeArgs(&a); err != nil {
			return nil, err
		}
		dev, err := d.device(a.Device)
		if err != nil {
			return nil, callError(c.Method, err)
		}
		good := make(map[string]any, len(a.Properties))
		var ans fnapi.DriverReportAnswer
		for id, raw := range a.Properties {
			v, err := value(raw)
			if err == nil {
				v, err = dev.Model.PropertyValue(id, v)
			}
			if err != nil {
				if ans.Refused == nil {
					ans.Refused = map[string]string{}
				}
				ans.Refused[id] = err.Error()
				continue
			}
			good[id] = v
		}
		if len(good) > 0 {
			if err := host.Report(ctx, a.Device, good, at(a.Time)); err != nil {
				return nil, callError(c.Method, err)
			}
		}
		return json.Marshal(ans)
	case fnapi.DriverEvent:
		var a fnapi.DriverEventArgs
		if err := c.DecodeArgs(&a); err != nil {
			return nil, err
		}
		if _, err := d.device(a.Device); err != nil {
			return nil, callError(c.Method, err)
		}
		out, err := fnapi.DecodeValues(a.Output)
		if err != nil {
			return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: output.%v", c.Method, err)
		}
		if err := host.Emit(ctx, a.Device, a.Event, out, at(a.Time)); err != nil {
			return nil, callError(c.Method, err)
		}
		return nil, nil
	case fnapi.DriverState:
		var a fnapi.DriverStateArgs
		if err := c.DecodeArgs(&a); err != nil {
			return nil, err
		}
		st := device.State(a.State)
		if st != device.Online && st != device.Offline && st != device.Degraded {
			return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: state %q (want online, offline or degraded)", c.Method, a.State)
		}
		d.mu.Lock()
		t, ok := d.devices[a.Device]
		if ok {
			t.declared = true
		}
		d.mu.Unlock()
		if !ok {
			return nil, callError(c.Method, fmt.Errorf("device %s: %w", a.Device, device.ErrUnknownDevice))
		}
		var cause error
		if a.Cause != "" {
			cause = errors.New(a.Cause)
		}
		host.SetState(a.Device, st, cause)
		return nil, nil
	}
	return nil, fnapi.Errorf(fnapi.ErrBadRequest, "unknown method %q", c.Method)
}

// hello records c's instance as its function's driver process, and gives
// it to the driver served by that function, if one is open. The answer is
// the function's configuration.
func (s *Set) hello(c *function.Call) ([]byte, error) {
	in := instance{id: c.Instance, done: c.InstanceDone}
	s.mu.Lock()
	if old, ok := s.hellos[c.Function.Name]; ok && old.done == in.done {
		s.mu.Unlock()
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: instance %s said hello already", c.Method, c.Instance)
	}
	s.hellos[c.Function.Name] = in
	ans := fnapi.DriverHelloAnswer{Config: c.Function.Config, Devices: []fnapi.Thing{}}
	if d := s.drivers[c.Function.Name]; d != nil {
		for _, t := range d.adopt(in) {
			ans.Devices = append(ans.Devices, t.wire)
		}
	}
	s.mu.Unlock()
	if len(ans.Config) == 0 {
		ans.Config = json.RawMessage("null")
	}
	slices.SortFunc(ans.Devices, func(a, b fnapi.Thing) int { return strings.Compare(a.Name, b.Name) })
	return json.Marshal(ans)
}

// adopt makes in the driver's instance: the devices go offline (those of
// an instance before it are gone with it) and are attached again on a
// goroutine the driver owns; in's end takes them offline. It returns the
// devices bound now. The set's lock is held.
func (d *Driver) adopt(in instance) []*thing {
	select {
	case <-in.done:
		delete(d.set.hellos, d.fn) // it stopped before it was adopted
		return nil
	default:
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	replaced := d.current != nil
	d.current = in.done
	things := slices.Collect(maps.Values(d.devices))
	host := d.host
	d.wg.Add(2)
	d.mu.Unlock()
	if replaced {
		for _, t := range things {
			host.SetState(t.dev.Name, device.Offline, errors.New("the driver's process was replaced"))
		}
	}
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-d.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		for _, t := range things {
			// The instance says hello while it starts, before its host
			// may have the function to invoke: until then, wait and ask
			// again.
			wait := 5 * time.Millisecond
			err := d.sendAttach(ctx, t)
			for errors.Is(err, invoke.ErrNotFound) {
				select {
				case <-ctx.Done():
					return
				case <-in.done:
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, time.Second)
				err = d.sendAttach(ctx, t)
			}
			if err != nil && ctx.Err() == nil {
				d.set.log.Warn("fndriver: the driver refused a device it served before", "function", d.fn, "device", t.dev.Name, "err", err)
			}
		}
	}()
	go func() {
		defer d.wg.Done()
		select {
		case <-d.stop:
			return
		case <-in.done:
		}
		d.mu.Lock()
		gone := d.current == in.done && !d.closed
		if gone {
			d.current = nil
		}
		things := slices.Collect(maps.Values(d.devices))
		d.mu.Unlock()
		if gone {
			for _, t := range things {
				host.SetState(t.dev.Name, device.Offline, errors.New("the driver's process stopped"))
			}
		}
	}()
	return things
}

// decode reads a driver's answer, numbers as json.Number.
func decode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}

// value reads a value the driver gave.
func value(raw json.RawMessage) (any, error) {
	v, err := fnapi.DecodeValue(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", device.ErrInvalidValue, err)
	}
	return v, nil
}

func at(ms int64) time.Time {
	if ms == 0 {
		return time.Now()
	}
	return time.UnixMilli(ms)
}

// kinds pairs the device errors with the types a driver's answer names
// them by.
var kinds = [...]struct{ wire, err error }{
	{fnapi.ErrUnknownDevice, device.ErrUnknownDevice}, {fnapi.ErrUnknownProperty, device.ErrUnknownProperty},
	{fnapi.ErrUnknownService, device.ErrUnknownService}, {fnapi.ErrInvalidValue, device.ErrInvalidValue},
	{fnapi.ErrReadOnly, device.ErrReadOnly}, {fnapi.ErrOffline, device.ErrOffline},
}

// deviceKind is the device error of a wire type, or nil.
func deviceKind(typ string) error {
	for _, k := range kinds {
		if k.wire.Error() == typ {
			return k.err
		}
	}
	return nil
}

// propertyError is the driver's reason one property failed.
func propertyError(dev, id string, e *fnapi.Error) error {
	if e == nil {
		e = &fnapi.Error{Type: "Error", Message: "no reason given"}
	}
	if kind := deviceKind(e.Type); kind != nil {
		return fmt.Errorf("device %s: property %s: %w: %s", dev, id, kind, e.Message)
	}
	return fmt.Errorf("device %s: property %s: %w", dev, id, e)
}

// callError is the device manager's refusal of a driver's call, as the
// driver hears it.
func callError(method string, err error) error { return fncall.DeviceError(method, err) }
