package devicebus_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDeviceTopics: reports, state and requests on the documented topics,
// on membus and on mqttbus over Mosquitto.
func TestDeviceTopics(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		ctx := context.Background()
		reports := make(chan *bus.Message, 100)
		if _, err := b.Subscribe(ctx, "gw/devices/+/properties", func(_ context.Context, m *bus.Message) {
			select {
			case reports <- m:
			default:
			}
		}, nil); err != nil {
			t.Fatal(err)
		}
		m := device.NewManager(&device.ManagerOptions{Publish: devicebus.Publisher(b, "gw/")})
		t.Cleanup(func() { _ = m.Close(context.Background()) })
		srv, err := devicebus.Serve(ctx, b, m, &devicebus.Options{Prefix: "gw/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close(context.Background()) })
		drv := sim.New()
		if err := m.AddDriver(ctx, "sim", drv, nil); err != nil {
			t.Fatal(err)
		}
		tsl, _ := os.ReadFile("../testdata/boiler.tsl.json")
		model, err := device.ParseTSL(tsl)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Attach(ctx, "sim", device.Device{Name: "boiler-1", Model: model, Config: json.RawMessage(`{"interval": "20ms", "values": {"temperature": 60, "setpoint": 50}}`)}, nil); err != nil {
			t.Fatal(err)
		}

		// A pushed report, validated, on the documented topic.
		select {
		case r := <-reports:
			var body struct {
				Device     string
				Properties map[string]float64
			}
			if err := json.Unmarshal(r.Payload, &body); err != nil || body.Device != "boiler-1" || body.Properties["temperature"] < -40 {
				t.Errorf("report %s (%v)", r.Payload, err)
			}
			if d, _ := r.Property("edgekit-device"); d != "boiler-1" || r.Topic != "gw/devices/boiler-1/properties" {
				t.Errorf("report on %s, device property %q", r.Topic, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no report")
		}

		replies := make(chan *bus.Message, 10)
		if _, err := b.Subscribe(ctx, "replies/dev", func(_ context.Context, m *bus.Message) { replies <- m }, nil); err != nil {
			t.Fatal(err)
		}
		var corr atomic.Int32
		request := func(topic, payload string) (string, string) {
			t.Helper()
			id := strconv.Itoa(int(corr.Add(1)))
			if err := b.Publish(ctx, &bus.Message{Topic: topic, Payload: []byte(payload), QoS: bus.AtLeastOnce, ResponseTopic: "replies/dev", CorrelationData: []byte(id)}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-replies:
				if string(r.CorrelationData) != id {
					t.Fatalf("reply for %q, want %q", r.CorrelationData, id)
				}
				typ, _ := r.Property("edgekit-error-type")
				return string(r.Payload), typ
			case <-time.After(10 * time.Second):
				t.Fatalf("no reply on %s", topic)
				return "", ""
			}
		}

		if got, typ := request("gw/devices/boiler-1/set", `{"properties": {"setpoint": 70}}`); typ != "" || got != `{"results":{"setpoint":null}}` {
			t.Errorf("set: %s (%s)", got, typ)
		}
		if got, typ := request("gw/devices/boiler-1/get", `{"properties": ["setpoint", "humidity"]}`); typ != "" || !strings.Contains(got, `"setpoint":70`) || !strings.Contains(got, "humidity") {
			t.Errorf("get: %s (%s)", got, typ)
		}
		// Out of range: refused with the reason, nothing written.
		if got, typ := request("gw/devices/boiler-1/set", `{"properties": {"setpoint": 95}}`); typ != "InvalidValue" || !strings.Contains(got, "properties.setpoint: 95 above max 90") {
			t.Errorf("out-of-range set: %s (%s)", got, typ)
		}
		if got, _ := request("gw/devices/boiler-1/get", `{"properties": ["setpoint"]}`); !strings.Contains(got, `"setpoint":70`) {
			t.Errorf("after the refused set: %s", got)
		}
		if got, typ := request("gw/devices/boiler-1/services/reboot", `{"delay": 5}`); typ != "" || got != `{"output":{}}` {
			t.Errorf("service: %s (%s)", got, typ)
		}
		for topic, want := range map[string]string{
			"gw/devices/boiler-1/services/explode": "UnknownService",
			"gw/devices/nobody/get":                "UnknownDevice",
			"gw/devices/boiler-1/set":              "BadRequest", // no properties
		} {
			if got, typ := request(topic, `{}`); typ != want {
				t.Errorf("%s: %s (%s), want %s", topic, got, typ, want)
			}
		}
		if got, typ := request("gw/devices/boiler-1/set", `{"properties": {"temperature": 20}}`); typ != "ReadOnly" {
			t.Errorf("read-only set: %s (%s)", got, typ)
		}

		// An event the device raises, checked, on its topic.
		events := make(chan *bus.Message, 10)
		if _, err := b.Subscribe(ctx, "gw/devices/+/events/+", func(_ context.Context, m *bus.Message) { events <- m }, nil); err != nil {
			t.Fatal(err)
		}
		if err := drv.Raise(ctx, "boiler-1", "overheat", map[string]any{"temperature": 131.5}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-events:
			var body struct {
				Device, Event string
				Time          time.Time
				Output        map[string]float64
			}
			if err := json.Unmarshal(e.Payload, &body); err != nil || body.Device != "boiler-1" || body.Event != "overheat" || body.Output["temperature"] != 131.5 || body.Time.IsZero() {
				t.Errorf("event %s (%v)", e.Payload, err)
			}
			if d, _ := e.Property("edgekit-device"); d != "boiler-1" || e.Topic != "gw/devices/boiler-1/events/overheat" {
				t.Errorf("event on %s, device property %q", e.Topic, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
	})
}
