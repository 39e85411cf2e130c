package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

func nativeSpec(name, behaviour string) function.Spec {
	return function.Spec{Name: name, Version: "1", Runtime: function.RuntimeExecutable, API: function.APINative, Handler: "native", CodeDir: binDir,
		Env: map[string]string{"TEST_BEHAVIOUR": behaviour}}
}

func TestNativeGoFunction(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, nativeSpec("nat", "echo"))
	deploy(t, h, nativeSpec("nat-error", "error"))
	deploy(t, h, nativeSpec("nat-panic", "panic"))
	s := nativeSpec("nat-slow", "sleep")
	s.Timeout = function.Duration(300 * time.Millisecond)
	deploy(t, h, s)
	ctx := context.Background()

	resp, err := h.Invoke(ctx, "nat", invoke.Request{Payload: []byte(`{"x":1}`), Source: map[string]string{"topic": "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Event map[string]int
		Inv   struct {
			RequestID, Function, Version string
			Source                       map[string]string
		}
		DeadlineOK bool `json:"deadline_ok"`
	}
	if err := json.Unmarshal(resp.Payload, &got); err != nil {
		t.Fatalf("%q: %v", resp.Payload, err)
	}
	if got.Event["x"] != 1 || got.Inv.Function != "nat" || got.Inv.Version != "1" || got.Inv.RequestID == "" || got.Inv.Source["topic"] != "t" || !got.DeadlineOK {
		t.Errorf("native invocation: %+v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := h.Status("nat"); st.Metrics["calls"] != 1; st, _ = h.Status("nat") {
		if time.Now().After(deadline) {
			t.Fatalf("metric frame not recorded: %v", st.Metrics)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var fe *invoke.Error
	if _, err := h.Invoke(ctx, "nat-error", invoke.Request{}); !errors.As(err, &fe) || fe.Message != "native failure" {
		t.Errorf("native error: %v", err)
	}
	if _, err := h.Invoke(ctx, "nat-panic", invoke.Request{}); !errors.As(err, &fe) || fe.Type != "Panic" || fe.Message != "native panic" {
		t.Errorf("native panic: %v", err)
	}
	if _, err := h.Invoke(ctx, "nat-slow", invoke.Request{}); !errors.Is(err, invoke.ErrTimeout) {
		t.Errorf("native timeout: %v", err)
	}
	// After the timeout killed the instance, a new one serves.
	if _, err := h.Invoke(ctx, "nat", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Errorf("after another function's timeout: %v", err)
	}
}
