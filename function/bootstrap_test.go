package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
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

func TestNodeBootstrap(t *testing.T) {
	needs(t, "node")
	for _, api := range []function.API{function.APINative, function.APILambda} {
		t.Run(string(api), func(t *testing.T) { testNode(t, api) })
	}
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
	if err == nil || !strings.Contains(err.Error(), "init error") || !strings.Contains(err.Error(), "not an exported function") {
		t.Errorf("deploy with a missing export: %v", err)
	}
}

func TestPythonBootstrap(t *testing.T) {
	needs(t, "python3")
	for _, api := range []function.API{function.APINative, function.APILambda} {
		t.Run(string(api), func(t *testing.T) { testPython(t, api) })
	}
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
	if err == nil || !strings.Contains(err.Error(), "module_that_does_not_exist") {
		t.Errorf("deploy of a module that fails to import: %v", err)
	}
}
