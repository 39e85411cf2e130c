package edge_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
)

// thermometerTSL is the thing model of function/testdata/drivers' thermometers.
const thermometerTSL = `{"properties": [
  {"identifier": "temperature", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "-40", "max": "200"}}},
  {"identifier": "setpoint", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "0", "max": "100"}}}],
 "services": [{"identifier": "heat", "callType": "sync", "inputData": [{"identifier": "to", "dataType": {"type": "double"}}], "outputData": [{"identifier": "ok", "dataType": {"type": "bool"}}]}],
 "events": [{"identifier": "overheat", "type": "alert", "outputData": [{"identifier": "temperature", "dataType": {"type": "double"}}]}]}`

// TestDriverApp: a deployment binds devices to a driver app written in
// Node.js; they come online and their reports reach the bus, a later
// revision detaches one and the last removes the app and its devices.
func TestDriverApp(t *testing.T) {
	testenv.Tool(t, "node")
	ctx := context.Background()
	g, stop := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(t.TempDir(), "data"), Instance: "gw-drv", DeploymentFile: "-", Probation: 200 * time.Millisecond})
	defer stop()
	reports := make(chan *bus.Message, 100)
	if _, err := g.Bus().Subscribe(ctx, "devices/+/properties", func(_ context.Context, m *bus.Message) {
		select {
		case reports <- m:
		default:
		}
	}, nil); err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile("../function/testdata/drivers/node/thermometer.js")
	if err != nil {
		t.Fatal(err)
	}
	archive := tarGz(t, map[string]string{
		"function.json":  `{"name": "thermo", "version": "1", "runtime": "nodejs", "handler": "thermometer.handler"}`,
		"thermometer.js": string(code),
	})
	file := filepath.Join(t.TempDir(), "thermo-1.tgz")
	if err := os.WriteFile(file, archive, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	thermo := app.Assignment{App: app.App{Name: "thermo", Kind: app.KindFunction},
		Version: app.Version{Version: "1", Config: json.RawMessage(`{"interval": 20}`),
			Function: &app.FunctionVersion{Driver: true, Package: app.Artifact{URL: "file://" + file, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}},
		Devices: []app.Device{
			{Name: "hall", TSL: json.RawMessage(thermometerTSL), Config: json.RawMessage(`{"start": 19.5}`), Labels: map[string]string{"room": "hall"}},
			{Name: "attic", TSL: json.RawMessage(thermometerTSL), Config: json.RawMessage(`{"start": 31}`)},
		}}
	deploy := func(rev uint64, apps ...app.Assignment) {
		t.Helper()
		if err := g.Reconciler().Submit(&app.Deployment{Schema: 1, ID: "drivers", Revision: rev, Apps: apps}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "the deployment to succeed", func() bool {
			st := g.Reconciler().Status()
			if st.Revision == rev && (st.Outcome == app.OutcomeRolledBack || st.Outcome == app.OutcomeRejected) {
				t.Fatalf("deployment %d: %+v", rev, st)
			}
			return st.Revision == rev && st.Outcome == app.OutcomeSucceeded
		})
	}
	deploy(1, thermo)
	for _, name := range []string{"hall", "attic"} {
		testenv.Eventually(t, name+" online", func() bool {
			sh, err := g.Devices().Shadow(name)
			return err == nil && sh.State == device.Online
		})
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case m := <-reports:
			seen[m.Topic] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("reports seen on %v only", seen)
		}
	}
	if got, err := g.Devices().Get(ctx, "hall", []string{"temperature"}); err != nil || got["temperature"].Value != 19.5 {
		t.Errorf("hall's temperature: %+v %v", got, err)
	}

	// A device the thing model of which does not parse is refused before
	// anything changes, naming the app and the device.
	bad := thermo
	bad.Devices = []app.Device{{Name: "cellar", TSL: json.RawMessage(`{"properties": [{"identifier": "t", "dataType": {"type": "quantum"}}]}`)}}
	if err := g.Reconciler().Submit(&app.Deployment{Schema: 1, ID: "drivers", Revision: 2, Apps: []app.Assignment{bad}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the bad deployment refused", func() bool {
		st := g.Reconciler().Status()
		return st.Revision == 2 && st.Outcome == app.OutcomeRejected
	})
	if sh, err := g.Devices().Shadow("attic"); err != nil || sh.State != device.Online {
		t.Errorf("attic after a refused deployment: %+v %v", sh, err)
	}

	thermo.Devices = thermo.Devices[:1]
	deploy(3, thermo)
	if _, err := g.Devices().Shadow("attic"); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("attic after its binding went: %v, want ErrUnknownDevice", err)
	}
	if sh, err := g.Devices().Shadow("hall"); err != nil || sh.State != device.Online {
		t.Errorf("hall after attic went: %+v %v", sh, err)
	}
	deploy(4)
	if _, err := g.Devices().Shadow("hall"); !errors.Is(err, device.ErrUnknownDevice) {
		t.Errorf("hall after its driver app went: %v, want ErrUnknownDevice", err)
	}
}
