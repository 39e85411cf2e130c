package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/gatewaytest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// TestConsole: console serve on a real Mosquitto; the console's commands
// make a key, create an app, add a version packed from the example
// Python function's directory, signed and uploaded, label the gateway,
// deploy it in two waves and follow the rollout to its end; a command
// the fleet refuses prints the fleet's reason.
func TestConsole(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := brokertest.Start(t, nil)
	dir := t.TempDir()
	data := filepath.Join(dir, "fleet")
	pr, pw := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "-broker", b.URL().String(), "-data", data, "-listen", "127.0.0.1:0"}, nil, pw)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("console serve: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSpace(strings.TrimPrefix(line, "serving on "))
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	for _, id := range []string{"gw-a", "gw-b", "gw-c"} {
		if _, err := fleettest.Start(ctx, id, brokertest.Connect(t, b, mqttbus.Options{ClientID: id}), func(string, *app.Deployment) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	console := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append(args, "-url", url, "-token-file", filepath.Join(data, "api-token")), nil, &out)
		return out.String(), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := console(args...)
		if err != nil {
			t.Fatalf("console %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	key := filepath.Join(dir, "key.hex")
	if pub := must("keygen", key); len(strings.TrimSpace(pub)) != 64 {
		t.Fatalf("keygen printed %q", pub)
	}
	must("app", "create", "hello", "-kind", "function")
	out := must("version", "add", "hello", "1.0", "-dir", "../function-python", "-sign", key, "-config", `{"greeting":"hi"}`)
	var v fleet.Version
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version.Function == nil || len(v.Version.Function.Package.Signature) == 0 || !strings.HasPrefix(v.Version.Function.Package.URL, url+"/blobs/sha256/") {
		t.Fatalf("version add: %s", out)
	}
	testenv.Eventually(t, "the three gateways known", func() bool {
		out, _ := console("instance", "list")
		return strings.Count(out, `"presence": "online"`) == 3
	})
	must("instance", "label", "gw-a", "site=plant-1")
	must("instance", "label", "gw-b", "site=plant-1")
	must("instance", "label", "gw-c", "site=plant-2")
	must("deploy", "hello-1", "-selector", "site=plant-1", "-waves", "1,100%", "hello=1.0")
	var view fleetapi.DeploymentView
	testenv.Eventually(t, "the rollout succeeded", func() bool {
		out, err := console("rollout", "status", "hello-1")
		return err == nil && json.Unmarshal([]byte(out), &view) == nil && view.Deployment.State == fleet.DeploymentSucceeded
	})
	if view.Counts[fleet.TargetSucceeded] != 2 || len(view.Deployment.Waves) != 2 {
		t.Errorf("the rollout: %+v", view)
	}
	if _, err := console("rollout", "pause", "hello-1"); err == nil || !strings.Contains(err.Error(), "is succeeded") {
		t.Errorf("pausing a finished rollout: %v", err)
	}
	if _, err := console("deploy", "bad", "hello=9"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "hello/9") {
		t.Errorf("deploying a version that does not exist: %v", err)
	}
	if _, err := console("version", "add", "hello", "1.0", "-dir", "../function-python", "-config", `{"greeting":"other"}`); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("changing a version: %v", err)
	}
	must("app", "create", "web", "-kind", "container")
	out = must("version", "add", "web", "1", "-image", "localhost/web:1", "-container", `{"spec": {"command": ["/web"]}, "health": {"exec": ["/web", "check"]}}`)
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Version.Container == nil || v.Version.Container.Image != "localhost/web:1" ||
		fmt.Sprint(v.Version.Container.Spec.Command) != "[/web]" || v.Version.Container.Health == nil {
		t.Errorf("a container version: %s", out)
	}
	if _, err := console("version", "add", "web", "2", "-image", "localhost/web:2", "-container", `{"spek": {}}`); err == nil || !strings.Contains(err.Error(), `unknown field "spek"`) {
		t.Errorf("a container version with a misspelt field: %v", err)
	}
	if _, err := console("version", "add", "web", "2", "-container", `{}`); err == nil || !strings.Contains(err.Error(), "-container needs -image") {
		t.Errorf("-container without -image: %v", err)
	}
}

// TestGatewayCommands: console invoke and console logs reach one
// gateway's local API with its token.
func TestGatewayCommands(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	g, _ := gatewaytest.Run(t, &edge.Options{DataDir: data, Instance: "gw-cmd", DeploymentFile: "-", API: &edge.APIOptions{Address: "127.0.0.1:0"},
		Builtins: []function.Spec{{Name: "greet", Version: "1", Runtime: function.RuntimeGo, Handler: "greet"}}})
	_ = g.Functions().Register("greet", function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		function.Logger(ctx).Info("greeting someone")
		return invoke.Response{Payload: []byte(`{"hello":` + string(req.Payload) + `}`)}, nil
	}))
	if err := g.Reconciler().Submit(&app.Deployment{Schema: 1, ID: "builtins", Revision: 1}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the builtin function deployed", func() bool {
		_, err := g.Functions().Status("greet")
		return err == nil
	})
	gw := []string{"-gateway", g.APIURL(), "-gateway-token-file", filepath.Join(data, "api-token")}
	var out bytes.Buffer
	if err := run(ctx, append([]string{"invoke", "greet", `"world"`}, gw...), nil, &out); err != nil || !strings.Contains(out.String(), `"hello": "world"`) {
		t.Fatalf("console invoke: %v %s", err, out.String())
	}
	testenv.Eventually(t, "the invocation's log through console logs", func() bool {
		out.Reset()
		err := run(ctx, append([]string{"logs", "greet"}, gw...), nil, &out)
		return err == nil && strings.Contains(out.String(), "greeting someone")
	})
	if err := run(ctx, []string{"invoke", "greet", "-gateway", g.APIURL(), "-gateway-token-file", filepath.Join(t.TempDir(), "none")}, nil, &out); err == nil {
		t.Error("console invoke without the gateway's token succeeded")
	}
}
