package trigger_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/timer"
)

// A gateway's triggers: one Set, a factory per trigger type, configs as
// deployments carry them.
func ExampleSet() {
	ctx := context.Background()
	b := membus.New(nil)
	defer b.Close(ctx)
	host, _ := function.New(nil)
	defer host.Close(ctx)
	done := make(chan struct{})
	_ = host.Register("alarm", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		fmt.Printf("%s from %s: %s\n", req.Source["topic"], req.Source["device"], req.Payload)
		close(done)
		return invoke.Response{}, nil
	}))
	_ = host.Deploy(ctx, function.Spec{Name: "alarm", Version: "1", Runtime: function.RuntimeGo, Handler: "alarm"})

	sched, _ := timer.NewScheduler(nil)
	defer sched.Close(context.Background())
	set := trigger.NewSet(host, map[string]trigger.Factory{
		timer.Type:   sched.Factory(),
		message.Type: message.Factory(b, nil),
	}, nil)
	defer set.Close(ctx)

	err := set.Put(ctx, trigger.Config{Name: "telemetry", Type: message.Type, Function: "alarm",
		Params: json.RawMessage(`{"filter": "devices/+/telemetry", "retries": 3}`)})
	fmt.Println("put:", err)
	err = set.Put(ctx, trigger.Config{Name: "nightly", Type: timer.Type, Function: "alarm",
		Params: json.RawMessage(`{"cron": "0 0 3 * * *", "timezone": "Europe/Lisbon"}`)})
	fmt.Println("put:", err)
	err = set.Put(ctx, trigger.Config{Name: "broken", Type: timer.Type, Function: "alarm",
		Params: json.RawMessage(`{"every": "often"}`)})
	fmt.Println("put:", err)

	_ = b.Publish(ctx, &bus.Message{Topic: "devices/boiler/telemetry", Payload: []byte(`{"celsius":91}`), QoS: bus.AtLeastOnce})
	<-done
	// Output:
	// put: <nil>
	// put: <nil>
	// put: trigger broken: invalid trigger config: params.every: "often": want a duration of at least 1ms, such as 30s or 5m
	// devices/boiler/telemetry from boiler: {"celsius":91}
}
