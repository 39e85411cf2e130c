package mqttlite_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/mqttlite"
)

// TestPublishSubscribe: on a real Mosquitto, a subscriber gets a retained
// message at subscription and live QoS 1 and QoS 0 messages after it, and
// nothing once unsubscribed.
func TestPublishSubscribe(t *testing.T) {
	ctx := context.Background()
	b := brokertest.Start(t, nil)
	addr := b.URL().Host
	pub, err := mqttlite.Dial(ctx, addr, "pub")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(ctx)
	sub, err := mqttlite.Dial(ctx, addr, "sub")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	if err := pub.Publish(ctx, &bus.Message{Topic: "sim/a/desired", Payload: []byte("kept"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *bus.Message, 10)
	// The retained message may take a moment to be stored: subscribe
	// until it comes as retained.
	var s bus.Subscription
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err = sub.Subscribe(ctx, "sim/+/desired", func(_ context.Context, m *bus.Message) { got <- m }, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if string(m.Payload) != "kept" || m.Topic != "sim/a/desired" {
				t.Fatalf("retained: %+v", m)
			}
			if !m.Retain {
				// It came live: the subscription was there before the
				// broker had the publish. It is kept now: again.
				_ = s.Unsubscribe(ctx)
				continue
			}
		case <-time.After(time.Second):
			if time.Now().After(deadline) {
				t.Fatal("no retained message")
			}
			_ = s.Unsubscribe(ctx)
			continue
		}
		break
	}
	for _, qos := range []bus.QoS{0, 1} {
		if err := pub.Publish(ctx, &bus.Message{Topic: "sim/b/desired", Payload: []byte{byte('0' + qos)}, QoS: qos}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m.Topic != "sim/b/desired" || string(m.Payload) != string(rune('0'+qos)) || m.Retain {
				t.Fatalf("live QoS %d: %+v", qos, m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no live message at QoS %d", qos)
		}
	}
	if err := s.Unsubscribe(ctx); err != nil {
		t.Fatal(err)
	}
	// After the UNSUBACK nothing more comes; a QoS 1 round trip on another
	// filter proves the connection still works and orders after it.
	done := make(chan struct{})
	if _, err := sub.Subscribe(ctx, "sim/marker", func(context.Context, *bus.Message) { close(done) }, nil); err != nil {
		t.Fatal(err)
	}
	_ = pub.Publish(ctx, &bus.Message{Topic: "sim/c/desired", Payload: []byte("late"), QoS: 1})
	_ = pub.Publish(ctx, &bus.Message{Topic: "sim/marker", Payload: []byte("x"), QoS: 1})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("no marker")
	}
	select {
	case m := <-got:
		t.Fatalf("a message after Unsubscribe: %+v", m)
	default:
	}
}
