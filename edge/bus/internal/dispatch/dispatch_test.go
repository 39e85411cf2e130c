package dispatch

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

// TestLateDeliveryAfterDrain: a delivery the bus routed to a subscription
// before Drain took it off the bus, and makes only after Drain returned, is
// still handed to the handler (it used to sit in the buffer for ever).
func TestLateDeliveryAfterDrain(t *testing.T) {
	got := make(chan string, 1)
	s := Start("t", func(_ context.Context, m *bus.Message) { got <- string(m.Payload) }, 4, nil,
		slog.New(slog.DiscardHandler), nil)
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
