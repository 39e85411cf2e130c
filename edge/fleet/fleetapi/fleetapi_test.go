package fleetapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
	"github.com/edgekit/edgekit/edge/fleet/fleettest"
	"github.com/edgekit/edgekit/internal/openapitest"
	"github.com/edgekit/edgekit/internal/testenv"
)

const token = "a-token-of-the-operator"

type server struct {
	t   testing.TB
	url string
	f   *fleet.Fleet
	bus bus.Bus
}

func newServer(t testing.TB, run bool) *server {
	t.Helper()
	f, b, _ := fleettest.New(t, nil)
	if run {
		fleettest.Run(t, f)
	}
	a, err := fleetapi.New(f, &fleetapi.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return &server{t: t, url: srv.URL, f: f, bus: b}
}

func (s *server) call(method, path string, body any, auth bool) (int, []byte) {
	s.t.Helper()
	var r *bytes.Reader
	switch b := body.(type) {
	case nil:
		r = bytes.NewReader(nil)
	case string:
		r = bytes.NewReader([]byte(b))
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, s.url+path, r)
	if auth {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

func TestRoutesMatchTheDocument(t *testing.T) {
	a, err := fleetapi.New(newServer(t, false).f, &fleetapi.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	openapitest.Check(t, "../../../docs/fleet-openapi.json", a.Routes())
}

func version(v string) app.Version {
	return app.Version{Version: v, Config: []byte(`{"threshold":80}`), Function: &app.FunctionVersion{
		Package: app.Artifact{URL: "https://packages.example.com/alarm-" + v + ".tgz", SHA256: strings.Repeat("cd", 32)}}}
}

// TestRolloutThroughTheAPI: the catalogue, an instance's labels, a
// deployment and its status, all through HTTP.
func TestRolloutThroughTheAPI(t *testing.T) {
	s := newServer(t, true)
	ctx := context.Background()
	if _, err := fleettest.Start(ctx, "gw-1", s.bus, func(string, *app.Deployment) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", "/v1/apps", map[string]string{"name": "alarm", "kind": "function"}, 201},
		{"POST", "/v1/apps/alarm/versions", version("1"), 201},
		{"PUT", "/v1/instances/gw-1", map[string]any{"labels": map[string]string{"site": "plant-1"}}, 200},
		{"PUT", "/v1/groups/plant-1", map[string]string{"selector": "site=plant-1"}, 200},
		{"PUT", "/v1/apps/alarm/config?group=plant-1", map[string]int{"threshold": 90}, 200},
		{"POST", "/v1/deployments", fleetapi.DeploymentRequest{ID: "d1", Selector: "site=plant-1", Apps: []fleet.AppVersion{{App: "alarm", Version: "1"}}}, 201},
	} {
		if code, body := s.call(c.method, c.path, c.body, true); code != c.want {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	var view fleetapi.DeploymentView
	testenv.Eventually(t, "the deployment succeeded, seen through the API", func() bool {
		_, body := s.call("GET", "/v1/deployments/d1", nil, true)
		return json.Unmarshal(body, &view) == nil && view.Deployment.State == fleet.DeploymentSucceeded
	})
	if view.Counts[fleet.TargetSucceeded] != 1 || len(view.Targets) != 1 {
		t.Fatalf("view %+v", view)
	}
	_, body := s.call("GET", "/v1/instances", nil, true)
	var ins []fleet.InstanceView
	if err := json.Unmarshal(body, &ins); err != nil || len(ins) != 1 || !ins[0].Current || ins[0].Presence != "online" || ins[0].Labels["site"] != "plant-1" {
		t.Fatalf("instances: %s", body)
	}
	if code, body := s.call("POST", "/v1/deployments/d1/pause", nil, true); code != http.StatusConflict || !strings.Contains(string(body), "succeeded") {
		t.Fatalf("pausing a finished deployment: %d %s", code, body)
	}
}

// TestBadRequests: no token, bad bodies, unknown names: each a clear
// error with its status, and nothing accepted before is lost.
func TestBadRequests(t *testing.T) {
	s := newServer(t, false)
	if code, _ := s.call("POST", "/v1/apps", map[string]string{"name": "alarm", "kind": "function"}, true); code != 201 {
		t.Fatal(code)
	}
	for _, c := range []struct {
		method, path string
		body         any
		auth         bool
		want         int
		says         string
	}{
		{"GET", "/v1/apps", nil, false, 401, "bearer token"},
		{"POST", "/v1/apps", `{"name":"x","kind":"function","extra":1}`, true, 400, "unknown field"},
		{"POST", "/v1/apps", `{"name":"x"`, true, 400, "body"},
		{"POST", "/v1/apps", `{"name":"x","kind":"function"} {}`, true, 400, "after the JSON"},
		{"POST", "/v1/apps", map[string]string{"name": "alarm", "kind": "container"}, true, 409, "function app"},
		{"POST", "/v1/apps/nothing/versions", version("1"), true, 404, "app nothing"},
		{"POST", "/v1/apps/alarm/versions", `{"version":"1","function":{"package":{"url":"ftp://x","sha256":"00"}}}`, true, 400, "url"},
		{"POST", "/v1/deployments", fleetapi.DeploymentRequest{ID: "d", Apps: []fleet.AppVersion{{App: "alarm", Version: "9"}}}, true, 404, "alarm/9"},
		{"POST", "/v1/deployments", fleetapi.DeploymentRequest{ID: "bad id!", Apps: nil}, true, 400, "deployment id"},
		{"GET", "/v1/deployments/nothing", nil, true, 404, "deployment nothing"},
		{"PUT", "/v1/apps/alarm/config", `{}`, true, 400, "group or an instance"},
		{"PUT", "/v1/apps/alarm/config?group=g", `[1]`, true, 404, "group g"},
		{"POST", "/v1/apps", strings.Repeat(" ", app.MaxDocument+1), true, 413, "limit"},
	} {
		code, body := s.call(c.method, c.path, c.body, c.auth)
		if code != c.want || !strings.Contains(string(body), c.says) {
			t.Errorf("%s %s: %d %s, want %d naming %q", c.method, c.path, code, body, c.want, c.says)
		}
	}
	_, body := s.call("GET", "/v1/apps", nil, true)
	var apps []fleet.App
	if err := json.Unmarshal(body, &apps); err != nil || len(apps) != 1 || apps[0].Name != "alarm" || apps[0].Kind != app.KindFunction {
		t.Fatalf("the app accepted before: %s", body)
	}
}

// FuzzBodies: any body to any route is answered below 500 and changes
// nothing already accepted.
func FuzzBodies(f *testing.F) {
	s := newServer(f, false)
	if code, _ := s.call("POST", "/v1/apps", map[string]string{"name": "alarm", "kind": "function"}, true); code != 201 {
		f.Fatal(code)
	}
	routes := []string{"POST /v1/apps", "POST /v1/apps/alarm/versions", "PUT /v1/apps/alarm/config?group=g", "PUT /v1/groups/g", "PUT /v1/instances/gw-1", "POST /v1/deployments", "POST /v1/deployments/d/pause", "POST /v1/deployments/d/cancel"}
	for i, b := range []string{`{}`, `{"name":"a","kind":"function"}`, `{"version":"1"}`, `{"selector":"a=b"}`, `{"labels":{"a":"b"}}`, `{"id":"d","apps":[{"app":"alarm","version":"1"}]}`, `null`, `[]`} {
		f.Add(uint8(i), b)
	}
	f.Fuzz(func(t *testing.T, r uint8, body string) {
		method, path, _ := strings.Cut(routes[int(r)%len(routes)], " ")
		s.t = t
		code, out := s.call(method, path, body, true)
		if code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, code, out)
		}
		a, err := s.f.App(context.Background(), "alarm")
		if err != nil || a.Kind != app.KindFunction {
			t.Fatalf("the app accepted before: %+v %v", a, err)
		}
	})
}

// TestInstancePages: GET /v1/instances filters by label and pages with a
// limit, counting every match in X-Matched and naming the next page in
// Link; a bad limit or filter is 400; every change made with the token
// is in the audit log.
func TestInstancePages(t *testing.T) {
	s := newServer(t, false)
	for _, id := range []string{"gw-1", "gw-2", "gw-3", "gw-4"} {
		if code, body := s.call("PUT", "/v1/instances/"+id, map[string]any{"labels": map[string]string{"site": "a"}}, true); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", id, code, body)
		}
	}
	req, _ := http.NewRequest("GET", s.url+"/v1/instances?selector=site%3Da&limit=3", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page []fleet.InstanceView
	_ = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if len(page) != 3 || resp.Header.Get("X-Matched") != "4" || !strings.Contains(resp.Header.Get("Link"), "after=gw-3") {
		t.Errorf("the first page: %d instances, X-Matched %q, Link %q", len(page), resp.Header.Get("X-Matched"), resp.Header.Get("Link"))
	}
	for _, q := range []string{"limit=0", "limit=x", "presence=asleep", "selector=a%3D%3D"} {
		if code, body := s.call("GET", "/v1/instances?"+q, nil, true); code != http.StatusBadRequest {
			t.Errorf("GET /v1/instances?%s: %d %s", q, code, body)
		}
	}
	code, body := s.call("GET", "/v1/audit", nil, true)
	var es []fleet.AuditEntry
	if code != http.StatusOK || json.Unmarshal(body, &es) != nil || len(es) != 4 || es[0].Actor != "token" || es[0].Object != "gw-4" {
		t.Errorf("the audit log: %d %s", code, body)
	}
}
