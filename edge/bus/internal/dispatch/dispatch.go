// Package dispatch runs the handler side of one bus subscription: a bounded
// buffer, a goroutine that calls the handler one message at a time, the
// overflow policy of the bus package's delivery contract, and panic
// recovery (logged with the stack). Every Bus implementation in edgekit uses it so that they keep
// that contract the same way.
//
// A delivery may carry a done function, called once the handler has
// returned for it, or when an Unsubscribe discards it: mqttbus acknowledges
// a QoS 1 or 2 message to the broker only then. When the bus stops the
// subscription (Stop, on Close) buffered deliveries are dropped without
// done, so an MQTT broker sends them again to the next session.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/edgekit/edgekit/edge/bus"
)

// Set holds the subscriptions of one bus from Start until their handler
// goroutines have returned, each with the owner it was started for (a
// client of the bus). A handler that unsubscribed itself and still runs is
// still in the Set: Stop ends its context and waits for it like any other.
// The zero Set is ready to use.
type Set struct {
	mu   sync.Mutex
	subs map[*Sub]any
}

// Spec says what Start runs.
type Spec struct {
	Owner   any // what Set.Stop selects by
	Filter  string
	Handler bus.Handler
	Buffer  int
	// First are delivered before anything else (retained messages).
	First []*bus.Message
	Log   *slog.Logger
	// Remove is called once by Unsubscribe, before the goroutine is
	// stopped, to take the subscription out of the bus's routing; it may
	// be nil. It is not called once the bus has stopped the subscription.
	Remove func(context.Context) error
}

// Start starts the handler goroutine of a new subscription.
func (set *Set) Start(sp Spec) *Sub {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sub{
		filter:  sp.Filter,
		h:       sp.Handler,
		ch:      make(chan delivery, sp.Buffer),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		drained: make(chan struct{}),
		log:     sp.Log,
		remove:  sp.Remove,
	}
	set.mu.Lock()
	if set.subs == nil {
		set.subs = make(map[*Sub]any)
	}
	set.subs[s] = sp.Owner
	set.mu.Unlock()
	go func() {
		defer close(s.done)
		defer set.forget(s)
		s.run(sp.First)
	}()
	return s
}

func (set *Set) forget(s *Sub) {
	set.mu.Lock()
	delete(set.subs, s)
	set.mu.Unlock()
}

// Stop stops the subscriptions started for owner (every one when owner is
// nil) without calling their Remove, and waits until their handlers have
// returned or ctx ends. Messages they had buffered are dropped without
// their done.
func (set *Set) Stop(ctx context.Context, owner any) error {
	set.mu.Lock()
	var subs []*Sub
	for s, o := range set.subs {
		if owner == nil || o == owner {
			subs = append(subs, s)
		}
	}
	set.mu.Unlock()
	for _, s := range subs {
		s.Stop()
	}
	for _, s := range subs {
		if err := s.Wait(ctx); err != nil {
			return fmt.Errorf("waiting for the handler of %q: %w", s.filter, err)
		}
	}
	return nil
}

// Sub is one running subscription. It implements bus.Subscription.
type Sub struct {
	filter  string
	h       bus.Handler
	ch      chan delivery
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	dropped atomic.Uint64
	log     *slog.Logger

	once    sync.Once
	remove  func(ctx context.Context) error
	err     error
	stopped atomic.Bool // by the bus: Remove is not called any more

	// gate is held shared by Deliver while it may put into ch, and
	// exclusively by run's final drain, so nothing lands in ch after it.
	gate         sync.RWMutex
	unsubscribed atomic.Bool // discarded deliveries get their done
	// drained is closed by Drain once nothing more can be delivered: the
	// handler goroutine then empties the buffer and returns.
	drained chan struct{}
	// left is set (under gate) when Drain has taken the subscription off
	// the bus. A delivery the bus routed here before that and makes only
	// now is handed to the handler once the handler goroutine has ended,
	// one at a time (late): never lost.
	left bool
	late sync.Mutex
}

type delivery struct {
	m    *bus.Message
	done func()
}

var _ bus.Subscription = (*Sub)(nil)

func (s *Sub) run(first []*bus.Message) {
	defer s.drain()
	for _, m := range first {
		if s.ctx.Err() != nil {
			return
		}
		s.call(m)
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case d := <-s.ch:
			if s.ctx.Err() != nil {
				s.discard(d)
				return
			}
			s.handle(d)
		case <-s.drained:
			s.empty(s.handle)
			return
		}
	}
}

// empty passes every delivery left in the buffer to f.
func (s *Sub) empty(f func(delivery)) {
	for {
		select {
		case d := <-s.ch:
			f(d)
		default:
			return
		}
	}
}

func (s *Sub) handle(d delivery) {
	s.call(d.m)
	if d.done != nil {
		d.done()
	}
}

// drain discards what is left in the buffer once delivery has stopped.
func (s *Sub) drain() {
	s.gate.Lock()
	defer s.gate.Unlock()
	s.empty(s.discard)
}

func (s *Sub) discard(d delivery) {
	if d.done != nil && s.unsubscribed.Load() {
		d.done()
	}
}

func (s *Sub) call(m *bus.Message) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("bus handler panicked", "filter", s.filter, "topic", m.Topic, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	s.h(s.ctx, m)
}

// Deliver hands m to the handler. At QoS 0 it never blocks: a full buffer
// drops m and counts it. At QoS 1 and 2 it waits for room, for the
// subscription to stop (then m is discarded) or for ctx to end (then it
// returns ctx's error).
func (s *Sub) Deliver(ctx context.Context, m *bus.Message) error {
	return s.DeliverThen(ctx, m, nil)
}

// DeliverThen is Deliver with done, called once when the handler has
// returned for m, or when m is dropped (QoS 0, buffer full) or discarded by
// Unsubscribe; not when the bus stops the subscription or ctx ends.
func (s *Sub) DeliverThen(ctx context.Context, m *bus.Message, done func()) error {
	s.gate.RLock()
	d := delivery{m: m, done: done}
	if s.left {
		s.gate.RUnlock()
		// On a goroutine of its own: the handler goroutine may be the one
		// delivering (a handler publishing to its own filter).
		go func() {
			<-s.done // the handler goroutine has handled the buffer
			s.late.Lock()
			defer s.late.Unlock()
			s.handle(d)
		}()
		return nil
	}
	defer s.gate.RUnlock()
	if s.ctx.Err() != nil {
		s.discard(d)
		return nil
	}
	if m.QoS == bus.AtMostOnce {
		select {
		case s.ch <- d:
		default:
			s.dropped.Add(1)
			if done != nil {
				done()
			}
		}
		return nil
	}
	select {
	case s.ch <- d:
		return nil
	default:
	}
	select {
	case s.ch <- d:
		return nil
	case <-s.ctx.Done():
		s.discard(d)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Filter returns the subscription's filter.
func (s *Sub) Filter() string { return s.filter }

// Dropped counts QoS 0 messages dropped for a full buffer.
func (s *Sub) Dropped() uint64 { return s.dropped.Load() }

// Unsubscribe removes the subscription from the bus and stops delivery. It
// does not wait for a running handler, so a handler may call it.
func (s *Sub) Unsubscribe(ctx context.Context) error {
	s.once.Do(func() {
		s.unsubscribed.Store(true)
		if s.remove != nil && !s.stopped.Load() {
			s.err = s.remove(ctx)
		}
		s.cancel()
	})
	return s.err
}

// Drain removes the subscription from the bus, then hands every message
// already buffered to the handler, and returns once the handler has
// returned for the last of them (bus.Drainer). When ctx ends first it
// returns ctx's error and the handler goes on with the rest. It must not
// be called from the handler.
func (s *Sub) Drain(ctx context.Context) error {
	s.once.Do(func() {
		s.unsubscribed.Store(true)
		if s.remove != nil && !s.stopped.Load() {
			s.err = s.remove(ctx)
		}
		// Deliveries under way finish (the handler goroutine makes room
		// for them); one routed here earlier and made later is handed
		// over by its own goroutine (left).
		s.gate.Lock()
		s.left = true
		close(s.drained)
		s.gate.Unlock()
	})
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return errors.Join(s.err, ctx.Err())
	}
}

// Stop stops delivery without calling remove; the bus uses it on Close.
// It does not wait for an Unsubscribe under way: it ends the handler's
// context, so a handler that unsubscribes itself on that context returns.
func (s *Sub) Stop() {
	s.stopped.Store(true)
	s.cancel()
}

// Wait blocks until the handler goroutine has returned or ctx ends.
func (s *Sub) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
