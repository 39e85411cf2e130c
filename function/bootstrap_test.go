package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// needs requires an interpreter (testenv.Tool).
func needs(t *testing.T, tool string) {
	t.Helper()
	testenv.Tool(t, tool)
}

func codeDir(t *testing.T, name string) string {
	dir, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// eachAPI runs f once per runtime API, where tool is installed.
func eachAPI(t *testing.T, tool string, apis []function.API, f func(*testing.T, function.API)) {
	needs(t, tool)
	for _, api := range apis {
		t.Run(string(api), func(t *testing.T) { f(t, api) })
	}
}

func TestNodeBootstrap(t *testing.T) {
	eachAPI(t, "node", []function.API{function.APINative, function.APILambda}, testNode)
}

func testNode(t *testing.T, api function.API) {
	h := newHost(t, nil)
	dir := codeDir(t, "node")
	for _, name := range []string{"asyncHandler", "callbackHandler", "failing", "callbackError"} {
		deploy(t, h, function.Spec{Name: "node-" + name, Version: "1", Runtime: function.RuntimeNode, API: api, Handler: "index." + name, CodeDir: dir})
	}
	ctx := context.Background()
	resp, err := h.Invoke(ctx, "node-asyncHandler", invoke.Request{Payload: []byte(`{"t":1}`), Source: map[string]string{"topic": "x/y"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(resp.Payload, &got)
	if ev, _ := json.Marshal(got["event"]); string(ev) != `{"t":1}` || got["functionName"] != "node-asyncHandler" || got["requestId"] == "" {
		t.Errorf("async handler: %s", resp.Payload)
	}
	if r, _ := got["remaining"].(float64); r <= 0 {
		t.Errorf("remaining time %v", got["remaining"])
	}
	if c, _ := got["custom"].(map[string]any); c["topic"] != "x/y" {
		t.Errorf("client context %v", got["custom"])
	}
	// What the handler printed is in the log store with its request id by
	// the time the invocation returns.
	rid, _ := got["requestId"].(string)
	if recs, err := h.Logs(logstore.Query{Function: "node-asyncHandler", RequestID: rid, Contains: "node handling"}); err != nil || len(recs) != 1 {
		t.Errorf("console.log line of %s: %+v %v", rid, recs, err)
	}
	resp, err = h.Invoke(ctx, "node-callbackHandler", invoke.Request{Payload: []byte(`"e"`)})
	if err != nil || string(resp.Payload) != `{"callback":true,"event":"e"}` {
		t.Errorf("callback handler: %q %v", resp.Payload, err)
	}
	for name, want := range map[string]string{"node-failing": "TypeError", "node-callbackError": "RangeError"} {
		_, err := h.Invoke(ctx, name, invoke.Request{Payload: []byte(`{}`)})
		var fe *invoke.Error
		if !errors.As(err, &fe) || fe.Type != want || len(fe.Stack) == 0 {
			t.Errorf("%s: %v, want an error of type %s with a stack", name, err, want)
		}
	}
	err = h.Deploy(ctx, function.Spec{Name: "node-missing", Version: "1", Runtime: function.RuntimeNode, API: api, Handler: "index.nope", CodeDir: dir})
	if err == nil || !strings.Contains(err.Error(), "init error") || !strings.Contains(err.Error(), "Runtime.HandlerNotFound") {
		t.Errorf("deploy with a missing export: %v", err)
	}
	err = h.Deploy(ctx, function.Spec{Name: "node-broken", Version: "1", Runtime: function.RuntimeNode, API: api, Handler: "broken/index.handler", CodeDir: dir})
	if err == nil || !strings.Contains(err.Error(), "Runtime.UserCodeSyntaxError") {
		t.Errorf("deploy of a module with a syntax error: %v", err)
	}
	testNodeLambda(t, h, api, dir)
}

// caller returns a function that deploys base under a name and handler
// and invokes it once with event (and a client context {"k": "v"}).
func caller(t *testing.T, h *function.Host, base function.Spec) func(name, handler, event string) (string, error) {
	return func(name, handler, event string) (string, error) {
		t.Helper()
		s := base
		s.Name, s.Handler = name, handler
		deploy(t, h, s)
		resp, err := h.Invoke(context.Background(), name, invoke.Request{Payload: []byte(event), Source: map[string]string{"k": "v"}})
		return string(resp.Payload), err
	}
}

// testNodeLambda: the module forms, handler styles, context and error
// shapes of Lambda's Node.js runtime.
func testNodeLambda(t *testing.T, h *function.Host, api function.API, dir string) {
	call := caller(t, h, function.Spec{Version: "1", Runtime: function.RuntimeNode, API: api, CodeDir: dir})
	for _, c := range []struct{ name, handler, want string }{
		{"esm", "esm/index.handler", `"esm":true`},                                 // .mjs
		{"cjs", "cjs/index.handler", `{"cjs":true,"event":7}`},                     // .cjs
		{"module", "module/app.handlers.temperature", `{"module":true,"event":7}`}, // "type": "module", nested export
		{"succeed", "index.succeed", `{"succeeded":7}`},
		{"waits", "index.waits", `{"waits":true,"timer":true}`},
		{"no-wait", "index.noWait", `{"timer":false}`},
		{"silent", "index.silent", `null`},
	} {
		got, err := call("node-"+c.name, c.handler, `7`)
		if err != nil || !strings.Contains(got, c.want) {
			t.Errorf("%s (%s): %q %v, want %s", c.name, c.handler, got, err, c.want)
		}
	}
	for _, c := range []struct{ name, handler, typ, msg string }{
		{"callback-string", "index.callbackString", "string", "plain text error"},
		{"context-fail", "index.fail", "Error", "failed through the context"},
		{"circular", "index.circular", "Runtime.MarshalError", "Unable to stringify"},
	} {
		_, err := call("node-"+c.name, c.handler, `{}`)
		var fe *invoke.Error
		if !errors.As(err, &fe) || fe.Type != c.typ || !strings.Contains(fe.Message, c.msg) {
			t.Errorf("%s: %v, want type %s saying %q", c.name, err, c.typ, c.msg)
		}
	}
	// Lambda's trace keeps the error's first line and names the file.
	_, err := call("node-failing-trace", "index.failing", `{}`)
	var fe *invoke.Error
	if !errors.As(err, &fe) || len(fe.Stack) < 2 || fe.Stack[0] != "TypeError: bad reading" || !strings.Contains(strings.Join(fe.Stack, "\n"), "index.js") {
		t.Errorf("stack of a thrown error: %v %q", err, fe.Stack)
	}
	got, err := call("node-context", "index.context", `{}`)
	var c struct {
		Types   map[string]string
		Memory  string `json:"memoryLimitInMB"`
		ARN     string `json:"invokedFunctionArn"`
		Group   string `json:"logGroupName"`
		Stream  string `json:"logStreamName"`
		Version string `json:"functionVersion"`
		Waits   bool   `json:"callbackWaitsForEmptyEventLoop"`
		ExecEnv string `json:"executionEnv"`
	}
	if err != nil || json.Unmarshal([]byte(got), &c) != nil {
		t.Fatalf("context: %q %v", got, err)
	}
	for k, typ := range map[string]string{"awsRequestId": "string", "functionName": "string", "functionVersion": "string", "invokedFunctionArn": "string",
		"memoryLimitInMB": "string", "logGroupName": "string", "logStreamName": "string", "callbackWaitsForEmptyEventLoop": "boolean",
		"getRemainingTimeInMillis": "function", "succeed": "function", "fail": "function", "done": "function"} {
		if c.Types[k] != typ {
			t.Errorf("context.%s is %q, want %s", k, c.Types[k], typ)
		}
	}
	if c.Memory != "128" || c.ARN != "arn:aws:lambda:edge:000000000000:function:node-context:1" || c.Group != "/aws/lambda/node-context" ||
		!strings.Contains(c.Stream, "[1]") || c.Version != "1" || !c.Waits || !strings.HasPrefix(c.ExecEnv, "AWS_Lambda_nodejs") {
		t.Errorf("context: %+v", c)
	}
	// _X_AMZN_TRACE_ID is the invocation's X-Ray trace id. Without a
	// trace it is gone on the native protocol; on the runtime API the host
	// sends a root of its own, as Lambda does.
	trace := invoke.Trace{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	traced := `"traceId":"Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"`
	untraced := `"traceId":null`
	if api == function.APILambda {
		untraced = `"traceId":"Root=1-`
	}
	for _, c := range []struct {
		trace invoke.Trace
		want  string
	}{{trace, traced}, {invoke.Trace{}, untraced}, {trace, traced}} {
		resp, err := h.Invoke(context.Background(), "node-context", invoke.Request{Payload: []byte(`{}`), Trace: c.trace})
		if got := string(resp.Payload); err != nil || !strings.Contains(got, c.want) || (!c.trace.Valid() && strings.Contains(got, "b7ad6b7169203331")) {
			t.Errorf("trace %q: %s %v, want %s", c.trace.Parent, got, err, c.want)
		}
	}
}

// TestNodeFunctionCompute: a Node.js function written for Function
// Compute gets its event as a Buffer and FC's context, on FC's runtime API
// and on the native protocol, and a string result goes back as its bytes.
func TestNodeFunctionCompute(t *testing.T) {
	eachAPI(t, "node", []function.API{function.APINative, function.APIFC}, func(t *testing.T, api function.API) {
		h := newHost(t, nil)
		dir := codeDir(t, "node")
		for _, name := range []string{"fc", "fcText"} {
			deploy(t, h, function.Spec{Name: "node-" + name, Version: "1", Service: function.ServiceFC, Runtime: function.RuntimeNode, API: api,
				Handler: "index." + name, CodeDir: dir, Timeout: function.Duration(9 * time.Second), MemoryLimitMB: 64})
		}
		resp, err := h.Invoke(context.Background(), "node-fc", invoke.Request{Payload: []byte(`{"t":1}`)})
		var got struct {
			IsBuffer    bool           `json:"isBuffer"`
			Text        string         `json:"text"`
			RequestID   string         `json:"requestId"`
			Function    map[string]any `json:"function"`
			Service     map[string]any `json:"service"`
			Credentials map[string]any `json:"credentials"`
			Region      string         `json:"region"`
			Account     string         `json:"accountId"`
			Remaining   bool           `json:"remaining"`
		}
		if err != nil || json.Unmarshal(resp.Payload, &got) != nil {
			t.Fatalf("fc: %q %v", resp.Payload, err)
		}
		if !got.IsBuffer || got.Text != `{"t":1}` || got.RequestID == "" || !got.Remaining || got.Region != "edge" || got.Account != "000000000000" {
			t.Errorf("fc event and context: %s", resp.Payload)
		}
		if got.Function["name"] != "node-fc" || got.Function["handler"] != "index.fc" || got.Function["memory"] != float64(64) || got.Function["timeout"] != float64(9) {
			t.Errorf("context.function: %v", got.Function)
		}
		if got.Service["name"] != "node-fc" || got.Service["qualifier"] != "1" {
			t.Errorf("context.service: %v", got.Service)
		}
		if _, ok := got.Credentials["accessKeyId"]; !ok {
			t.Errorf("context.credentials: %v", got.Credentials)
		}
		resp, err = h.Invoke(context.Background(), "node-fcText", invoke.Request{Payload: []byte(`abc`)})
		if err != nil || string(resp.Payload) != "plain abc" {
			t.Errorf("fc string result: %q %v", resp.Payload, err)
		}
	})
}

func TestPythonBootstrap(t *testing.T) {
	eachAPI(t, "python3", []function.API{function.APINative, function.APILambda}, testPython)
}

func testPython(t *testing.T, api function.API) {
	h := newHost(t, nil)
	dir := codeDir(t, "python")
	deploy(t, h, function.Spec{Name: "py", Version: "1", Runtime: function.RuntimePython, API: api, Handler: "main.handler", CodeDir: dir})
	deploy(t, h, function.Spec{Name: "py-fail", Version: "1", Runtime: function.RuntimePython, API: api, Handler: "main.failing", CodeDir: dir})
	ctx := context.Background()
	resp, err := h.Invoke(ctx, "py", invoke.Request{Payload: []byte(`[1,2]`), Source: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(resp.Payload, &got)
	if ev, _ := json.Marshal(got["event"]); string(ev) != `[1,2]` || got["function_name"] != "py" || got["remaining_positive"] != true || got["request_id"] == "" {
		t.Errorf("python handler: %s", resp.Payload)
	}
	if c, _ := got["custom"].(map[string]any); c["k"] != "v" {
		t.Errorf("client context %v", got["custom"])
	}
	_, err = h.Invoke(ctx, "py-fail", invoke.Request{Payload: []byte(`{}`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "ValueError" || fe.Message != "bad reading" || len(fe.Stack) == 0 {
		t.Errorf("python error: %v", err)
	}
	err = h.Deploy(ctx, function.Spec{Name: "py-broken", Version: "1", Runtime: function.RuntimePython, API: api, Handler: "broken.handler", CodeDir: dir})
	if err == nil || !strings.Contains(err.Error(), "module_that_does_not_exist") || !strings.Contains(err.Error(), "Runtime.ImportModuleError") {
		t.Errorf("deploy of a module that fails to import: %v", err)
	}
	testPythonLambda(t, h, api, dir)
}

// testPythonLambda: the handler forms, serialisation, context and logging
// of Lambda's Python runtime.
func testPythonLambda(t *testing.T, h *function.Host, api function.API, dir string) {
	call := caller(t, h, function.Spec{Version: "1", Runtime: function.RuntimePython, API: api, CodeDir: dir})
	for _, c := range []struct{ name, handler, want string }{
		{"path-form", "pkg/mod.handler", `{"path_form": true, "event": 7}`},
		{"dotted-form", "pkg.mod.handler", `{"path_form": true, "event": 7}`},
		{"decimal", "main.decimal_result", `{"count": 3.0, "reading": 21.5}`},
	} {
		if got, err := call("py-"+c.name, c.handler, `7`); err != nil || got != c.want {
			t.Errorf("%s (%s): %q %v, want %s", c.name, c.handler, got, err, c.want)
		}
	}
	_, err := call("py-datetime", "main.datetime_result", `{}`)
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "Runtime.MarshalError" || fe.Message != "Unable to marshal response: Object of type datetime is not JSON serializable" {
		t.Errorf("datetime result: %v, want Runtime.MarshalError", err)
	}
	// Lambda's stack: the handler's frames, formatted, without the runtime's.
	_, err = call("py-failing-stack", "main.failing", `{}`)
	if !errors.As(err, &fe) || len(fe.Stack) != 1 || !strings.Contains(fe.Stack[0], "main.py") || !strings.Contains(fe.Stack[0], "in failing") {
		t.Errorf("stack: %v %q", err, fe.Stack)
	}
	got, err := call("py-context", "main.context_members", `{}`)
	var c map[string]any
	if err != nil || json.Unmarshal([]byte(got), &c) != nil {
		t.Fatalf("context: %q %v", got, err)
	}
	if c["memory_limit_in_mb"] != "128" || c["invoked_function_arn"] != "arn:aws:lambda:edge:000000000000:function:py-context:1" ||
		c["log_group_name"] != "/aws/lambda/py-context" || !strings.Contains(fmt.Sprint(c["log_stream_name"]), "[1]") || c["function_version"] != "1" ||
		fmt.Sprint(c["custom"]) != "map[k:v]" || !strings.HasPrefix(fmt.Sprint(c["execution_env"]), "AWS_Lambda_python3.") {
		t.Errorf("context: %s", got)
	}
	// Records of the logging module and print() lines reach the log store
	// with the request id before the invocation's REPORT.
	rid, err := call("py-logs", "main.logs", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	rid = strings.Trim(rid, `"`)
	recs, err := h.Logs(logstore.Query{Function: "py-logs", RequestID: rid})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.Message)
	}
	all := strings.Join(lines, "\n")
	if len(recs) != 3 || !strings.Contains(all, "[INFO]\t") || !strings.Contains(all, "\t"+rid+"\tlogged through logging "+rid) ||
		!strings.Contains(all, "printed by "+rid) || !strings.Contains(all, "REPORT") {
		t.Errorf("records of request %s: %q", rid, lines)
	}
}

// TestPythonFunctionCompute: a Python function written for Function
// Compute gets its event as bytes and FC's context, on FC's runtime API
// and on the native protocol, and a str result goes back as its bytes.
func TestPythonFunctionCompute(t *testing.T) {
	eachAPI(t, "python3", []function.API{function.APINative, function.APIFC}, func(t *testing.T, api function.API) {
		h := newHost(t, nil)
		dir := codeDir(t, "python")
		for _, name := range []string{"fc", "fc_text"} {
			deploy(t, h, function.Spec{Name: "py-" + strings.ReplaceAll(name, "_", "-"), Version: "1", Service: function.ServiceFC, Runtime: function.RuntimePython, API: api,
				Handler: "main." + name, CodeDir: dir, Timeout: function.Duration(9 * time.Second), MemoryLimitMB: 64})
		}
		resp, err := h.Invoke(context.Background(), "py-fc", invoke.Request{Payload: []byte(`{"t":1}`)})
		var got map[string]any
		if err != nil || json.Unmarshal(resp.Payload, &got) != nil {
			t.Fatalf("fc: %q %v", resp.Payload, err)
		}
		if got["is_bytes"] != true || got["text"] != `{"t":1}` || got["request_id"] == "" || got["region"] != "edge" || got["account_id"] != "000000000000" || got["access_key_id"] != "" ||
			fmt.Sprint(got["function"]) != "map[handler:main.fc memory:64 name:py-fc timeout:9]" || fmt.Sprint(got["service"]) != "map[name:py-fc qualifier:1]" {
			t.Errorf("fc event and context: %s", resp.Payload)
		}
		resp, err = h.Invoke(context.Background(), "py-fc-text", invoke.Request{Payload: []byte(`abc`)})
		if err != nil || string(resp.Payload) != "plain abc" {
			t.Errorf("fc str result: %q %v", resp.Payload, err)
		}
	})
}
