package sim_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicetest"
	"github.com/edgekit/edgekit/device/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func boiler(t testing.TB) *device.Model {
	t.Helper()
	b, err := os.ReadFile("../testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := device.ParseTSL(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestConformance(t *testing.T) {
	tsl, err := os.ReadFile("../testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	devicetest.Run(t, devicetest.Harness{
		New:       func(*testing.T) device.Driver { return sim.New() },
		Config:    json.RawMessage(`{"discoverable": [{"name": "boiler-2", "model": ` + string(tsl) + `}, {"name": "unknown-thing"}]}`),
		Discovers: []string{"boiler-2", "unknown-thing"},
		Device: func(t *testing.T, name string) device.Device {
			return device.Device{Name: name, Model: boiler(t), Config: json.RawMessage(`{"interval": "10ms", "values": {"temperature": 60}}`)}
		},
		Writes: map[string]any{"setpoint": 55, "mode": 1, "power": true},
		Slow: func(t *testing.T, name string) device.Device {
			return device.Device{Name: name, Model: boiler(t), Config: json.RawMessage(`{"latency": "1s"}`)}
		},
	})
}

// TestReportsDrift: a device with an interval reports its read-only
// numeric properties, within their limits.
func TestReportsDrift(t *testing.T) {
	d := sim.New()
	host := devicetest.NewHost()
	_ = d.Open(context.Background(), nil, host)
	defer d.Close(context.Background())
	m := boiler(t)
	if err := d.Attach(context.Background(), device.Device{Name: "b", Model: m, Config: json.RawMessage(`{"interval": "5ms", "values": {"temperature": 119.95}}`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(host.Reports()) < 20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, r := range host.Reports() {
		if _, err := m.PropertyValue("temperature", r.Values["temperature"]); err != nil {
			t.Fatalf("report out of the model: %v", err)
		}
	}
	if host.State("b") != device.Online {
		t.Errorf("state %q", host.State("b"))
	}
}

func TestBadConfig(t *testing.T) {
	d := sim.New()
	_ = d.Open(context.Background(), nil, devicetest.NewHost())
	defer d.Close(context.Background())
	for _, cfg := range []string{`{"interval": "soon"}`, `{"values": {"temperature": 500}}`, `{"colour": "red"}`} {
		if err := d.Attach(context.Background(), device.Device{Name: "b", Model: boiler(t), Config: json.RawMessage(cfg)}); err == nil {
			t.Errorf("config %s accepted", cfg)
		}
	}
}

// TestBadDriverConfig: the driver config's mistakes are refused naming
// them.
func TestBadDriverConfig(t *testing.T) {
	for config, says := range map[string]string{
		`{"discoverable": [{"name": ""}]}`: "discoverable[0].name is empty",
		`{"discoverable": [{"name": "a"}, {"name": "b", "model": {"properties": [{"identifier": "t", "dataType": {"type": "nope"}}]}}]}`: "discoverable[1].model",
		`{"discover": []}`: `unknown field "discover"`,
	} {
		err := sim.New().Open(context.Background(), json.RawMessage(config), devicetest.NewHost())
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Open(%s): %v, want an error naming %s", config, err, says)
		}
	}
}
