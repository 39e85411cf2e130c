package edge_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/function/spec"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// linkZip packs a Link IoT Edge program as that platform's zip: the file
// as index.js or index.py at the root, and no manifest.
func linkZip(t *testing.T, program string) (archive []byte) {
	t.Helper()
	code, err := os.ReadFile(filepath.Join("..", "function", "testdata", "linkedge", program))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("index" + filepath.Ext(program))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(code)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLinkEdgeZips: programs written for Link IoT Edge's SDKs, packed as
// that platform packs them (a zip with index.js or index.py and no
// manifest) and deployed with its function settings in the deployment,
// run unchanged: the long-lived ones' messages reach the bus (one of them
// loops at import, before its handler is defined), one invokes
// another, one gets and sets a thing's properties and calls its service,
// and the drivers' thermometers appear with checked reports and events; a
// change of a driver's configuration reaches registerChangedCallback.
func TestLinkEdgeZips(t *testing.T) {
	testenv.Tool(t, "node")
	testenv.Tool(t, "python3")
	ctx := context.Background()
	g, stop := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(t.TempDir(), "data"), Instance: "gw-link", DeploymentFile: "-",
		Drivers: []edge.Driver{{Name: "sim", Driver: sim.New()}}, Probation: 200 * time.Millisecond})
	defer stop()
	tsl, err := os.ReadFile("../device/testdata/boiler.tsl.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.AttachDevice(ctx, edge.DeviceSpec{Driver: "sim", Name: "boiler-1", TSL: tsl, Config: json.RawMessage(`{"values": {"setpoint": 50}}`),
		Labels: map[string]string{"room": "cellar", "productKey": "pk1"}}); err != nil {
		t.Fatal(err)
	}
	seen := make(chan *bus.Message, 100)
	for _, f := range []string{"/hello/world", "/topic/hello", "devices/+/events/#"} {
		if _, err := g.Bus().Subscribe(ctx, f, func(_ context.Context, m *bus.Message) {
			select {
			case seen <- m:
			default:
			}
		}, nil); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	link := func(name, program string, settings app.FunctionSettings, driver bool, config string, devices ...app.Device) app.Assignment {
		archive := linkZip(t, program)
		file := filepath.Join(dir, name+".zip")
		if err := os.WriteFile(file, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(archive)
		return app.Assignment{App: app.App{Name: name, Kind: app.KindFunction},
			Version: app.Version{Version: "1", Config: json.RawMessage(config), Function: &app.FunctionVersion{Driver: driver, Settings: &settings,
				Package: app.Artifact{URL: "file://" + file, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}},
			Devices: devices}
	}
	thermometer := func(name string) app.Device {
		return app.Device{Name: name, TSL: json.RawMessage(`{"properties": [{"identifier": "temperature", "accessMode": "r", "dataType": {"type": "int", "specs": {"min": "-40", "max": "120"}}}],
 "events": [{"identifier": "high_temperature", "type": "alert", "outputData": [{"identifier": "temperature", "dataType": {"type": "int"}}]}]}`),
			Config: json.RawMessage(`{"start": 25}`), Labels: map[string]string{"productKey": "a1ZJTVsqj2y"}}
	}
	driverConfig := `{"json": {"threshold": 26}}`
	d := &app.Deployment{Schema: 1, ID: "link", Revision: 1, Apps: []app.Assignment{
		link("link-hello", "node/hello.js", app.FunctionSettings{Runtime: "nodejs10", RunMode: "LongLived", Permissions: spec.Permissions{Publish: []string{"/hello/#"}}}, false, ""),
		link("link-hello-py", "python/hello.py", app.FunctionSettings{Runtime: "python3", RunMode: "LongLived", MemorySize: 64, Permissions: spec.Permissions{Publish: []string{"/hello/#"}}}, false, ""),
		link("link-loop-py", "python/loop.py", app.FunctionSettings{Runtime: "python3", RunMode: "LongLived", Permissions: spec.Permissions{Publish: []string{"/topic/#"}}}, false, ""),
		link("link-things", "python/things.py", app.FunctionSettings{Runtime: "python3", Timeout: spec.Duration(5 * time.Second), Permissions: spec.Permissions{Devices: []string{"boiler-*"}}}, false, ""),
		link("link-invokee", "node/invokee.js", app.FunctionSettings{Runtime: "nodejs10", Environment: map[string]string{"GREETING": "hi"}}, false, ""),
		link("link-invoker", "node/invoker.js", app.FunctionSettings{Runtime: "nodejs10", Permissions: spec.Permissions{Invoke: []string{"link-invokee"}}}, false, ""),
		link("link-thermometer", "node-driver/index.js", app.FunctionSettings{Runtime: "nodejs10", RunMode: "LongLived"}, true, driverConfig, thermometer("HelloThing")),
		link("link-thermometer-py", "python-driver/index.py", app.FunctionSettings{Runtime: "python3", RunMode: "LongLived"}, true, driverConfig, thermometer("HelloThingPy")),
	}}
	if err := g.Reconciler().Submit(d); err != nil {
		t.Fatal(err)
	}
	awaitRevision := func(rev uint64) {
		t.Helper()
		testenv.Eventually(t, "the deployment to succeed", func() bool {
			st := g.Reconciler().Status()
			if st.Revision == rev && (st.Outcome == app.OutcomeRolledBack || st.Outcome == app.OutcomeRejected) {
				t.Fatalf("deployment %d: %+v", rev, st)
			}
			return st.Revision == rev && st.Outcome == app.OutcomeSucceeded
		})
	}
	awaitRevision(1)

	var hellos, events = map[string]bool{}, map[string]bool{}
	testenv.EventuallyWithin(t, "the hellos and both thermometers' events on the bus", 30*time.Second, func() bool {
		for {
			select {
			case m := <-seen:
				fn, _ := m.Property("edgekit-function")
				if m.Topic == "/hello/world" || m.Topic == "/topic/hello" {
					hellos[fn] = true
				} else if strings.HasSuffix(m.Topic, "/events/high_temperature") {
					events[strings.Split(m.Topic, "/")[1]] = true
				}
			default:
				return hellos["link-hello"] && hellos["link-hello-py"] && hellos["link-loop-py"] && events["HelloThing"] && events["HelloThingPy"]
			}
		}
	})
	for _, name := range []string{"HelloThing", "HelloThingPy"} {
		sh, err := g.Devices().Shadow(name)
		if err != nil || sh.State != device.Online || sh.Properties["temperature"].Reported == nil {
			t.Errorf("%s: %+v %v", name, sh, err)
		}
	}
	call := func(fn, event string) string {
		t.Helper()
		resp, err := g.Functions().Invoke(ctx, fn, invoke.Request{Payload: []byte(event)})
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		return string(resp.Payload)
	}
	if got := call("link-things", `{"productKey": "pk1", "deviceName": "boiler-1"}`); !strings.Contains(got, `"setpoint": 65`) && !strings.Contains(got, `"setpoint":65`) {
		t.Errorf("link-things: %s", got)
	}
	if got := call("link-invoker", `{}`); !strings.Contains(got, `"statusCode":200`) || !strings.Contains(got, "Returned from the invokee") {
		t.Errorf("link-invoker: %s", got)
	}

	// A configuration change reaches the drivers' registerChangedCallback.
	// A new document: the reconciler owns the one it was given.
	d2 := &app.Deployment{Schema: 1, ID: "link", Revision: 2}
	for _, a := range d.Apps {
		if a.Version.Function.Driver {
			a.Version.Config = json.RawMessage(`{"json": {"threshold": 31}}`)
		}
		d2.Apps = append(d2.Apps, a)
	}
	if err := g.Reconciler().Submit(d2); err != nil {
		t.Fatal(err)
	}
	awaitRevision(2)
	for _, fn := range []string{"link-thermometer", "link-thermometer-py"} {
		testenv.EventuallyWithin(t, fn+"'s changed callback", 30*time.Second, func() bool {
			recs, err := g.Functions().Logs(logstore.Query{Function: fn, Contains: `"threshold":31`})
			return err == nil && len(recs) > 0
		})
	}
}
