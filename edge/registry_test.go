package edge_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/internal/gatewaytest"
)

// TestDeviceRegistry: a device attached through the gateway is attached
// again after a restart, with its model, configuration and polls; one
// detached is not.
func TestDeviceRegistry(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	run := func(f func(g *edge.Gateway)) {
		t.Helper()
		g, stop := gatewaytest.Run(t, &edge.Options{DataDir: dir, Instance: "gw-reg", DeploymentFile: "-", API: &edge.APIOptions{Address: "-"},
			Drivers: []edge.Driver{{Name: "sim", Driver: sim.New()}}})
		f(g)
		stop()
	}
	tsl := json.RawMessage(`{"properties": [{"identifier": "setpoint", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "30", "max": "90"}}}]}`)
	run(func(g *edge.Gateway) {
		for _, name := range []string{"b1", "b2"} {
			if err := g.AttachDevice(ctx, edge.DeviceSpec{Driver: "sim", Name: name, TSL: tsl, Config: json.RawMessage(`{"values": {"setpoint": 50}}`),
				Poll: []device.PollGroup{{Properties: []string{"setpoint"}, Every: time.Minute}}, Labels: map[string]string{"room": "cellar"}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.AttachDevice(ctx, edge.DeviceSpec{Driver: "sim", Name: "bad", TSL: json.RawMessage(`{"properties": [{}]}`)}); err == nil {
			t.Error("a device with a broken model was attached")
		}
	})
	run(func(g *edge.Gateway) {
		if got := g.Devices().Devices(); !slices.Equal(got, []string{"b1", "b2"}) {
			t.Errorf("devices after a restart: %v", got)
		}
		if sh, err := g.Devices().Shadow("b1"); err != nil || sh.Labels["room"] != "cellar" {
			t.Errorf("b1's labels after a restart: %v %v", sh.Labels, err)
		}
		if r, err := g.Devices().Get(ctx, "b1", []string{"setpoint"}); err != nil || r["setpoint"].Value != int64(50) {
			t.Errorf("b1 after a restart: %+v %v", r, err)
		}
		if err := g.DetachDevice(ctx, "b2"); err != nil {
			t.Fatal(err)
		}
	})
	run(func(g *edge.Gateway) {
		if got := g.Devices().Devices(); !slices.Equal(got, []string{"b1"}) {
			t.Errorf("devices after b2 was detached and a restart: %v", got)
		}
	})
}
