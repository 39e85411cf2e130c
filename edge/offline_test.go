package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
)

// times collects the report times each device's messages carry, in
// arrival order, counting each time once (QoS 1 may deliver twice).
type times struct {
	mu   sync.Mutex
	seen map[string]map[string]bool
	list map[string][]string
}

func newTimes() *times {
	return &times{seen: map[string]map[string]bool{}, list: map[string][]string{}}
}

func (c *times) handle(_ context.Context, m *bus.Message) {
	var v struct{ Device, Time string }
	if json.Unmarshal(m.Payload, &v) != nil || v.Device == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[v.Device] == nil {
		c.seen[v.Device] = map[string]bool{}
	}
	if !c.seen[v.Device][v.Time] {
		c.seen[v.Device][v.Time] = true
		c.list[v.Device] = append(c.list[v.Device], v.Time)
	}
}

func (c *times) snapshot() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for d, l := range c.list {
		out[d] = slices.Clone(l)
	}
	return out
}

// TestOffline: the upstream broker stopped for 30 s while a device reports
// every 10 ms and a function runs on each report: every report and every
// output arrives upstream once it is back, in order per device.
func TestOffline(t *testing.T) {
	ctx := context.Background()
	// The cloud's session must hold all that the gateway sends at once when
	// the link is back (some 12,000 messages): Mosquitto drops what is over
	// MaxQueuedMessages when the cloud reconnects after the gateway or
	// falls behind it. Its notices, and the gateway's errors, are kept for
	// the failure message.
	var brokerLog testenv.Buffer
	upstream := brokertest.Start(t, &broker.Options{AutosaveInterval: time.Second, MaxQueuedMessages: 100_000,
		Logger: slog.New(slog.NewTextHandler(&brokerLog, nil))})
	cloud := brokertest.Connect(t, upstream, mqttbus.Options{ClientID: "cloud"})
	reportsUp, outputsUp := newTimes(), newTimes()
	prefix := edge.TopicPrefix("gw-off")
	if _, err := cloud.Subscribe(ctx, prefix+"devices/+/properties", reportsUp.handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 100_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.Subscribe(ctx, prefix+"outputs/reports", outputsUp.handle, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 100_000}); err != nil {
		t.Fatal(err)
	}

	model, err := device.ParseTSL([]byte(`{"properties": [{"identifier": "temperature", "accessMode": "r", "dataType": {"type": "float", "specs": {"min": "-40", "max": "120"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var gatewayLog testenv.Buffer
	g, _ := gatewaytest.Run(t, &edge.Options{
		DataDir: filepath.Join(t.TempDir(), "data"), Instance: "gw-off",
		Logger:   slog.New(slog.NewTextHandler(&gatewayLog, &slog.HandlerOptions{Level: slog.LevelError})),
		Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 200 * time.Millisecond},
		API:      &edge.APIOptions{Address: "-"}, DeploymentFile: "-",
		Drivers:  []edge.Driver{{Name: "sim", Driver: sim.New()}},
		Builtins: []function.Spec{{Name: "on-report", Version: "1", Runtime: function.RuntimeGo, Handler: "on-report"}},
		BuiltinTriggers: []trigger.Config{{Name: "on-report", Type: message.Type, Function: "on-report",
			Params: json.RawMessage(`{"filter": "devices/+/properties", "output": "outputs/reports"}`)}},
	})
	// The builtin function echoes each report's device and time.
	_ = g.Functions().Register("on-report", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		var r struct{ Device, Time string }
		if err := json.Unmarshal(req.Payload, &r); err != nil {
			return invoke.Response{}, err
		}
		b, _ := json.Marshal(r)
		return invoke.Response{Payload: b, ContentType: "application/json"}, nil
	}))
	if err := g.Reconciler().Submit(&app.Deployment{Schema: 1, ID: "builtins", Revision: 1}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the builtin function and its trigger", func() bool {
		_, err := g.Functions().Status("on-report")
		return err == nil && len(g.Triggers().List()) == 1
	})
	reportsLocal, outputsLocal := newTimes(), newTimes()
	if _, err := g.Bus().Subscribe(ctx, "devices/+/properties", reportsLocal.handle, &bus.SubscribeOptions{Buffer: 100_000}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Bus().Subscribe(ctx, "outputs/reports", outputsLocal.handle, &bus.SubscribeOptions{Buffer: 100_000}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		name := fmt.Sprintf("dev-%d", i)
		if err := g.Devices().Attach(ctx, "sim", device.Device{Name: name, Model: model, Config: json.RawMessage(`{"interval": "10ms", "values": {"temperature": 20}}`)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "reports arriving upstream", func() bool { return len(reportsUp.snapshot()["dev-0"]) > 10 })

	if err := upstream.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The outage lasts until each device has reported 30 s' worth (3,000
	// reports at one per 10 ms) with the broker down.
	before := reportsLocal.snapshot()
	testenv.EventuallyWithin(t, "30 s of reports during the outage", 5*time.Minute, func() bool {
		now := reportsLocal.snapshot()
		return len(now["dev-0"])-len(before["dev-0"]) >= 3000 && len(now["dev-1"])-len(before["dev-1"]) >= 3000
	})
	for _, name := range []string{"dev-0", "dev-1"} {
		if err := g.Devices().Detach(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := upstream.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything reported, and everything the function put out, arrives,
	// in the order it was published, per device.
	for what, pair := range map[string][2]*times{"reports": {reportsLocal, reportsUp}, "outputs": {outputsLocal, outputsUp}} {
		local := pair[0].snapshot()
		// Some 6,000 of each wait in the queue: under load (and -race)
		// draining them takes longer than Eventually's 10 s.
		arrived := testenv.Await(2*time.Minute, func() bool {
			up := pair[1].snapshot()
			for d, l := range local {
				if len(up[d]) < len(l) {
					return false
				}
			}
			return true
		})
		if !arrived {
			up := pair[1].snapshot()
			for d, l := range local {
				t.Logf("%s of %s: %d local, %d upstream", what, d, len(l), len(up[d]))
			}
			t.Fatalf("timed out waiting for every one of the %s upstream; upstream connection: %+v; the broker said:\n%s\nthe gateway said:\n%s", what, g.Upstream().Stats(), brokerLog.String(), gatewayLog.String())
		}
		up := pair[1].snapshot()
		for d, l := range local {
			if len(l) < 2000 {
				t.Errorf("%s of %s: only %d published in 30 s at one per 10 ms", what, d, len(l))
			}
			if !slices.Equal(up[d][len(up[d])-len(l):], l) && !slices.Equal(up[d], l) {
				t.Errorf("%s of %s arrived upstream out of order or with gaps (%d local, %d upstream)", what, d, len(l), len(up[d]))
			}
		}
		t.Logf("%s: %d and %d published during the test, all upstream", what, len(local["dev-0"]), len(local["dev-1"]))
	}
}
