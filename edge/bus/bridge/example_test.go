package bridge_test

import (
	"context"
	"fmt"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
)

// Forward sensor data from the gateway's bus to another bus under a
// per-gateway prefix. In a gateway the far side is an mqttbus client of the
// local or upstream broker.
func Example() {
	ctx := context.Background()
	local, cloud := membus.New(nil), membus.New(nil)
	defer local.Close(ctx)
	defer cloud.Close(ctx)

	br, err := bridge.New(ctx, local, cloud, &bridge.Options{
		Name: "gw1-uplink",
		Out:  []bridge.Route{{Filter: "sensors/#", QoS: bus.AtLeastOnce, AddPrefix: "gateways/gw1/"}},
	})
	if err != nil {
		panic(err)
	}
	defer br.Close(ctx)

	got := make(chan *bus.Message, 1)
	_, _ = cloud.Subscribe(ctx, "gateways/#", func(_ context.Context, m *bus.Message) { got <- m }, nil)
	_ = local.Publish(ctx, &bus.Message{Topic: "sensors/flow", Payload: []byte("3.2"), QoS: bus.AtLeastOnce})
	m := <-got
	origin, _ := m.Property(bridge.OriginProperty)
	fmt.Println(m.Topic, string(m.Payload), origin)
	// Output: gateways/gw1/sensors/flow 3.2 gw1-uplink
}
