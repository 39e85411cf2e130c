package mqttbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// Every reconnection resubscribes with fresh identifiers; the identifiers
// a client remembers stay bounded however often the link drops.
func TestSubscriptionIDsStayBounded(t *testing.T) {
	b := brokertest.Start(t, nil)
	c := brokertest.Connect(t, b, mqttbus.Options{})
	ctx := context.Background()
	for _, f := range []string{"a/#", "b/+", "$share/g/c"} {
		if _, err := c.Subscribe(ctx, f, func(context.Context, *bus.Message) {}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 12 {
		if err := b.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.AwaitConnection(wctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the resubscribe runs after connecting
	}
	n := mqttbus.SubscriptionIDCount(c)
	if limit := 3 * mqttbus.IDsPerEntry; n > limit {
		t.Errorf("%d subscription identifiers remembered for 3 filters after 12 reconnections, want at most %d", n, limit)
	}
}
