package edge_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
)

// BenchmarkDeviceToUpstream: a device event (a simulated driver raising it)
// through the device manager, a message trigger and an in-process function
// whose output goes up through the uplink bridge to a real Mosquitto,
// timed from the event to its arrival at a subscriber there, beside the
// bus path alone (a message published on the in-process bus and forwarded
// up by the same bridge), one message at a time, in the same run.
func BenchmarkDeviceToUpstream(b *testing.B) {
	ctx := context.Background()
	upstream := brokertest.Start(b, nil)
	cloud := brokertest.Connect(b, upstream, mqttbus.Options{ClientID: "cloud"})
	arrived := make(chan time.Time, 1)
	if _, err := cloud.Subscribe(ctx, edge.TopicPrefix("gw-b")+"outputs/#", func(_ context.Context, m *bus.Message) {
		var v struct{ Time time.Time }
		if json.Unmarshal(m.Payload, &v) == nil {
			arrived <- v.Time
		}
	}, nil); err != nil {
		b.Fatal(err)
	}
	model, err := device.ParseTSL([]byte(`{"events": [{"identifier": "tick", "type": "info", "outputData": [{"identifier": "n", "dataType": {"type": "int", "specs": {}}}]}]}`))
	if err != nil {
		b.Fatal(err)
	}
	drv := sim.New()
	g, _ := gatewaytest.Run(b, &edge.Options{
		DataDir: filepath.Join(b.TempDir(), "data"), Instance: "gw-b",
		Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}},
		API:      &edge.APIOptions{Address: "-"}, DeploymentFile: "-",
		Drivers:  []edge.Driver{{Name: "sim", Driver: drv}},
		Builtins: []function.Spec{{Name: "relay", Version: "1", Runtime: function.RuntimeGo, Handler: "relay", Mode: function.Continuous}},
		BuiltinTriggers: []trigger.Config{{Name: "relay", Type: message.Type, Function: "relay",
			Params: json.RawMessage(`{"filter": "devices/+/events/#", "output": "outputs/relay"}`)}},
	})
	_ = g.Functions().Register("relay", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: req.Payload, ContentType: "application/json"}, nil
	}))
	if err := g.Reconciler().Submit(&app.Deployment{Schema: 1, ID: "builtins", Revision: 1}); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, "the relay trigger", func() bool { return len(g.Triggers().List()) > 0 })
	if err := g.Devices().Attach(ctx, "sim", device.Device{Name: "d1", Model: model}, nil); err != nil {
		b.Fatal(err)
	}
	viaDevice := func() time.Duration {
		if err := drv.Raise(ctx, "d1", "tick", map[string]any{"n": 1}); err != nil {
			b.Fatal(err)
		}
		at := <-arrived
		return time.Since(at)
	}
	viaBus := func() time.Duration {
		now := time.Now()
		payload, _ := json.Marshal(map[string]any{"time": now})
		if err := g.Bus().Publish(ctx, &bus.Message{Topic: "outputs/base", Payload: payload, QoS: bus.AtLeastOnce}); err != nil {
			b.Fatal(err)
		}
		<-arrived
		return time.Since(now)
	}
	var dev, base []time.Duration
	for range 50 { // warm both paths
		viaDevice()
		viaBus()
	}
	b.ResetTimer()
	for range max(b.N, 1000) {
		dev = append(dev, viaDevice())
		base = append(base, viaBus())
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(benchutil.Percentile(dev, 50)), "device-p50-µs")
	b.ReportMetric(us(benchutil.Percentile(dev, 99)), "device-p99-µs")
	b.ReportMetric(us(benchutil.Percentile(base, 50)), "bus-p50-µs")
	b.ReportMetric(us(benchutil.Percentile(base, 99)), "bus-p99-µs")
	b.ReportMetric(float64(benchutil.Percentile(dev, 50))/float64(benchutil.Percentile(base, 50)), "ratio-p50")
}
