package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
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

// TestNativeCallEndsEarly: the caller's wait for a native reply ends as
// soon as the caller gives up or the process exits, not at the deadline,
// and the function serves again afterwards.
func TestNativeCallEndsEarly(t *testing.T) {
	h := newHost(t, nil)
	slow := nativeSpec("nat-slow", "sleep")
	slow.Timeout = function.Duration(time.Minute)
	deploy(t, h, slow)
	exits := nativeSpec("nat-exit", "exit")
	exits.Timeout = function.Duration(time.Minute)
	deploy(t, h, exits)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := h.Invoke(ctx, "nat-slow", invoke.Request{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled call: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the cancelled call returned after %v", d)
	}

	start = time.Now()
	var fe *invoke.Error
	_, err := h.Invoke(context.Background(), "nat-exit", invoke.Request{})
	if !errors.As(err, &fe) || fe.Type != "Runtime.ExitError" || !strings.Contains(fe.Message, "exit status 3") {
		t.Errorf("call to a function that exits: %v, want a Runtime.ExitError naming exit status 3", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the call whose process exited returned after %v", d)
	}

	// Both instances are replaced; the versions serve again.
	redeploy := nativeSpec("nat-slow", "echo")
	redeploy.Version = "2"
	deploy(t, h, redeploy)
	if _, err := h.Invoke(context.Background(), "nat-slow", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Errorf("after the cancelled call: %v", err)
	}
	st, _ := h.Status("nat-exit")
	if st.Stats.Invocations != 1 || st.Stats.Errors != 1 {
		t.Errorf("nat-exit stats %+v", st.Stats)
	}
}

// TestMetricNamesBounded: a function that reports thousands of metric
// names keeps at most 64 of them in the host; the refusal is logged.
func TestMetricNamesBounded(t *testing.T) {
	var logs testenv.Buffer
	h := newHost(t, &function.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	deploy(t, h, nativeSpec("metrics", "many-metrics"))
	if _, err := h.Invoke(context.Background(), "metrics", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the refusal of the 65th metric logged", func() bool { return strings.Contains(logs.String(), "metric refused") })
	if st, _ := h.Status("metrics"); len(st.Metrics) != 64 {
		t.Fatalf("%d metrics kept, want 64", len(st.Metrics))
	}
}
