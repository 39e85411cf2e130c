package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// TestAWSLambdaRIC: a Node.js function started by AWS's own runtime
// interface client (npm aws-lambda-ric, its native client built by make
// test), as container-image and custom-runtime Lambda functions start,
// runs unchanged: the executable is the code directory's bootstrap, the
// handler reaches the client as _HANDLER, the context is whole, and a
// thrown error comes back with its type and stack.
func TestAWSLambdaRIC(t *testing.T) {
	testenv.Tool(t, "node")
	dir := codeDir(t, "ric")
	if _, err := os.Stat(filepath.Join(dir, "node_modules/aws-lambda-ric/dist/rapid-client.node")); err != nil {
		testenv.Missing(t, fmt.Errorf("aws-lambda-ric is not installed in %s (scripts/install-deps.sh runs npm install there): %w", dir, err))
	}
	h := newHost(t, nil)
	for _, name := range []string{"handler", "failing"} {
		deploy(t, h, function.Spec{Name: "ric-" + name, Version: "1", Runtime: function.RuntimeExecutable, Handler: "index." + name, CodeDir: dir})
	}
	resp, err := h.Invoke(context.Background(), "ric-handler", invoke.Request{Payload: []byte(`{"t":1}`)})
	var got struct {
		RIC       bool           `json:"ric"`
		Event     map[string]int `json:"event"`
		RequestID string         `json:"requestId"`
		Function  string         `json:"functionName"`
		ARN       string         `json:"arn"`
		Memory    string         `json:"memory"`
		LogGroup  string         `json:"logGroup"`
		LogStream string         `json:"logStream"`
		Remaining bool           `json:"remaining"`
	}
	if err != nil || json.Unmarshal(resp.Payload, &got) != nil {
		t.Fatalf("invoke through aws-lambda-ric: %q %v", resp.Payload, err)
	}
	if !got.RIC || got.Event["t"] != 1 || got.RequestID == "" || got.Function != "ric-handler" || got.ARN != "arn:aws:lambda:edge:000000000000:function:ric-handler:1" ||
		got.Memory != "128" || got.LogGroup != "/aws/lambda/ric-handler" || got.LogStream == "" || !got.Remaining {
		t.Errorf("result and context: %s", resp.Payload)
	}
	// Warm: the client serves the next invocation in the same process.
	if _, err := h.Invoke(context.Background(), "ric-handler", invoke.Request{Payload: []byte(`{"t":2}`)}); err != nil {
		t.Errorf("second invocation: %v", err)
	}
	_, err = h.Invoke(context.Background(), "ric-failing", invoke.Request{Payload: []byte(`{}`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "TypeError" || fe.Message != "bad reading from the ric" || !strings.Contains(strings.Join(fe.Stack, "\n"), "index.mjs") {
		t.Errorf("thrown error: %v, stack %q", err, fe.Stack)
	}
}
