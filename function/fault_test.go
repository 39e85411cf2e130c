package function_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/invoke"
)

// TestHotDeployOutOfProcessUnderLoad: 100 deploys of an out-of-process
// function while callers invoke it continuously: every call gets exactly
// one answer, and none is an error.
func TestHotDeployOutOfProcessUnderLoad(t *testing.T) {
	h := newHost(t, nil)
	s := nativeSpec("hot-native", "echo")
	s.MaxInstances, s.QueueSize = 2, 1000
	deployUnderLoad(t, h, s, func(int) {})
}

// TestFloodOfOutput: a function writing 100 MB to stdout does not stop the
// host or slow another function's invocations to failure.
func TestFloodOfOutput(t *testing.T) {
	needs(t, "python3")
	h := newHost(t, nil)
	dir := codeDir(t, "python")
	flood := function.Spec{Name: "flood", Version: "1", Runtime: function.RuntimePython, Handler: "main.flood", CodeDir: dir, Timeout: function.Duration(2 * time.Minute)}
	deploy(t, h, flood)
	deploy(t, h, nativeSpec("steady", "echo"))
	done := make(chan error, 1)
	go func() {
		_, err := h.Invoke(context.Background(), "flood", invoke.Request{Payload: []byte(`{}`)})
		done <- err
	}()
	steady := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flooding function: %v", err)
			}
			if steady == 0 {
				t.Error("no other invocation completed while the flood ran")
			}
			t.Logf("%d invocations of another function during 100 MB of output", steady)
			return
		default:
		}
		if _, err := h.Invoke(context.Background(), "steady", invoke.Request{Payload: []byte(`{}`)}); err != nil {
			t.Fatalf("another function during the flood: %v", err)
		}
		steady++
	}
}

// TestFunctionThatKeepsExiting: a continuous function whose process exits
// shortly after every start is restarted with backoff, then marked crash
// looping; Status and the logs say why, and other functions keep working.
func TestFunctionThatKeepsExiting(t *testing.T) {
	h := newHost(t, nil)
	s := lambdaSpec("exits", "exit-soon")
	s.Mode = function.Continuous
	deploy(t, h, s)
	deploy(t, h, nativeSpec("steady", "echo"))
	deadline := time.Now().Add(20 * time.Second)
	st, _ := h.Status("exits")
	for ; st.CrashLoop == ""; st, _ = h.Status("exits") {
		if time.Now().After(deadline) {
			t.Fatalf("no crash loop reported: %+v", st)
		}
		if _, err := h.Invoke(context.Background(), "steady", invoke.Request{Payload: []byte(`{}`)}); err != nil {
			t.Fatalf("another function while one keeps exiting: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Stats.ColdStarts < 3 || !strings.Contains(st.CrashLoop, "exited") {
		t.Errorf("crash loop after %d starts: %q", st.Stats.ColdStarts, st.CrashLoop)
	}
	if _, err := h.Invoke(context.Background(), "exits", invoke.Request{}); !errors.Is(err, invoke.ErrUnavailable) {
		t.Errorf("invoke of the crash-looping function: %v", err)
	}
	rs, _ := h.Logs(logstore.Query{Function: "exits", Contains: "giving up"})
	if len(rs) == 0 {
		t.Error("the function's last words are not in its logs")
	}
}
