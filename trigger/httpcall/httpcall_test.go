package httpcall_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateway is a host with the endpoint in front, wired as a gateway does:
// out-of-process functions get the endpoint's address and token.
func gateway(t *testing.T) (*function.Host, *httpcall.Server, string) {
	h, srv, token, _ := gatewayWithCallers(t)
	return h, srv, token
}

// gatewayWithCallers is gateway, and the tokens its functions call with.
func gatewayWithCallers(t *testing.T) (*function.Host, *httpcall.Server, string, *httpcall.Tokens) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	token := httpcall.NewToken()
	callers := httpcall.NewTokens()
	h, err := function.New(&function.Options{
		Env: map[string]string{httpcall.EnvAddr: "http://" + ln.Addr().String()},
		EnvFor: func(s function.Spec) map[string]string {
			return map[string]string{httpcall.EnvToken: callers.Issue(s.Name)}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpcall.Serve(ln, h, &httpcall.Options{Token: token, Callers: callers, MaxBody: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close(context.Background())
		_ = h.Close(context.Background())
	})
	_ = h.Register("greet", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		if string(req.Payload) == `"fail"` {
			return invoke.Response{}, errors.New("cannot greet")
		}
		if string(req.Payload) == `"stack"` {
			return invoke.Response{}, &invoke.Error{Type: "ValueError", Message: "no such boiler", Stack: []string{"  File \"f.py\", line 3, in handler"}}
		}
		if string(req.Payload) == `"who"` {
			return invoke.Response{Payload: []byte(`"` + req.Source["caller"] + `"`), ContentType: "application/json"}, nil
		}
		return invoke.Response{Payload: []byte(`"hello ` + strings.Trim(string(req.Payload), `"`) + `"`), ContentType: "application/json"}, nil
	}))
	if err := h.Deploy(context.Background(), function.Spec{Name: "greet", Version: "1", Runtime: function.RuntimeGo, Handler: "greet"}); err != nil {
		t.Fatal(err)
	}
	return h, srv, token, callers
}

type answer struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, method, url, token, body string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func TestInvoke(t *testing.T) {
	_, srv, token := gateway(t)
	url := srv.URL() + "/v1/functions/greet/invoke"
	if a := do(t, "POST", url, token, `"boiler"`); a.status != 200 || a.body != `"hello boiler"` || a.header.Get("Content-Type") != "application/json" {
		t.Errorf("call: %d %q %v", a.status, a.body, a.header)
	}
	a := do(t, "POST", url, token, `"fail"`)
	if a.status != 200 || a.header.Get("X-Edgekit-Function-Error") == "" || !strings.Contains(a.body, "cannot greet") {
		t.Errorf("function error: %d %q %v", a.status, a.body, a.header)
	}
	// A function's error keeps its stack, in the shape Lambda's Invoke
	// answers it.
	a = do(t, "POST", url, token, `"stack"`)
	var doc struct {
		Message string   `json:"errorMessage"`
		Type    string   `json:"errorType"`
		Stack   []string `json:"stackTrace"`
	}
	if err := json.Unmarshal([]byte(a.body), &doc); err != nil || doc.Type != "ValueError" || doc.Message != "no such boiler" ||
		len(doc.Stack) != 1 || !strings.Contains(doc.Stack[0], "line 3") || a.header.Get("X-Edgekit-Function-Error") != "ValueError" {
		t.Errorf("function error with a stack: %d %q %v", a.status, a.body, a.header)
	}
	for _, tc := range []struct {
		what, method, url, token, body string
		status                         int
		says                           string
	}{
		{"no token", "POST", url, "", `{}`, 401, "bearer token"},
		{"wrong token", "POST", url, strings.Repeat("x", 32), `{}`, 401, "bearer token"},
		{"unknown function", "POST", srv.URL() + "/v1/functions/nobody/invoke", token, `{}`, 404, "nobody"},
		{"body too big", "POST", url, token, strings.Repeat("x", 1001), 413, "body"},
		{"unknown invocation", "GET", srv.URL() + "/v1/invocations/h-0", token, "", 404, "h-0"},
		{"wrong method", "GET", url, token, "", 405, ""},
	} {
		if a := do(t, tc.method, tc.url, tc.token, tc.body); a.status != tc.status || !strings.Contains(a.body, tc.says) {
			t.Errorf("%s: %d %q, want %d saying %q", tc.what, a.status, a.body, tc.status, tc.says)
		}
	}
}

func TestAsync(t *testing.T) {
	_, srv, token := gateway(t)
	a := do(t, "POST", srv.URL()+"/v1/functions/greet/invoke?async=1", token, `"later"`)
	var started struct{ ID string }
	if err := json.Unmarshal([]byte(a.body), &started); err != nil || a.status != 202 || started.ID == "" {
		t.Fatalf("async call: %d %q", a.status, a.body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := do(t, "GET", srv.URL()+"/v1/invocations/"+started.ID, token, "")
		var res struct {
			Status string
			Result json.RawMessage
		}
		_ = json.Unmarshal([]byte(a.body), &res)
		if res.Status == "succeeded" {
			if string(res.Result) != `"hello later"` {
				t.Errorf("result %s", res.Result)
			}
			return
		}
		if res.Status != "running" || time.Now().After(deadline) {
			t.Fatalf("invocation state: %d %q", a.status, a.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFunctionCallsFunction: an out-of-process function calls another
// function through the endpoint, with the address and token it finds in
// its environment.
// TestFunctionCallsFunction: an out-of-process function calls another
// through the endpoint with a token of its own (not the operator's), the
// callee sees who called, and once the token is revoked the call is
// refused.
func TestFunctionCallsFunction(t *testing.T) {
	testenv.Tool(t, "python3")
	h, _, operator, callers := gatewayWithCallers(t)
	dir := t.TempDir()
	code := `import json, os, urllib.error, urllib.request

def handler(event, context):
    req = urllib.request.Request(os.environ["EDGEKIT_API"] + "/v1/functions/greet/invoke",
                                 data=json.dumps(event["name"]).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + os.environ["EDGEKIT_API_TOKEN"]})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return {"relayed": json.load(resp), "token": os.environ["EDGEKIT_API_TOKEN"]}
    except urllib.error.HTTPError as e:
        return {"status": e.code}
`
	if err := os.WriteFile(filepath.Join(dir, "relay.py"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Deploy(context.Background(), function.Spec{Name: "relay", Version: "1", Runtime: function.RuntimePython, Handler: "relay.handler", CodeDir: dir}); err != nil {
		t.Fatal(err)
	}
	call := func(name string) map[string]any {
		t.Helper()
		resp, err := h.Invoke(context.Background(), "relay", invoke.Request{Payload: []byte(`{"name": "` + name + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(resp.Payload, &v); err != nil {
			t.Fatalf("relay answered %q", resp.Payload)
		}
		return v
	}
	v := call("pump")
	if v["relayed"] != "hello pump" {
		t.Errorf("relay answered %v", v)
	}
	if v["token"] == operator || v["token"] != callers.Issue("relay") {
		t.Errorf("the function called with %v: want its own token, not the operator's", v["token"])
	}
	if v := call("who"); v["relayed"] != "relay" {
		t.Errorf("the callee saw the caller as %v, want relay", v["relayed"])
	}
	callers.Revoke("relay")
	if v := call("pump"); v["status"] != float64(401) {
		t.Errorf("a call with a revoked token: %v, want 401", v)
	}
}

func TestTokenRequired(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := httpcall.Serve(ln, nil, &httpcall.Options{Token: "short"}); err == nil || !strings.Contains(err.Error(), "Token") {
		t.Errorf("a short token: %v", err)
	}
}

// TestBounds: asynchronous results are bounded by bytes (the oldest go
// first; one larger than the bound alone is not kept, and says so); an
// unauthenticated request's connection is closed with the answer, its body
// unread; an idle connection is closed after IdleTimeout.
func TestBounds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	token := httpcall.NewToken()
	srv, err := httpcall.Serve(ln, h, &httpcall.Options{Token: token, AsyncResultBytes: 1 << 20, IdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Close(context.Background())
		_ = h.Close(context.Background())
	})
	_ = h.Register("big", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		n := 300 << 10
		if string(req.Payload) == `"huge"` {
			n = 2 << 20
		}
		return invoke.Response{Payload: []byte(`"` + strings.Repeat("x", n) + `"`)}, nil
	}))
	if err := h.Deploy(context.Background(), function.Spec{Name: "big", Version: "1", Runtime: function.RuntimeGo, Handler: "big"}); err != nil {
		t.Fatal(err)
	}
	start := func(body string) string {
		t.Helper()
		a := do(t, "POST", srv.URL()+"/v1/functions/big/invoke?async=1", token, body)
		var v struct{ ID string }
		if err := json.Unmarshal([]byte(a.body), &v); err != nil || a.status != http.StatusAccepted {
			t.Fatalf("async call: %d %s", a.status, a.body)
		}
		return v.ID
	}
	state := func(id string) (int, map[string]any) {
		a := do(t, "GET", srv.URL()+"/v1/invocations/"+id, token, "")
		var v map[string]any
		_ = json.Unmarshal([]byte(a.body), &v)
		return a.status, v
	}
	var ids []string
	for range 8 {
		id := start(`"big"`)
		ids = append(ids, id)
		testenv.Eventually(t, "the asynchronous call finished", func() bool { _, v := state(id); return v["status"] != "running" })
	}
	kept := 0
	for _, id := range ids {
		if status, _ := state(id); status == http.StatusOK {
			kept++
		}
	}
	if kept != 3 { // 3 × 300 KiB fit in 1 MiB, 4 do not
		t.Errorf("%d results of 300 KiB kept under a bound of 1 MiB, want 3", kept)
	}
	if status, _ := state(ids[len(ids)-1]); status != http.StatusOK {
		t.Errorf("the newest result was not kept")
	}
	huge := start(`"huge"`)
	testenv.Eventually(t, "the huge call finished", func() bool { _, v := state(huge); return v["status"] != "running" })
	if _, v := state(huge); v["error_type"] != "ResultNotKept" || v["result"] != nil {
		t.Errorf("a result over the bound: %v", v)
	}

	// Unauthenticated: the answer ends the connection.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v1/functions/big/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(c) // returns once the server has closed the connection
	if err != nil || !strings.HasPrefix(string(resp), "HTTP/1.1 401") {
		t.Errorf("unauthenticated request: %q %v", resp, err)
	}
	// Idle: closed after IdleTimeout, before any request.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("an idle connection: read %d bytes, %v; want it closed", n, err)
	}
}

// TestHandlerMounted: the endpoint as a Handler serves beside a server's
// own routes on one listener; Authorize guards those routes with the same
// tokens and names the caller; Close ends the asynchronous calls, and the
// handler then refuses new ones.
func TestHandlerMounted(t *testing.T) {
	host, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(context.Background())
	release := make(chan struct{})
	_ = host.Register("slow", function.HandlerFunc(func(ctx context.Context, _ invoke.Request) (invoke.Response, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return invoke.Response{Payload: []byte(`"done"`)}, nil
	}))
	if err := host.Deploy(context.Background(), function.Spec{Name: "slow", Version: "1", Runtime: function.RuntimeGo, Handler: "slow"}); err != nil {
		t.Fatal(err)
	}
	token := httpcall.NewToken()
	callers := httpcall.NewTokens()
	h, err := httpcall.NewHandler(host, &httpcall.Options{Token: token, Callers: callers})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/functions/", h)
	mux.Handle("/v1/invocations/", h)
	mux.Handle("GET /v1/whoami", h.Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := httpcall.Caller(r.Context())
		_, _ = io.WriteString(w, c)
	})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpcall.NewHTTPServer(mux, 0)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	if a := do(t, "GET", base+"/v1/whoami", token, ""); a.status != 200 || a.body != "operator" {
		t.Errorf("whoami as the operator: %+v", a)
	}
	if a := do(t, "GET", base+"/v1/whoami", callers.Issue("f1"), ""); a.status != 200 || a.body != "f1" {
		t.Errorf("whoami as f1: %+v", a)
	}
	if a := do(t, "GET", base+"/v1/whoami", "wrong-token-wrong-token", ""); a.status != 401 {
		t.Errorf("whoami with a wrong token: %+v", a)
	}
	a := do(t, "POST", base+"/v1/functions/slow/invoke?async=1", token, `{}`)
	var started struct{ ID string }
	if a.status != 202 || json.Unmarshal([]byte(a.body), &started) != nil {
		t.Fatalf("async invoke: %+v", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	// At its deadline Close cancels the call in flight: it says so, or
	// nothing when the cancelled call ended at once (drain.Wait) — under
	// load it sometimes does.
	if err := h.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a call in flight past its deadline: %v", err)
	}
	// The handler ends only when released or cancelled: it ends unreleased.
	testenv.Eventually(t, "the call Close cancelled ends", func() bool {
		a := do(t, "GET", base+"/v1/invocations/"+started.ID, token, "")
		return a.status == 200 && strings.Contains(a.body, `"finished"`)
	})
	close(release)
	if a := do(t, "POST", base+"/v1/functions/slow/invoke?async=1", token, `{}`); a.status != 503 {
		t.Errorf("async invoke after Close: %+v, want 503", a)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestTraceHeaders: a call's traceparent and tracestate headers reach the
// function; malformed ones do not.
func TestTraceHeaders(t *testing.T) {
	h, srv, token := gateway(t)
	var got invoke.Trace
	_ = h.Register("traced", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		got = req.Trace
		return invoke.Response{Payload: []byte(`{}`)}, nil
	}))
	if err := h.Deploy(context.Background(), function.Spec{Name: "traced", Version: "1", Runtime: function.RuntimeGo, Handler: "traced"}); err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for parent, want := range map[string]string{tp: tp, "00-zz": ""} {
		req, _ := http.NewRequest("POST", srv.URL()+"/v1/functions/traced/invoke", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("traceparent", parent)
		req.Header.Set("tracestate", "a=b")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got.Parent != want || (want != "" && got.State != "a=b") {
			t.Errorf("traceparent %q: the function saw %+v", parent, got)
		}
	}
}
