package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge/api"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/internal/openapitest"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRoutesMatchTheDocument: every route is in docs/openapi.json, with
// its method, and the document has no route the API lacks.
func TestRoutesMatchTheDocument(t *testing.T) {
	openapitest.Check(t, "../../docs/openapi.json", api.Routes())
}

type gateway struct {
	srv     *httptest.Server
	token   string
	callers *httpcall.Tokens
	ready   error
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	host, err := function.New(&function.Options{DataDir: filepath.Join(dir, "functions")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Close(ctx) })
	_ = host.Register("echo", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: req.Payload, ContentType: "application/json"}, nil
	}))
	if err := host.Deploy(ctx, function.Spec{Name: "echo", Version: "1", Runtime: function.RuntimeGo, Handler: "echo"}); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(dir, "state.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(ctx) })
	pkgs, _ := codepkg.Open(filepath.Join(dir, "packages"), nil)
	set := trigger.NewSet(host, nil, nil)
	t.Cleanup(func() { _ = set.Close(ctx) })
	rec, err := reconcile.New(&reconcile.Options{Instance: "gw", Functions: host, Triggers: set, Packages: pkgs, State: st, Dir: filepath.Join(dir, "rec")})
	if err != nil {
		t.Fatal(err)
	}
	devices := device.NewManager(nil)
	t.Cleanup(func() { _ = devices.Close(ctx) })
	if err := devices.AddDriver(ctx, "sim", sim.New(), nil); err != nil {
		t.Fatal(err)
	}
	model, err := device.ParseTSL([]byte(`{"properties": [{"identifier": "setpoint", "accessMode": "rw", "dataType": {"type": "int", "specs": {"min": "30", "max": "90"}}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := devices.Attach(ctx, "sim", device.Device{Name: "boiler", Model: model, Config: json.RawMessage(`{"values": {"setpoint": 50}}`)}, nil); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "edgekit_test_total", Help: "a test counter"}))
	g := &gateway{token: httpcall.NewToken(), callers: httpcall.NewTokens()}
	b := membus.New(nil)
	t.Cleanup(func() { _ = b.Close(ctx) })
	calls := fncall.New(b, host, nil)
	calls.SetDevices(devices)
	a, err := api.New(&api.Options{Token: g.token, Callers: g.callers, Functions: host, Deployments: rec, State: st, Devices: devices,
		Metrics: reg, Ready: func() error { return g.ready }, Calls: calls.Serve})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(ctx) })
	g.srv = httptest.NewServer(a)
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, g.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTokens: without the token, or with a wrong one, every route but the
// health checks is refused; a function's own token reaches the function
// calls and nothing else.
func TestTokens(t *testing.T) {
	g := newGateway(t)
	fnToken := g.callers.Issue("some-function")
	for _, route := range api.Routes() {
		method, path, _ := strings.Cut(route, " ")
		path = strings.NewReplacer("{name}", "echo", "{id}", "x", "{service}", "s").Replace(path)
		public := path == "/healthz" || path == "/readyz"
		for _, token := range []string{"", "wrong-token-wrong-token"} {
			if code, _ := g.do(t, method, path, token, "{}"); (code == http.StatusUnauthorized) == public {
				t.Errorf("%s with token %q: %d", route, token, code)
			}
		}
		code, _ := g.do(t, method, path, fnToken, "{}")
		callers := strings.Contains(path, "/invoke") || strings.Contains(path, "/invocations/") || strings.HasPrefix(path, "/v1/calls/")
		switch {
		case public:
		case callers && (code == http.StatusUnauthorized || code == http.StatusForbidden):
			t.Errorf("%s with a function's token: %d, want it let through", route, code)
		case !callers && code != http.StatusForbidden:
			t.Errorf("%s with a function's token: %d, want 403", route, code)
		}
	}
}

// TestCalls: a function's call of the gateway through the API, for
// functions on a runtime API: answered as the function its token names,
// within its permissions; the operator's token is refused, and so is a
// malformed body.
func TestCalls(t *testing.T) {
	g := newGateway(t)
	tok := g.callers.Issue("echo")
	if code, body := g.do(t, "POST", "/v1/calls/config.get", tok, `{"args": {}}`); code != http.StatusOK || body != "null" {
		t.Errorf("config.get: %d %s", code, body)
	}
	if code, body := g.do(t, "POST", "/v1/calls/publish", tok, `{"args": {"topic": "outputs/echo/x"}, "payload": "aGk="}`); code != http.StatusOK {
		t.Errorf("publish: %d %s", code, body)
	}
	for _, c := range []struct {
		path, token, body string
		code              int
		says              string
	}{
		{"/v1/calls/publish", tok, `{"args": {"topic": "edgekit/instances/gw/status"}}`, http.StatusForbidden, `"errorType":"Forbidden"`},
		{"/v1/calls/device.get", tok, `{"args": {"device": "boiler"}}`, http.StatusForbidden, "permissions.devices"},
		{"/v1/calls/publish", g.token, `{"args": {"topic": "outputs/echo/x"}}`, http.StatusForbidden, "function's own token"},
		{"/v1/calls/publish", tok, `{"args": {"topic": "outputs/echo/x"}, "extra": 1}`, http.StatusBadRequest, "extra"},
		{"/v1/calls/nothing", tok, `{}`, http.StatusBadRequest, "unknown method"},
		{"/v1/calls/publish", g.callers.Issue("ghost"), `{"args": {"topic": "outputs/ghost/x"}}`, http.StatusServiceUnavailable, "not deployed"},
	} {
		if code, body := g.do(t, "POST", c.path, c.token, c.body); code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s %s: %d %s, want %d saying %q", c.path, c.body, code, body, c.code, c.says)
		}
	}
}

// TestRoutes: what each part answers through the API.
func TestRoutes(t *testing.T) {
	g := newGateway(t)
	tok := g.token
	for _, tc := range []struct {
		method, path, body string
		code               int
		says               string
	}{
		{"GET", "/healthz", "", 200, "ok"},
		{"GET", "/readyz", "", 200, "ready"},
		{"GET", "/metrics", "", 200, "edgekit_test_total 0"},
		{"GET", "/v1/deployment", "", 200, `"instance":"gw"`},
		{"POST", "/v1/deployment", `{"schema": 1, "id": "x", "revision": 1, "apps": [{"app": {"name": "a", "kind": "lambda"}, "version": {"version": "1"}}]}`, 400, "lambda"},
		{"GET", "/v1/functions", "", 200, `"Name":"echo"`},
		{"GET", "/v1/functions/echo", "", 200, `"Phase":"running"`},
		{"GET", "/v1/functions/nope", "", 404, "NotFound"},
		{"POST", "/v1/functions/echo/invoke", `{"x":1}`, 200, `{"x":1}`},
		{"GET", "/v1/devices", "", 200, `["boiler"]`},
		{"POST", "/v1/devices/boiler/get", `{"properties": ["setpoint"]}`, 200, `"setpoint":50`},
		{"GET", "/v1/devices/boiler", "", 200, `"setpoint"`},
		{"POST", "/v1/devices/boiler/set", `{"properties": {"setpoint": 95}}`, 400, "above max 90"},
		{"POST", "/v1/devices/boiler/set", `{"properties": {"setpoint": 60}}`, 200, `"setpoint":null`},
		{"POST", "/v1/devices/boiler/get", `{"colour": 1}`, 400, "unknown field"},
		{"POST", "/v1/devices/nope/get", `{}`, 404, "unknown device"},
		{"GET", "/v1/containers", "", 404, "no container runtime"},
		{"GET", "/v1/apps/a/history", "", 200, "[]"},
	} {
		code, body := g.do(t, tc.method, tc.path, tok, tc.body)
		if code != tc.code || !strings.Contains(body, tc.says) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, code, body, tc.code, tc.says)
		}
	}
	g.ready = errors.New("the broker is starting")
	if code, body := g.do(t, "GET", "/readyz", "", ""); code != 503 || !strings.Contains(body, "the broker is starting") {
		t.Errorf("readyz while not ready: %d %s", code, body)
	}
}
