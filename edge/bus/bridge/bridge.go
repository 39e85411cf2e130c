// Package bridge forwards chosen topic filters between two buses, in each
// direction: the gateway's in-process bus and its local Mosquitto, or the
// local side and an upstream cloud broker. Put an mqttbus on the far side and
// its on-disk queue carries uplink data through outages.
//
// Every forwarded message carries the user property "edgekit-bridge" with
// the bridge's name; a bridge never forwards a message that already carries
// its own name, so routes that overlap in both directions do not loop, and
// chains of bridges with different names work. Retained flags are kept
// (subscriptions use Retain As Published), so retained state crosses too.
//
// Each route forwards in order (one subscription, one message at a time).
// When the far side refuses a message — its outbound queue is full, the
// broker rejects it — the bridge drops it, counts it (Dropped) and logs it;
// it does not retry, so one bad message cannot stall a route. Size the far
// side's queue for the longest outage to ride out.
//
// A Bridge subscribes in New and stops in Close; it does not own or close
// the two buses. It is safe for concurrent use.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgekit/edgekit/edge/bus"
)

// OriginProperty is the user property a bridge adds to what it forwards.
const OriginProperty = "edgekit-bridge"

// Route forwards messages matching Filter in one direction.
type Route struct {
	// Filter selects the messages to forward ($share filters allowed: then
	// several bridges split the load).
	Filter string
	// QoS is used to subscribe and to publish on the far side.
	QoS bus.QoS
	// RemovePrefix is cut from the topic and AddPrefix put in front, in
	// that order: "sensors/" → "gateways/gw1/sensors/".
	RemovePrefix, AddPrefix string
}

// Options configure a Bridge.
type Options struct {
	// Name marks forwarded messages for loop prevention; default "bridge".
	// Bridges that may see each other's traffic need different names.
	Name string
	// Out routes forward from bus a to bus b; In from b to a.
	Out, In []Route
	// Buffer is each route's subscription buffer; default bus.DefaultBuffer.
	Buffer int
	// Logger receives dropped messages; nil discards.
	Logger *slog.Logger
}

// DirectionStats counts one direction's messages.
type DirectionStats struct {
	Forwarded uint64 // published on the far side (or queued there)
	Dropped   uint64 // the far side refused them (full queue, rejected)
	Looped    uint64 // not forwarded: they came from this bridge
	// Queued is how many messages wait in the far side's outbound queue
	// (0 when the far side has none).
	Queued int
	// QueueDamaged is the far side's count of damaged or missing queue
	// stretches and unreadable queued messages (bus.QueueStats.Damaged).
	QueueDamaged uint64
}

// Stats counts both directions.
type Stats struct {
	Out, In DirectionStats
}

type direction struct {
	from, to                   bus.Bus
	name                       string
	forwarded, dropped, looped atomic.Uint64
}

// Bridge forwards between two buses.
type Bridge struct {
	name    string
	log     *slog.Logger
	out, in *direction
	mu      sync.Mutex
	subs    []bus.Subscription
}

// New subscribes every route and starts forwarding. On an error nothing
// stays subscribed.
func New(ctx context.Context, a, b bus.Bus, opts *Options) (*Bridge, error) {
	if a == nil || b == nil {
		return nil, errors.New("bridge: both buses are required")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Name == "" {
		o.Name = "bridge"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	br := &Bridge{
		name: o.Name,
		log:  o.Logger.With("component", "bridge", "bridge", o.Name),
		out:  &direction{from: a, to: b, name: "out"},
		in:   &direction{from: b, to: a, name: "in"},
	}
	for _, set := range []struct {
		d      *direction
		routes []Route
	}{{br.out, o.Out}, {br.in, o.In}} {
		for i, r := range set.routes {
			if !r.QoS.Valid() {
				br.Close(ctx)
				return nil, fmt.Errorf("bridge %s: %s route %d (%q): %w", o.Name, set.d.name, i, r.Filter, bus.ErrInvalidQoS)
			}
			if r.AddPrefix != "" && strings.ContainsAny(r.AddPrefix, "+#") {
				br.Close(ctx)
				return nil, fmt.Errorf("bridge %s: %s route %d: AddPrefix %q contains a wildcard", o.Name, set.d.name, i, r.AddPrefix)
			}
			sub, err := set.d.from.Subscribe(ctx, r.Filter, br.forward(set.d, r), &bus.SubscribeOptions{
				QoS: r.QoS, Buffer: o.Buffer, RetainAsPublished: true,
			})
			if err != nil {
				br.Close(ctx)
				return nil, fmt.Errorf("bridge %s: %s route %d (%q): %w", o.Name, set.d.name, i, r.Filter, err)
			}
			br.mu.Lock()
			br.subs = append(br.subs, sub)
			br.mu.Unlock()
		}
	}
	return br, nil
}

func (br *Bridge) forward(d *direction, r Route) bus.Handler {
	return func(ctx context.Context, m *bus.Message) {
		for _, p := range m.UserProperties {
			if p.Key == OriginProperty && p.Value == br.name {
				d.looped.Add(1)
				return
			}
		}
		out := m.ShallowCopy()
		out.QoS = r.QoS
		if r.RemovePrefix != "" || r.AddPrefix != "" {
			out.Topic = r.AddPrefix + strings.TrimPrefix(m.Topic, r.RemovePrefix)
		}
		props := make([]bus.UserProperty, len(m.UserProperties), len(m.UserProperties)+1)
		copy(props, m.UserProperties)
		out.UserProperties = append(props, bus.UserProperty{Key: OriginProperty, Value: br.name})
		if err := d.to.Publish(ctx, out); err != nil {
			if ctx.Err() != nil {
				return // the bridge is closing
			}
			d.dropped.Add(1)
			br.log.Error("dropped a message", "direction", d.name, "topic", m.Topic, "err", err)
			return
		}
		d.forwarded.Add(1)
	}
}

// Stats returns the bridge's counters.
func (br *Bridge) Stats() Stats {
	return Stats{Out: br.out.stats(), In: br.in.stats()}
}

func (d *direction) stats() DirectionStats {
	s := DirectionStats{Forwarded: d.forwarded.Load(), Dropped: d.dropped.Load(), Looped: d.looped.Load()}
	if q, ok := d.to.(bus.QueueReporter); ok {
		qs := q.QueueStats()
		s.Queued, s.QueueDamaged = qs.Messages, qs.Damaged
	}
	return s
}

// Close unsubscribes every route; a message already being forwarded may
// still finish after it returns. The buses stay open. It is safe to call more than once.
func (br *Bridge) Close(ctx context.Context) error {
	br.mu.Lock()
	subs := slices.Clone(br.subs)
	br.subs = nil
	br.mu.Unlock()
	var errs []error
	for _, s := range subs {
		if err := s.Unsubscribe(ctx); err != nil && !errors.Is(err, bus.ErrClosed) {
			errs = append(errs, fmt.Errorf("bridge %s: unsubscribe %q: %w", br.name, s.Filter(), err))
		}
	}
	return errors.Join(errs...)
}
