package edge_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// TestFunctionsCallTheGateway: a function deployed to a gateway reads the
// device its manifest names and publishes an alarm through the gateway's
// API — in Python and Node.js, on the native protocol and on Lambda's
// runtime API (whose calls go through the local API) — and the alarm
// reaches a LAN client on the gateway's Mosquitto and the cloud through
// the uplink bridge, with the function's name on it. A device outside its
// permissions is refused.
func TestFunctionsCallTheGateway(t *testing.T) {
	testenv.Tool(t, "python3")
	ctx := context.Background()
	upstream := brokertest.Start(t, nil)
	cloud := brokertest.Connect(t, upstream, mqttbus.Options{})
	alarms := make(chan *bus.Message, 10)
	if _, err := cloud.Subscribe(ctx, "edgekit/instances/gw-api/outputs/#", func(_ context.Context, m *bus.Message) { alarms <- m }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	g, stop := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(t.TempDir(), "data"), Instance: "gw-api", DeploymentFile: "-", API: &edge.APIOptions{Address: "127.0.0.1:0"},
		Broker: &broker.Options{Listeners: []broker.Listener{{Address: "127.0.0.1:0"}}, DataDir: brokertest.DataDir(t),
			Users: []broker.User{{Name: "lan", Password: "lan-secret"}}, ACL: []broker.ACLRule{{User: "lan", Access: broker.Read, Topic: "outputs/#"}}},
		Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}, ReconnectMin: 10 * time.Millisecond},
		Drivers:  []edge.Driver{{Name: "sim", Driver: sim.New()}}, Probation: 200 * time.Millisecond})
	defer stop()
	tsl := json.RawMessage(`{"properties": [{"identifier": "temperature", "accessMode": "r", "dataType": {"type": "double", "specs": {"min": "-40", "max": "200"}}}]}`)
	for _, name := range []string{"boiler-1", "meter-1"} {
		if err := g.AttachDevice(ctx, edge.DeviceSpec{Driver: "sim", Name: name, TSL: tsl, Config: json.RawMessage(`{"values": {"temperature": 81.5}}`)}); err != nil {
			t.Fatal(err)
		}
	}
	lan := brokertest.Connect(t, g.Broker(), mqttbus.Options{Username: "lan", Password: "lan-secret"})
	local := make(chan *bus.Message, 10)
	if _, err := lan.Subscribe(ctx, "outputs/#", func(_ context.Context, m *bus.Message) { local <- m }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}

	// The same function in Python and Node.js, on the native protocol and
	// on Lambda's runtime API (its calls go through the local API).
	py := `import edgekit

def handler(event, context):
    try:
        t = edgekit.get_properties(event["device"], ["temperature"])["properties"]["temperature"]
    except edgekit.EdgekitError as e:
        return {"refused": e.type, "why": e.message}
    if t > edgekit.get_config()["threshold"]:
        edgekit.publish("outputs/%s/high" % context.function_name, {"device": event["device"], "temperature": t}, qos=1)
    return {"temperature": t}
`
	js := `const edgekit = require('edgekit');
exports.handler = async (event, context) => {
  let t;
  try {
    t = (await edgekit.getProperties(event.device, ['temperature'])).properties.temperature;
  } catch (e) {
    return { refused: e.type, why: e.message };
  }
  if (t > (await edgekit.getConfig()).threshold) {
    await edgekit.publish('outputs/' + context.functionName + '/high', { device: event.device, temperature: t }, { qos: 1 });
  }
  return { temperature: t };
};
`
	d := &app.Deployment{Schema: 1, ID: "api", Revision: 1}
	for _, fn := range []struct{ name, runtime, api, file, code string }{
		{"alarm-py", "python", "native", "main.py", py}, {"alarm-py-lambda", "python", "lambda", "main.py", py},
		{"alarm-js", "nodejs", "native", "main.js", js}, {"alarm-js-lambda", "nodejs", "lambda", "main.js", js},
	} {
		if fn.runtime == "nodejs" {
			testenv.Tool(t, "node")
		}
		archive := tarGz(t, map[string]string{
			"function.json": `{"name":"` + fn.name + `","version":"1","runtime":"` + fn.runtime + `","api":"` + fn.api + `","handler":"main.handler","permissions":{"devices":["boiler-*"]}}`,
			fn.file:         fn.code,
		})
		file := filepath.Join(t.TempDir(), fn.name+"-1.tgz")
		if err := os.WriteFile(file, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(archive)
		d.Apps = append(d.Apps, app.Assignment{App: app.App{Name: fn.name, Kind: app.KindFunction},
			Version: app.Version{Version: "1", Config: json.RawMessage(`{"threshold": 80}`),
				Function: &app.FunctionVersion{Package: app.Artifact{URL: "file://" + file, Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}}})
	}
	if err := g.Reconciler().Submit(d); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the deployment to succeed", func() bool {
		st := g.Reconciler().Status()
		if st.Outcome == app.OutcomeRolledBack || st.Outcome == app.OutcomeRejected {
			t.Fatalf("deployment: %+v", st)
		}
		return st.Revision == 1 && st.Outcome == app.OutcomeSucceeded
	})

	for _, a := range d.Apps {
		name := a.App.Name
		resp, err := g.Functions().Invoke(ctx, name, invoke.Request{Payload: []byte(`{"device": "boiler-1"}`)})
		if err != nil || !strings.Contains(string(resp.Payload), "81.5") {
			t.Fatalf("%s: invoke: %s %v", name, resp.Payload, err)
		}
		for _, c := range []struct {
			what  string
			seen  chan *bus.Message
			topic string
		}{{"the LAN", local, "outputs/" + name + "/high"}, {"the cloud", alarms, "edgekit/instances/gw-api/outputs/" + name + "/high"}} {
			select {
			case m := <-c.seen:
				fn, _ := m.Property("edgekit-function")
				var alarm struct {
					Device      string
					Temperature float64
				}
				if err := json.Unmarshal(m.Payload, &alarm); err != nil || m.Topic != c.topic || alarm.Device != "boiler-1" || alarm.Temperature != 81.5 || fn != name {
					t.Errorf("%s: %s got %s %s (function %q)", name, c.what, m.Topic, m.Payload, fn)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no alarm reached %s", name, c.what)
			}
		}
		resp, err = g.Functions().Invoke(ctx, name, invoke.Request{Payload: []byte(`{"device": "meter-1"}`)})
		var refused struct{ Refused, Why string }
		if err != nil || json.Unmarshal(resp.Payload, &refused) != nil || refused.Refused != "Forbidden" || !strings.Contains(refused.Why, "meter-1") {
			t.Errorf("%s: a device outside the permissions: %s %v", name, resp.Payload, err)
		}
	}
}

// tarGz packs files (name → content) as a gzip-compressed tar.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, name := range slices.Sorted(maps.Keys(files)) { // the same files, the same archive
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}
