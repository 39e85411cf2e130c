package membus_test

import (
	"context"
	"fmt"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
)

func Example() {
	ctx := context.Background()
	b := membus.New(nil)
	defer b.Close(ctx)

	done := make(chan struct{})
	_, err := b.Subscribe(ctx, "devices/+/temperature", func(ctx context.Context, m *bus.Message) {
		unit, _ := m.Property("unit")
		fmt.Printf("%s = %s %s\n", m.Topic, m.Payload, unit)
		close(done)
	}, nil)
	if err != nil {
		panic(err)
	}
	err = b.Publish(ctx, &bus.Message{
		Topic:          "devices/boiler/temperature",
		Payload:        []byte("71.5"),
		QoS:            bus.AtLeastOnce,
		UserProperties: []bus.UserProperty{{Key: "unit", Value: "°C"}},
	})
	if err != nil {
		panic(err)
	}
	<-done
	// Output: devices/boiler/temperature = 71.5 °C
}

// A retained message reaches subscribers that come later, before any live
// message.
func Example_retained() {
	ctx := context.Background()
	b := membus.New(nil)
	defer b.Close(ctx)
	_ = b.Publish(ctx, &bus.Message{Topic: "gateway/mode", Payload: []byte("maintenance"), QoS: 1, Retain: true})

	got := make(chan *bus.Message, 1)
	_, _ = b.Subscribe(ctx, "gateway/mode", func(_ context.Context, m *bus.Message) { got <- m }, nil)
	m := <-got
	fmt.Println(string(m.Payload), m.Retain)
	// Output: maintenance true
}
