package function_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// TestTraceContext: an invocation's W3C trace context reaches the function
// in each runtime: in process (Invocation.Trace), through the Lambda
// runtime API (as the X-Ray header aws-lambda-go puts in _X_AMZN_TRACE_ID),
// and in the native contexts of Go, Node.js and Python.
func TestTraceContext(t *testing.T) {
	testenv.Tool(t, "node")
	testenv.Tool(t, "python3")
	h := newHost(t, nil)
	ctx := context.Background()
	trace := invoke.ParseTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
	var seen invoke.Trace
	_ = h.Register("traced", function.HandlerFunc(func(ctx context.Context, _ invoke.Request) (invoke.Response, error) {
		inv, _ := function.FromContext(ctx)
		seen = inv.Trace
		return invoke.Response{Payload: []byte(`{}`)}, nil
	}))
	deploy(t, h, function.Spec{Name: "traced", Version: "1", Runtime: function.RuntimeGo, Handler: "traced"})
	if _, err := h.Invoke(ctx, "traced", invoke.Request{Trace: trace}); err != nil || seen != trace {
		t.Errorf("in process: %+v %v", seen, err)
	}
	wd, _ := filepath.Abs(".")
	for _, tc := range []struct {
		spec function.Spec
		want string
	}{
		{lambdaSpec("lambda-traced", "echo"), `"trace":"Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"`},
		{nativeSpec("native-traced", "echo"), `"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"congo=t61rcWkgMzE"`},
		{function.Spec{Name: "node-traced", Version: "1", Runtime: function.RuntimeNode, Handler: "index.asyncHandler", CodeDir: filepath.Join(wd, "testdata/node")},
			`"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"congo=t61rcWkgMzE"`},
		{function.Spec{Name: "python-traced", Version: "1", Runtime: function.RuntimePython, Handler: "main.handler", CodeDir: filepath.Join(wd, "testdata/python")},
			`"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "congo=t61rcWkgMzE"`},
	} {
		deploy(t, h, tc.spec)
		resp, err := h.Invoke(ctx, tc.spec.Name, invoke.Request{Payload: []byte(`{}`), Trace: trace})
		if err != nil || !strings.Contains(string(resp.Payload), tc.want) {
			t.Errorf("%s: %s %v, want %s", tc.spec.Name, resp.Payload, err, tc.want)
		}
		// Without trace context, none is made up.
		resp, _ = h.Invoke(ctx, tc.spec.Name, invoke.Request{Payload: []byte(`{}`)})
		var v map[string]any
		_ = json.Unmarshal(resp.Payload, &v)
		if strings.Contains(string(resp.Payload), "4bf92f35") {
			t.Errorf("%s kept the trace context of the call before: %s", tc.spec.Name, resp.Payload)
		}
	}
}
