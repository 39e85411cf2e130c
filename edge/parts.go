package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/trigger"
)

// The parts, for firmware that wants more than the options give. Each is
// nil until Ready is closed, and nil when not configured.

// Bus is the in-process bus.
func (g *Gateway) Bus() bus.Bus { return g.started().bus }

// Broker is the local Mosquitto.
func (g *Gateway) Broker() *broker.Broker {
	return g.started().broker
}

// Upstream is the connection to the upstream broker.
func (g *Gateway) Upstream() *mqttbus.Client {
	return g.started().upstream
}

// State is the state store.
func (g *Gateway) State() *state.Store {
	return g.started().state
}

// Packages is the function package store.
func (g *Gateway) Packages() *codepkg.Store {
	return g.started().packages
}

// Functions is the function host.
func (g *Gateway) Functions() *function.Host {
	return g.started().functions
}

// Triggers is the trigger set.
func (g *Gateway) Triggers() *trigger.Set {
	return g.started().triggers
}

// Devices is the device manager.
func (g *Gateway) Devices() *device.Manager {
	return g.started().devices
}

// Containers is the container manager.
func (g *Gateway) Containers() *container.Manager {
	return g.started().containers
}

// Reconciler applies the gateway's deployments.
func (g *Gateway) Reconciler() *reconcile.Reconciler {
	return g.started().reconciler
}

// APIURL is the local API's base URL ("" when it listens on no TCP
// address).
func (g *Gateway) APIURL() string { return g.started().apiURL }

// started returns the parts once Ready is closed, none before.
func (g *Gateway) started() *parts {
	select {
	case <-g.ready:
		return &g.parts
	default:
		return &parts{}
	}
}

// withBuiltins gives the function host the firmware's own functions
// beside every deployment's.
type withBuiltins struct {
	*function.Host
	builtins []function.Spec
}

func (w withBuiltins) Apply(ctx context.Context, specs []function.Spec) error {
	return w.Host.Apply(ctx, append(slices.Clone(w.builtins), specs...))
}

// withBuiltinTriggers gives the trigger set the firmware's own triggers
// beside every deployment's.
type withBuiltinTriggers struct {
	*trigger.Set
	builtins []trigger.Config
}

func (w withBuiltinTriggers) Check(cfgs []trigger.Config) error {
	return w.Set.Check(append(slices.Clone(w.builtins), cfgs...))
}

func (w withBuiltinTriggers) Apply(ctx context.Context, cfgs []trigger.Config) error {
	return w.Set.Apply(ctx, append(slices.Clone(w.builtins), cfgs...))
}

// latest holds the newest of a stream of values for one taker: put never
// blocks, take waits for a value newer than the last taken.
type latest[T any] struct {
	mu    sync.Mutex
	value T
	fresh bool
	had   bool          // a value was taken
	wake  chan struct{} // capacity 1
}

func newLatest[T any]() *latest[T] { return &latest[T]{wake: make(chan struct{}, 1)} }

func (l *latest[T]) put(v T) {
	l.mu.Lock()
	l.value, l.fresh = v, true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *latest[T]) take(ctx context.Context) (T, bool) {
	v, _, ok := l.takeWithin(ctx, 0)
	return v, ok
}

// takeWithin is take, giving up after d (d ≤ 0: never): the value last
// put then comes back again, fresh false (ok false when there is none, or
// ctx ended).
func (l *latest[T]) takeWithin(ctx context.Context, d time.Duration) (v T, fresh, ok bool) {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	for {
		l.mu.Lock()
		if l.fresh {
			v := l.value
			l.fresh, l.had = false, true
			l.mu.Unlock()
			return v, true, true
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero T
			return zero, false, false
		case <-timeout:
			l.mu.Lock()
			v, had := l.value, l.had
			l.mu.Unlock()
			return v, false, had
		case <-l.wake:
		}
	}
}

// DeviceSpec is a device for AttachDevice.
type DeviceSpec struct {
	// Driver is the name of the driver that serves it.
	Driver string
	Name   string
	// TSL is its thing model, as TSL JSON.
	TSL json.RawMessage
	// Config is the driver's configuration of it.
	Config json.RawMessage
	Poll   []device.PollGroup
	// Labels are what functions find it by (their device.list).
	Labels map[string]string
}

// AttachDevice attaches a device and records it in the state store's
// device registry: after a restart the gateway attaches it again.
func (g *Gateway) AttachDevice(ctx context.Context, d DeviceSpec) error {
	p := g.started()
	if p.devices == nil {
		return fmt.Errorf("edge: attach %s: %w", d.Name, ErrClosed)
	}
	model, err := device.ParseTSL(d.TSL)
	if err != nil {
		return fmt.Errorf("edge: attach %s: %w", d.Name, err)
	}
	if err := p.devices.Attach(ctx, d.Driver, device.Device{Name: d.Name, Model: model, Config: d.Config, Labels: d.Labels}, d.Poll); err != nil {
		return err
	}
	pollJSON, _ := json.Marshal(d.Poll)
	if err := p.state.PutDevice(state.Device{Name: d.Name, Driver: d.Driver, Model: d.TSL, Config: d.Config, Poll: pollJSON, Labels: d.Labels}); err != nil {
		return fmt.Errorf("edge: recording device %s: %w", d.Name, err)
	}
	return nil
}

// DetachDevice detaches a device and takes it out of the registry.
func (g *Gateway) DetachDevice(ctx context.Context, name string) error {
	p := g.started()
	if p.devices == nil {
		return fmt.Errorf("edge: detach %s: %w", name, ErrClosed)
	}
	if err := p.state.DeleteDevice(name); err != nil {
		return fmt.Errorf("edge: detach %s: %w", name, err)
	}
	return p.devices.Detach(ctx, name)
}

// attachRegistered attaches again the devices the registry holds, whose
// driver the gateway has; one that does not attach is logged and left in
// the registry for the next start.
func (g *Gateway) attachRegistered(ctx context.Context) {
	p := &g.parts
	recs, err := p.state.Devices()
	if err != nil {
		g.log.Error("edge: reading the device registry (damaged records are left out)", "err", err)
	}
	for _, r := range recs {
		model, err := device.ParseTSL(r.Model)
		var poll []device.PollGroup
		if err == nil && len(r.Poll) > 0 {
			err = json.Unmarshal(r.Poll, &poll)
		}
		if err == nil {
			err = p.devices.Attach(ctx, r.Driver, device.Device{Name: r.Name, Model: model, Config: r.Config, Labels: r.Labels}, poll)
		}
		if err != nil {
			g.log.Warn("edge: a registered device did not attach", "device", r.Name, "driver", r.Driver, "err", err)
		}
	}
}
