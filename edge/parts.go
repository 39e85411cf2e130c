package edge

import (
	"context"
	"slices"
	"sync"

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
	for {
		l.mu.Lock()
		if l.fresh {
			v := l.value
			l.fresh = false
			l.mu.Unlock()
			return v, true
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero T
			return zero, false
		case <-l.wake:
		}
	}
}
