package mqttbus_test

import (
	"context"
	"log"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
)

// An uplink to a cloud broker with store-and-forward: QoS 1 messages
// published while the link is down wait in QueueDir, also across restarts.
// (Not run: it needs a broker.)
func Example() {
	ctx := context.Background()
	up, err := mqttbus.New(&mqttbus.Options{
		Brokers:  []string{"mqtts://broker.example.com:8883"},
		ClientID: "gateway-0042", // stable: the broker keeps the session
		Username: "gateway-0042",
		Password: "secret",
		QueueDir: "/var/lib/gateway/uplink-queue",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer up.Close(ctx)

	// Returns once on disk when offline, once acknowledged when online.
	err = up.Publish(ctx, &bus.Message{Topic: "gateways/0042/telemetry", Payload: []byte(`{"flow":3.2}`), QoS: bus.AtLeastOnce})
	if err != nil {
		log.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := up.AwaitConnection(wctx); err != nil {
		log.Printf("uplink not up yet (%v); %d messages queued", err, up.QueueStats().Messages)
	}
}
