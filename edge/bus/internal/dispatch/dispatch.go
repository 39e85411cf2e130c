// Package dispatch runs the handler side of one bus subscription: a bounded
// buffer, a goroutine that calls the handler one message at a time, the
// overflow policy of the bus package's delivery contract, and panic
// recovery (logged with the stack). Every Bus implementation in edgekit uses it so that they keep
// that contract the same way.
package dispatch

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/edgekit/edgekit/edge/bus"
)

// Sub is one running subscription. It implements bus.Subscription.
type Sub struct {
	filter  string
	h       bus.Handler
	ch      chan *bus.Message
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	dropped atomic.Uint64
	log     *slog.Logger

	once   sync.Once
	remove func(ctx context.Context) error
	err    error
}

var _ bus.Subscription = (*Sub)(nil)

// Start starts the handler goroutine. first are delivered before anything
// else (retained messages). remove is called once by Unsubscribe, before
// the goroutine is stopped, to take the subscription out of the bus's
// routing; it may be nil.
func Start(filter string, h bus.Handler, buffer int, first []*bus.Message, log *slog.Logger, remove func(context.Context) error) *Sub {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sub{
		filter: filter,
		h:      h,
		ch:     make(chan *bus.Message, buffer),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		log:    log,
		remove: remove,
	}
	go s.run(first)
	return s
}

func (s *Sub) run(first []*bus.Message) {
	defer close(s.done)
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
		case m := <-s.ch:
			if s.ctx.Err() != nil {
				return
			}
			s.call(m)
		}
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
	if m.QoS == bus.AtMostOnce {
		select {
		case s.ch <- m:
		default:
			s.dropped.Add(1)
		}
		return nil
	}
	select {
	case s.ch <- m:
		return nil
	default:
	}
	select {
	case s.ch <- m:
		return nil
	case <-s.ctx.Done():
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
		if s.remove != nil {
			s.err = s.remove(ctx)
		}
		s.cancel()
	})
	return s.err
}

// Stop stops delivery without calling remove; the bus uses it on Close.
func (s *Sub) Stop() {
	s.once.Do(s.cancel)
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
