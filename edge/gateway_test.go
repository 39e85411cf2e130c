package edge_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/container/memruntime"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("EDGEKIT_GATEWAY_CHILD"); dir != "" {
		gatewayChild(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// pyPackage is a Python function package answering its version.
func pyPackage(t *testing.T, name, version string) []byte { return pyPackageCode(t, name, version, "") }

// pyPackageCode is pyPackage with code before the handler.
func pyPackageCode(t *testing.T, name, version, code string) []byte {
	t.Helper()
	return tarGz(t, map[string]string{
		"function.json": `{"name":"` + name + `","version":"` + version + `","runtime":"python","handler":"main.handler"}`,
		"main.py":       code + "\ndef handler(event, context):\n    return {'version': '" + version + "'}\n",
	})
}

// TestGateway: a gateway with a local broker, an upstream broker, a
// container runtime and its API takes a deployment published upstream,
// runs it, says so upstream (status and presence), answers on its API,
// and says offline when it stops.
func TestGateway(t *testing.T) {
	testenv.Tool(t, "python3")
	ctx := context.Background()
	upstream := brokertest.Start(t, nil)
	cloud := brokertest.Connect(t, upstream, mqttbus.Options{})
	seen := make(chan *bus.Message, 100)
	if _, err := cloud.Subscribe(ctx, "edgekit/instances/gw-test/#", func(_ context.Context, m *bus.Message) { seen <- m }, nil); err != nil {
		t.Fatal(err)
	}

	archive := pyPackage(t, "hello", "1")
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(archive))
	}))
	defer files.Close()
	sum := sha256.Sum256(archive)

	rt := memruntime.New(nil)
	defer rt.Close(ctx)
	if err := rt.ImportImage(ctx, "localhost/web:1", strings.NewReader("rootfs")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	g, err := edge.New(&edge.Options{
		DataDir: dir, Instance: "gw-test",
		Broker:   &broker.Options{Listeners: []broker.Listener{{Address: "127.0.0.1:0"}}, DataDir: brokertest.DataDir(t)},
		Upstream: &mqttbus.Options{Brokers: []string{upstream.URL().String()}, ReconnectMin: 10 * time.Millisecond},
		API:      &edge.APIOptions{Address: "127.0.0.1:0"}, ContainerRuntime: rt, Probation: 200 * time.Millisecond,
		Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	d := &app.Deployment{Schema: 1, ID: "first", Revision: 1, Apps: []app.Assignment{
		{App: app.App{Name: "hello", Kind: app.KindFunction}, Version: app.Version{Version: "1",
			Function: &app.FunctionVersion{Package: app.Artifact{URL: files.URL + "/hello-1.tgz", Size: int64(len(archive)), SHA256: hex.EncodeToString(sum[:])}}}},
		{App: app.App{Name: "web", Kind: app.KindContainer}, Version: app.Version{Version: "1", Container: &app.ContainerVersion{Image: "localhost/web:1"}}},
	}}
	b, _ := json.Marshal(d)
	if err := cloud.Publish(ctx, &bus.Message{Topic: edge.DesiredTopic("gw-test"), Payload: b, QoS: bus.AtLeastOnce, Retain: true}); err != nil {
		t.Fatal(err)
	}
	var online, succeeded bool
	for !online || !succeeded {
		select {
		case m := <-seen:
			switch m.Topic {
			case edge.PresenceTopic("gw-test"):
				online = online || strings.Contains(string(m.Payload), `"online":true`)
			case edge.StatusTopic("gw-test"):
				var st app.Status
				_ = json.Unmarshal(m.Payload, &st)
				succeeded = succeeded || (st.Revision == 1 && st.Outcome == app.OutcomeSucceeded)
				if st.Outcome == app.OutcomeRolledBack || st.Outcome == app.OutcomeRejected {
					t.Fatalf("deployment: %+v", st)
				}
			}
		case <-time.After(time.Minute):
			t.Fatalf("upstream saw online %v, succeeded %v", online, succeeded)
		}
	}

	token, err := os.ReadFile(filepath.Join(dir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", g.APIURL()+"/v1/functions/hello/invoke", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"version": "1"`) {
		t.Errorf("invoke through the API: %d %s", resp.StatusCode, body)
	}
	if cs := g.Containers().Status(); len(cs) != 1 || cs[0].Name != "web" {
		t.Errorf("containers: %+v", cs)
	}
	// Every part's metrics, on the registry given, through the API.
	req, _ = http.NewRequest("GET", g.APIURL()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`edgekit_function_invocations_total{function="hello"} 1`,
		`edgekit_bridge_forwarded_total{bridge="uplink",direction="out"}`,
		`edgekit_broker_up 1`,
		`edgekit_container_app_state{app="web",state="running"} 1`,
		`edgekit_deployment_running_revision 1`,
		`edgekit_app_phase{app="hello",phase="running"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	testenv.Eventually(t, "presence offline upstream", func() bool {
		select {
		case m := <-seen:
			return m.Topic == edge.PresenceTopic("gw-test") && strings.Contains(string(m.Payload), `"online":false`)
		default:
			return false
		}
	})
	if err := g.Close(ctx); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestCloseBeforeRun: a gateway closed before it runs does not start.
func TestCloseBeforeRun(t *testing.T) {
	g, err := edge.New(&edge.Options{DataDir: t.TempDir(), Instance: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); !errors.Is(err, edge.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	for _, o := range []edge.Options{{Instance: "gw"}, {DataDir: "/x", Instance: "a/b"}, {DataDir: "/x", Instance: "gw", Upstream: &mqttbus.Options{}}} {
		if _, err := edge.New(&o); err == nil {
			t.Errorf("New(%+v) took bad options", o)
		}
	}
}

// TestStatusHeartbeat: with nothing changing, the gateway publishes its
// status again every StatusInterval (jittered), so that the fleet sees a
// gateway that missed its document.
func TestStatusHeartbeat(t *testing.T) {
	ctx := context.Background()
	g, _ := gatewaytest.Run(t, &edge.Options{DataDir: filepath.Join(t.TempDir(), "data"), Instance: "gw-beat",
		API: &edge.APIOptions{Address: "-"}, DeploymentFile: "-", StatusInterval: 20 * time.Millisecond})
	seen := make(chan app.Status, 100)
	sub, err := g.Bus().Subscribe(ctx, edge.StatusTopic("gw-beat"), func(_ context.Context, m *bus.Message) {
		var st app.Status
		if json.Unmarshal(m.Payload, &st) == nil {
			seen <- st
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe(ctx)
	if err := g.Reconciler().Submit(&app.Deployment{Schema: app.SchemaVersion, ID: "only", Revision: 1}); err != nil {
		t.Fatal(err)
	}
	beats := 0
	for beats < 3 {
		select {
		case st := <-seen:
			if st.Outcome == app.OutcomeSucceeded && st.Revision == 1 {
				beats++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d status reports in 30 s with a 20 ms heartbeat", beats)
		}
	}
}
