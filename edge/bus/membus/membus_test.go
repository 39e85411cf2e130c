package membus_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/membus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	b := membus.New(&membus.Options{MaxPayload: 4096})
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	bustest.Run(t, bustest.Harness{
		New:          func(*testing.T) bus.Bus { return b.NewClient() },
		Capabilities: bustest.Capabilities{MaxPayload: 4096},
	})
}

// A slow QoS 0 subscriber loses messages and counts them; Publish never
// blocks for it.
func TestSlowQoS0SubscriberDrops(t *testing.T) {
	b := membus.New(nil)
	defer b.Close(context.Background())
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	sub, err := b.Subscribe(context.Background(), "t", func(ctx context.Context, m *bus.Message) {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}, &bus.SubscribeOptions{QoS: bus.AtMostOnce, Buffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := range 20 {
		if i == 1 {
			<-started // the first message is in the handler
		}
		if err := b.Publish(ctx, &bus.Message{Topic: "t", QoS: bus.AtLeastOnce}); err != nil {
			t.Fatalf("Publish blocked or failed for a QoS 0 subscriber: %v", err)
		}
	}
	// 1 in the handler, 4 buffered, the rest dropped.
	if d := sub.Dropped(); d != 15 {
		t.Errorf("Dropped() = %d, want 15", d)
	}
	close(release)
	for range 4 {
		<-started
	}
}

// A slow QoS 1 subscriber makes Publish wait; a deadline ends the wait with
// an error and nothing is dropped.
func TestSlowQoS1SubscriberBlocksPublish(t *testing.T) {
	b := membus.New(nil)
	defer b.Close(context.Background())
	release := make(chan struct{})
	got := bustest.NewCollector()
	_, err := b.Subscribe(context.Background(), "t", func(ctx context.Context, m *bus.Message) {
		<-release
		got.Handle(ctx, m)
	}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // 1 in the handler, 2 buffered
		if err := b.Publish(context.Background(), &bus.Message{Topic: "t", QoS: bus.AtLeastOnce, Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = b.Publish(ctx, &bus.Message{Topic: "t", QoS: bus.AtLeastOnce, Payload: []byte("3")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish to a full QoS 1 subscriber: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := b.Publish(context.Background(), &bus.Message{Topic: "t", QoS: bus.AtLeastOnce, Payload: []byte("3")}); err != nil {
		t.Fatal(err)
	}
	if err := bustest.CheckSequence(got.WaitCount(t, 4), 4); err != nil {
		t.Error(err)
	}
}

func TestRetainedExpiry(t *testing.T) {
	b := membus.New(nil)
	defer b.Close(context.Background())
	ctx := context.Background()
	_ = b.Publish(ctx, &bus.Message{Topic: "r/short", Payload: []byte("x"), Retain: true, MessageExpiry: 20 * time.Millisecond})
	_ = b.Publish(ctx, &bus.Message{Topic: "r/long", Payload: []byte("y"), Retain: true, MessageExpiry: time.Hour})
	time.Sleep(40 * time.Millisecond)
	c := bustest.NewCollector()
	if _, err := b.Subscribe(ctx, "r/#", c.Handle, nil); err != nil {
		t.Fatal(err)
	}
	_ = b.Publish(ctx, &bus.Message{Topic: "r/end", QoS: bus.AtLeastOnce})
	got := c.WaitTopic(t, "r/end")
	if len(got) != 2 || got[0].Topic != "r/long" || got[0].MessageExpiry > time.Hour {
		t.Errorf("got %d messages (first %q), want only the unexpired retained r/long then r/end", len(got), got[0].Topic)
	}
}
