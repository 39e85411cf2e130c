package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

// TestLateDeliveryAfterDrain: a delivery the bus routed to a subscription
// before Drain took it off the bus, and makes only after Drain returned, is
// still handed to the handler (it used to sit in the buffer for ever).
func TestLateDeliveryAfterDrain(t *testing.T) {
	got := make(chan string, 1)
	var set Set
	s := set.Start(Spec{Filter: "t", Handler: func(_ context.Context, m *bus.Message) { got <- string(m.Payload) }, Buffer: 4,
		Log: slog.New(slog.DiscardHandler)})
	if err := s.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	acked := make(chan struct{})
	if err := s.DeliverThen(context.Background(), &bus.Message{Topic: "t", Payload: []byte("late"), QoS: bus.AtLeastOnce}, func() { close(acked) }); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "late" {
			t.Fatalf("handler got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the late delivery never reached the handler")
	}
	<-acked
}

func started(t *testing.T, set *Set, remove func(context.Context) error, h func(s *Sub, ctx context.Context)) *Sub {
	t.Helper()
	var s *Sub
	ready := make(chan struct{})
	s = set.Start(Spec{Filter: "t", Buffer: 1, Log: slog.New(slog.DiscardHandler), Remove: remove,
		Handler: func(ctx context.Context, _ *bus.Message) { <-ready; h(s, ctx) }})
	close(ready)
	if err := s.Deliver(context.Background(), &bus.Message{Topic: "t", QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStopWaitsForAHandlerThatUnsubscribedItself: the Set keeps a
// subscription until its handler has returned, not until it unsubscribed,
// so a bus's Close waits for every handler it started (the buses used to
// forget a handler that had unsubscribed itself, which then outlived them).
func TestStopWaitsForAHandlerThatUnsubscribedItself(t *testing.T) {
	var set Set
	left, release := make(chan struct{}), make(chan struct{})
	started(t, &set, nil, func(s *Sub, ctx context.Context) {
		_ = s.Unsubscribe(ctx)
		close(left)
		<-release
	})
	<-left
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := set.Stop(ended, nil); err == nil || !strings.Contains(err.Error(), `"t"`) {
		t.Fatalf("Stop while the handler runs, with an ended context: %v, want an error naming the filter", err)
	}
	close(release)
	if err := set.Stop(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	set.mu.Lock()
	n := len(set.subs)
	set.mu.Unlock()
	if n != 0 {
		t.Errorf("the Set holds %d subscriptions after their handlers returned", n)
	}
}

// TestStopEndsAnUnsubscribeUnderWay: a handler blocked in its own
// Unsubscribe (mqttbus waits there for the broker's UNSUBACK) returns when
// the bus stops the subscription: Stop ends the handler's context instead
// of waiting for the Unsubscribe to finish first, which it used to do for
// ever when the broker never answered.
func TestStopEndsAnUnsubscribeUnderWay(t *testing.T) {
	var set Set
	inRemove := make(chan struct{})
	returned := make(chan error, 1)
	started(t, &set, func(ctx context.Context) error {
		close(inRemove)
		<-ctx.Done()
		return ctx.Err()
	}, func(s *Sub, ctx context.Context) { returned <- s.Unsubscribe(ctx) })
	<-inRemove
	if err := set.Stop(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := <-returned; !errors.Is(err, context.Canceled) {
		t.Errorf("the handler's Unsubscribe returned %v, want context.Canceled", err)
	}
}

// TestStopSelectsByOwner: Stop with an owner stops that owner's
// subscriptions and leaves the others running.
func TestStopSelectsByOwner(t *testing.T) {
	var set Set
	a := set.Start(Spec{Owner: "a", Filter: "a", Handler: func(context.Context, *bus.Message) {}, Log: slog.New(slog.DiscardHandler)})
	b := set.Start(Spec{Owner: "b", Filter: "b", Handler: func(context.Context, *bus.Message) {}, Log: slog.New(slog.DiscardHandler)})
	if err := set.Stop(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if err := a.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.done:
		t.Fatal("Stop of owner a stopped b's subscription")
	default:
	}
	if err := set.Stop(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}
