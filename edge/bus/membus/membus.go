// Package membus is the in-process message bus: the gateway's own flows
// (devices, triggers, in-process functions) run on it with no broker and no
// network, so they keep working offline. It implements bus.Bus with MQTT v5
// semantics: topic filters, retained messages, shared subscriptions, no-local
// and the package bus delivery contract.
//
// New returns a Bus that is also its own first client. NewClient returns more
// clients of the same bus: each has its own identity (for NoLocal) and its own
// Close, which removes only that client's subscriptions. Hand each component
// its own client.
//
// Publish hands the message to every matching subscription's buffer before it
// returns: at QoS 0 a full buffer drops the message for that subscription; at
// QoS 1 and 2 Publish waits for room or for ctx to end. A handler that
// publishes at QoS 1 to its own full subscription waits on itself until ctx
// ends: give such publishes a deadline.
//
// All methods are safe for concurrent use.
package membus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/internal/dispatch"
)

// Options configure a Bus. A nil *Options means the defaults.
type Options struct {
	// MaxPayload is the largest payload Publish accepts, in bytes; 0 means
	// MQTT's own limit (268,435,455 bytes).
	MaxPayload int
	// Logger receives handler panics; nil discards.
	Logger *slog.Logger
}

// mqttMaxPayload is the largest MQTT packet, an upper bound for payloads.
const mqttMaxPayload = 268435455

// Bus is an in-process message bus. It is safe for concurrent use.
type Bus struct {
	*Client // the bus is its own first client

	log        *slog.Logger
	maxPayload int
	nextClient atomic.Uint64

	mu       sync.RWMutex
	closed   bool
	plain    *bus.FilterIndex[*entry]
	groups   map[groupKey]*group
	shared   *bus.FilterIndex[*group]
	retained map[string]retainedMsg
	all      map[*entry]struct{}
	subs     dispatch.Set // owned by their *Client
}

// Client is one participant of a Bus. It implements bus.Bus; its Close ends
// only its own subscriptions.
type Client struct {
	b       *Bus
	id      uint64
	closed  bool                // guarded by b.mu
	entries map[*entry]struct{} // guarded by b.mu
}

type entry struct {
	sub     *dispatch.Sub
	client  *Client
	filter  string // without $share
	qos     bus.QoS
	noLocal bool
	rap     bool
	group   *group
}

type groupKey struct{ name, filter string }

type group struct {
	key     groupKey
	members []*entry
	next    atomic.Uint64
}

type retainedMsg struct {
	msg      *bus.Message
	deadline time.Time // zero: no expiry
}

var (
	_ bus.Bus = (*Bus)(nil)
	_ bus.Bus = (*Client)(nil)
)

// New returns an empty bus.
func New(opts *Options) *Bus {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MaxPayload <= 0 || o.MaxPayload > mqttMaxPayload {
		o.MaxPayload = mqttMaxPayload
	}
	b := &Bus{
		log:        o.Logger,
		maxPayload: o.MaxPayload,
		plain:      bus.NewFilterIndex[*entry](),
		groups:     make(map[groupKey]*group),
		shared:     bus.NewFilterIndex[*group](),
		retained:   make(map[string]retainedMsg),
		all:        make(map[*entry]struct{}),
	}
	b.Client = b.newClient()
	return b
}

func (b *Bus) newClient() *Client {
	return &Client{b: b, id: b.nextClient.Add(1), entries: make(map[*entry]struct{})}
}

// NewClient returns a new client of the bus.
func (b *Bus) NewClient() *Client { return b.newClient() }

// Close closes every client of the bus, waits for running handlers and
// drops the retained messages. It is safe to call more than once.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.all = make(map[*entry]struct{})
	b.plain = bus.NewFilterIndex[*entry]()
	b.shared = bus.NewFilterIndex[*group]()
	b.groups = make(map[groupKey]*group)
	b.retained = make(map[string]retainedMsg)
	b.mu.Unlock()
	if err := b.subs.Stop(ctx, nil); err != nil {
		return fmt.Errorf("membus: close: %w", err)
	}
	return nil
}

// Close removes this client's subscriptions and waits for their running
// handlers. Other clients of the bus are not affected. It is safe to call
// more than once.
func (c *Client) Close(ctx context.Context) error {
	b := c.b
	b.mu.Lock()
	if c.closed {
		b.mu.Unlock()
		return nil
	}
	c.closed = true
	for e := range c.entries {
		b.removeLocked(e)
	}
	b.mu.Unlock()
	if err := b.subs.Stop(ctx, c); err != nil {
		return fmt.Errorf("membus: close: %w", err)
	}
	return nil
}

func (c *Client) closedLocked() bool { return c.closed || c.b.closed }

// Publish validates msg, updates the retained store when msg.Retain is set,
// and hands msg to every matching subscription (see the package doc for
// when it blocks).
func (c *Client) Publish(ctx context.Context, msg *bus.Message) error {
	b := c.b
	if err := msg.Validate(); err != nil {
		return fmt.Errorf("membus: publish: %w", err)
	}
	if len(msg.Payload) > b.maxPayload {
		return fmt.Errorf("membus: publish %q: %w: %d bytes, limit %d", msg.Topic, bus.ErrPayloadTooLarge, len(msg.Payload), b.maxPayload)
	}
	m := msg.ShallowCopy()
	var (
		targets []*entry
		err     error
	)
	if m.Retain {
		// Updating the retained store and routing under one write lock
		// keeps a concurrent subscriber from getting the message twice.
		b.mu.Lock()
		b.retainLocked(m)
		targets, err = b.targetsLocked(c, m.Topic, nil)
		b.mu.Unlock()
	} else {
		b.mu.RLock()
		targets, err = b.targetsLocked(c, m.Topic, nil)
		b.mu.RUnlock()
	}
	if err != nil {
		return err
	}
	return deliverAll(ctx, m, targets)
}

// retainLocked stores m as its topic's retained message, or clears the
// topic for an empty payload; b.mu is held for writing.
func (b *Bus) retainLocked(m *bus.Message) {
	if len(m.Payload) == 0 {
		delete(b.retained, m.Topic)
		return
	}
	r := retainedMsg{msg: m}
	if m.MessageExpiry > 0 {
		r.deadline = time.Now().Add(m.MessageExpiry)
	}
	b.retained[m.Topic] = r
}

// targetsLocked appends the subscriptions that get a message on topic; b.mu
// is held (read or write).
func (b *Bus) targetsLocked(from *Client, topic string, targets []*entry) ([]*entry, error) {
	if from.closedLocked() {
		return nil, fmt.Errorf("membus: publish %q: %w", topic, bus.ErrClosed)
	}
	b.plain.Match(topic, func(e *entry) {
		if e.noLocal && e.client == from {
			return
		}
		targets = append(targets, e)
	})
	b.shared.Match(topic, func(g *group) {
		if n := len(g.members); n > 0 {
			targets = append(targets, g.members[int(g.next.Add(1)-1)%n])
		}
	})
	return targets, nil
}

func deliverAll(ctx context.Context, m *bus.Message, targets []*entry) error {
	for _, e := range targets {
		if err := e.sub.Deliver(ctx, adapt(m, e.qos, e.rap && m.Retain)); err != nil {
			return fmt.Errorf("membus: publish %q: delivering to %q: %w", m.Topic, e.sub.Filter(), err)
		}
	}
	return nil
}

// adapt returns m as one subscription sees it: QoS capped by the
// subscription's, retain flag per RetainAsPublished.
func adapt(m *bus.Message, qos bus.QoS, retain bool) *bus.Message {
	q := min(m.QoS, qos)
	if q == m.QoS && retain == m.Retain {
		return m
	}
	d := m.ShallowCopy()
	d.QoS, d.Retain = q, retain
	return d
}

// Subscribe registers h for messages matching filter. A non-shared
// subscription first receives the retained messages that match.
func (c *Client) Subscribe(ctx context.Context, filter string, h bus.Handler, opts *bus.SubscribeOptions) (bus.Subscription, error) {
	b := c.b
	req, err := bus.CheckSubscribe(filter, h, opts)
	if err != nil {
		return nil, fmt.Errorf("membus: %w", err)
	}
	o, name, inner, shared := req.Options, req.Group, req.Inner, req.Shared()
	e := &entry{client: c, filter: inner, qos: o.QoS, noLocal: o.NoLocal, rap: o.RetainAsPublished}

	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closedLocked() {
		return nil, fmt.Errorf("membus: subscribe %q: %w", filter, bus.ErrClosed)
	}
	var first []*bus.Message
	if !shared {
		first = b.retainedLocked(inner, o.QoS)
	}
	e.sub = b.subs.Start(dispatch.Spec{Owner: c, Filter: filter, Handler: h, Buffer: o.Buffer, First: first, Log: b.log, Remove: func(context.Context) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.removeLocked(e)
		return nil
	}})
	if shared {
		k := groupKey{name, inner}
		g := b.groups[k]
		if g == nil {
			g = &group{key: k}
			b.groups[k] = g
			b.shared.Add(inner, g)
		}
		g.members = append(g.members, e)
		e.group = g
	} else {
		b.plain.Add(inner, e)
	}
	b.all[e] = struct{}{}
	c.entries[e] = struct{}{}
	return e.sub, nil
}

// retainedLocked returns the unexpired retained messages matching filter,
// as a new subscriber sees them; b.mu is held.
func (b *Bus) retainedLocked(filter string, qos bus.QoS) []*bus.Message {
	var out []*bus.Message
	now := time.Now()
	for topic, r := range b.retained {
		if !bus.Match(filter, topic) {
			continue
		}
		m := r.msg.ShallowCopy()
		if !r.deadline.IsZero() {
			left := r.deadline.Sub(now)
			if left <= 0 {
				delete(b.retained, topic)
				continue
			}
			m.MessageExpiry = left
		}
		m.QoS = min(m.QoS, qos)
		m.Retain = true
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *bus.Message) int { return strings.Compare(a.Topic, b.Topic) })
	return out
}

// removeLocked takes e out of the routing tables; b.mu is held for writing.
func (b *Bus) removeLocked(e *entry) {
	if _, ok := b.all[e]; !ok {
		return
	}
	delete(b.all, e)
	delete(e.client.entries, e)
	if g := e.group; g != nil {
		for i, m := range g.members {
			if m == e {
				g.members = append(g.members[:i:i], g.members[i+1:]...)
				break
			}
		}
		if len(g.members) == 0 {
			delete(b.groups, g.key)
			b.shared.Remove(g.key.filter, g)
		}
		return
	}
	b.plain.Remove(e.filter, e)
}
