package fndriver_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/testenv"
)

// linkThermometer is the thing model the Link IoT Edge drivers' devices
// have: the SDK README's HelloThing product.
const linkThermometer = `{"properties": [{"identifier": "temperature", "accessMode": "r", "dataType": {"type": "int", "specs": {"min": "-40", "max": "120"}}}],
 "events": [{"identifier": "high_temperature", "type": "alert", "outputData": [{"identifier": "temperature", "dataType": {"type": "int"}}]}]}`

// TestLinkEdgeDriver: drivers written for Link IoT Edge's thing access SDK
// (function/testdata/linkedge/*-driver, unchanged) run as driver apps: the
// thermometer the driver's configuration lists is registered and online,
// reports every two seconds reach the device manager checked, the event
// above the threshold too, reads reach its callbacks, and a change of the
// driver's configuration reaches registerChangedCallback.
func TestLinkEdgeDriver(t *testing.T) {
	ctx := context.Background()
	for _, l := range languages(t) {
		if l.name == "go" {
			continue
		}
		t.Run(l.name, func(t *testing.T) {
			r, m := newRig(t), newManager(t)
			dir, _ := filepath.Abs(filepath.Join("..", "..", "function", "testdata", "linkedge", l.name+"-driver"))
			fn := "link-thermometer-" + l.name
			// As a deployment does: the devices are bound first, then the
			// function starts and is told them when it says hello.
			if err := m.AddDriver(ctx, fn, r.set.Driver(fn), nil); err != nil {
				t.Fatal(err)
			}
			model, err := device.ParseTSL([]byte(linkThermometer))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Attach(ctx, fn, device.Device{Name: "HelloThing", Model: model, Config: json.RawMessage(`{"start": 25}`),
				Labels: map[string]string{"productKey": "a1ZJTVsqj2y"}}, nil); err != nil {
				t.Fatal(err)
			}
			spec := function.Spec{Name: fn, Version: "1", Runtime: l.runtime, Service: function.ServiceFC, API: function.APINative, Handler: "index.handler",
				CodeDir: dir, Mode: function.Continuous, MinInstances: 1, MaxInstances: 1, Config: json.RawMessage(`{"json": {"threshold": 26}}`)}
			if err := r.host.Deploy(ctx, spec); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.host.Remove(context.Background(), fn) })

			testenv.EventuallyWithin(t, "HelloThing online and reporting", 30*time.Second, func() bool {
				return m.state(t, "HelloThing") == device.Online && m.reported("HelloThing") >= 1
			})
			got, err := m.Get(ctx, "HelloThing", []string{"temperature"})
			if v, ok := got["temperature"].Value.(int64); err != nil || !ok || v < 25 || v > 35 {
				t.Errorf("a read through getProperties: %+v %v", got, err)
			}
			if _, err := m.Set(ctx, "HelloThing", map[string]any{"temperature": 30}); err == nil {
				t.Error("a write of a read-only property succeeded")
			}
			testenv.EventuallyWithin(t, "high_temperature above 26", 30*time.Second, func() bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				for _, e := range m.events {
					if e.Event == "high_temperature" && e.Values["temperature"].(int64) > 26 {
						return true
					}
				}
				return false
			})

			spec.Config = json.RawMessage(`{"json": {"threshold": 31}}`)
			if err := r.host.Deploy(ctx, spec); err != nil {
				t.Fatal(err)
			}
			testenv.EventuallyWithin(t, "the change reaching registerChangedCallback", 30*time.Second, func() bool {
				recs, err := r.host.Logs(logstore.Query{Function: fn, Contains: `"threshold":31`})
				return err == nil && len(recs) > 0
			})
			if sh, _ := m.Shadow("HelloThing"); sh.State != device.Online {
				t.Errorf("HelloThing after a configuration change: %s (%s)", sh.State, sh.Cause)
			}
		})
	}
}
