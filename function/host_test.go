package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/internal/testprograms"
	"github.com/edgekit/edgekit/invoke"
)

// binDir holds the test functions TestMain builds (lambda, fc, native).
var binDir string

func TestMain(m *testing.M) {
	if dir := os.Getenv("EDGEKIT_KILLED_HOST"); dir != "" {
		killedHost(dir)
		return
	}
	testprograms.Main(m, &binDir, "./internal/testfunctions/lambda", "./internal/testfunctions/fc",
		"./internal/testfunctions/native", "./internal/testfunctions/pipeecho")
}

func newHost(t *testing.T, o *function.Options) *function.Host {
	t.Helper()
	h, err := function.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func register(t *testing.T, h *function.Host, name string, f func(ctx context.Context, req invoke.Request) (invoke.Response, error)) {
	t.Helper()
	if err := h.Register(name, function.HandlerFunc(f)); err != nil {
		t.Fatal(err)
	}
}

func deploy(t *testing.T, h *function.Host, s function.Spec) {
	t.Helper()
	if s.Runtime == "" {
		s.Runtime = function.RuntimeGo
	}
	if err := h.Deploy(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func echo(ctx context.Context, req invoke.Request) (invoke.Response, error) {
	return invoke.Response{Payload: req.Payload}, nil
}

func TestInvokeWithMetadata(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "meta", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		inv, ok := function.FromContext(ctx)
		if !ok {
			return invoke.Response{}, errors.New("no invocation in context")
		}
		d, _ := ctx.Deadline()
		function.Logger(ctx).Info("handling")
		out, _ := json.Marshal(map[string]any{
			"function": inv.Function, "version": inv.Version, "config": inv.Config, "source": inv.Source,
			"request_id": inv.RequestID(), "instance": inv.Instance, "deadline_ok": time.Until(d) > 0 && time.Until(d) <= 2*time.Second,
		})
		return invoke.Response{Payload: out, ContentType: "application/json"}, nil
	})
	deploy(t, h, function.Spec{Name: "meta", Version: "1.0", Handler: "meta", Timeout: function.Duration(2 * time.Second), Config: json.RawMessage(`{"threshold":5}`)})
	resp, err := h.Invoke(context.Background(), "meta", invoke.Request{Payload: []byte("{}"), Source: map[string]string{"type": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(resp.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if got["function"] != "meta" || got["version"] != "1.0" || got["deadline_ok"] != true || got["request_id"] == "" || got["instance"] == "" {
		t.Errorf("invocation metadata: %v", got)
	}
	if c, _ := json.Marshal(got["config"]); string(c) != `{"threshold":5}` {
		t.Errorf("config %s", c)
	}
	if s, _ := got["source"].(map[string]any); s["type"] != "test" {
		t.Errorf("source %v", got["source"])
	}
}

var errSensor = errors.New("sensor offline")

func TestErrorsAndPanics(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "fail", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		switch string(req.Payload) {
		case "error":
			return invoke.Response{}, fmt.Errorf("reading: %w", errSensor)
		case "panic":
			panic("boom")
		}
		return invoke.Response{Payload: []byte("ok")}, nil
	})
	deploy(t, h, function.Spec{Name: "fail", Version: "1", Handler: "fail"})
	ctx := context.Background()

	_, err := h.Invoke(ctx, "fail", invoke.Request{Payload: []byte("error")})
	var fe *invoke.Error
	if !errors.Is(err, invoke.ErrFunction) || !errors.Is(err, errSensor) || !errors.As(err, &fe) || fe.Function != "fail" {
		t.Errorf("handler error: %v, want an *invoke.Error wrapping the handler's error", err)
	}
	_, err = h.Invoke(ctx, "fail", invoke.Request{Payload: []byte("panic")})
	if !errors.As(err, &fe) || fe.Type != "Panic" || fe.Message != "boom" {
		t.Errorf("panic: %v, want an *invoke.Error of type Panic", err)
	}
	if resp, err := h.Invoke(ctx, "fail", invoke.Request{}); err != nil || string(resp.Payload) != "ok" {
		t.Errorf("after a panic: %q %v", resp.Payload, err)
	}
	st, _ := h.Status("fail")
	if st.Stats.Invocations != 3 || st.Stats.Errors != 2 || !strings.Contains(st.LastError, "boom") {
		t.Errorf("status after errors: %+v", st.Stats)
	}
}

func TestTimeoutReplacesTheInstance(t *testing.T) {
	h := newHost(t, nil)
	release := make(chan struct{})
	defer close(release)
	register(t, h, "slow", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		switch string(req.Payload) {
		case "ignore-ctx":
			<-release // a handler that ignores its context
		case "honour-ctx":
			<-ctx.Done()
			return invoke.Response{}, ctx.Err()
		}
		return invoke.Response{Payload: []byte("fast")}, nil
	})
	deploy(t, h, function.Spec{Name: "slow", Version: "1", Handler: "slow", MaxInstances: 1, Timeout: function.Duration(100 * time.Millisecond)})
	ctx := context.Background()
	for _, kind := range []string{"ignore-ctx", "honour-ctx"} {
		start := time.Now()
		_, err := h.Invoke(ctx, "slow", invoke.Request{Payload: []byte(kind)})
		if !errors.Is(err, invoke.ErrTimeout) || !strings.Contains(err.Error(), "100ms") {
			t.Errorf("%s: %v, want ErrTimeout naming the limit", kind, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: Invoke returned after %v", kind, d)
		}
	}
	// MaxInstances is 1 and one instance is stuck in a handler that ignores
	// its context: a replacement serves.
	if resp, err := h.Invoke(ctx, "slow", invoke.Request{}); err != nil || string(resp.Payload) != "fast" {
		t.Fatalf("after a timeout: %q %v", resp.Payload, err)
	}
	// The handler that honoured its context returns at once; the one that
	// ignores it stays stuck until released.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := h.Status("slow")
		stuck := 0
		for _, i := range st.Instances {
			if i.State == function.InstanceStuck {
				stuck++
			}
		}
		if stuck == 1 && st.Stats.Timeouts == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %d stuck instances, %d timeouts; want 1 and 2: %+v", stuck, st.Stats.Timeouts, st.Instances)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDeadlinesWhileQueued: invocations waiting behind a stuck instance
// return at their own deadlines, the earlier one first even when it came
// second (the pool's one deadline timer is moved earlier for it), and the
// function serves again once the instance is free.
func TestDeadlinesWhileQueued(t *testing.T) {
	h := newHost(t, nil)
	release, started := make(chan struct{}), make(chan struct{}, 1)
	register(t, h, "stuck", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		if string(req.Payload) == "stick" {
			started <- struct{}{}
			<-release // ignores its context
		}
		return invoke.Response{Payload: []byte("ok")}, nil
	})
	deploy(t, h, function.Spec{Name: "stuck", Version: "1", Handler: "stuck", MaxInstances: 1, QueueSize: 2, Timeout: function.Duration(time.Minute)})
	first := make(chan error, 1)
	go func() {
		_, err := h.Invoke(context.Background(), "stuck", invoke.Request{Payload: []byte("stick")})
		first <- err
	}()
	<-started
	type result struct {
		name string
		err  error
		took time.Duration
	}
	results := make(chan result, 2)
	invoke1 := func(name string, wait time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		start := time.Now()
		_, err := h.Invoke(ctx, "stuck", invoke.Request{})
		results <- result{name, err, time.Since(start)}
	}
	go invoke1("later", 2*time.Second)
	testenv.Eventually(t, "the later call queued", func() bool { st, _ := h.Status("stuck"); return st.QueueDepth == 1 })
	go invoke1("sooner", 50*time.Millisecond)
	for _, want := range []string{"sooner", "later"} {
		r := <-results
		if r.name != want {
			t.Errorf("%s returned before %s", r.name, want)
		}
		if r.err == nil || !(errors.Is(r.err, invoke.ErrTimeout) || errors.Is(r.err, context.DeadlineExceeded)) {
			t.Errorf("%s: %v, want a timeout", r.name, r.err)
		}
		if r.took > 30*time.Second {
			t.Errorf("%s returned after %v", r.name, r.took)
		}
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the stuck call: %v", err)
	}
	if resp, err := h.Invoke(context.Background(), "stuck", invoke.Request{}); err != nil || string(resp.Payload) != "ok" {
		t.Errorf("after the timeouts: %q %v", resp.Payload, err)
	}
}

func TestQueueBoundAndThrottle(t *testing.T) {
	h := newHost(t, &function.Options{})
	block := make(chan struct{})
	started := make(chan struct{}, 10)
	register(t, h, "busy", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		started <- struct{}{}
		<-block
		return invoke.Response{}, nil
	})
	deploy(t, h, function.Spec{Name: "busy", Version: "1", Handler: "busy", MaxInstances: 1, QueueSize: 1})
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make(chan error, 2)
	for range 2 { // one running, one queued
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := h.Invoke(ctx, "busy", invoke.Request{})
			results <- err
		}()
	}
	<-started
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := h.Status("busy"); st.QueueDepth != 1; st, _ = h.Status("busy") {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d, want 1", st.QueueDepth)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := h.Invoke(ctx, "busy", invoke.Request{})
	if !errors.Is(err, invoke.ErrThrottled) || !strings.Contains(err.Error(), "busy") {
		t.Errorf("third invoke: %v, want ErrThrottled naming the function", err)
	}
	if _, err := h.InvokeAsync(ctx, "busy", invoke.Request{}); !errors.Is(err, invoke.ErrThrottled) {
		t.Errorf("async invoke on a full queue: %v, want ErrThrottled at once", err)
	}
	close(block)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("accepted invocation failed: %v", err)
		}
	}
	if st, _ := h.Status("busy"); st.Stats.Throttles != 2 {
		t.Errorf("throttles %d, want 2", st.Stats.Throttles)
	}
}

func TestQueueWait(t *testing.T) {
	h := newHost(t, &function.Options{QueueWait: 2 * time.Second})
	register(t, h, "short", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		time.Sleep(20 * time.Millisecond)
		return invoke.Response{}, nil
	})
	deploy(t, h, function.Spec{Name: "short", Version: "1", Handler: "short", MaxInstances: 1, QueueSize: 1})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 6 { // far more than instance + queue: callers wait for room
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.Invoke(context.Background(), "short", invoke.Request{}); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d invocations failed despite QueueWait", failed.Load())
	}
}

func TestOnDemandScalesUpAndIdlesOut(t *testing.T) {
	h := newHost(t, nil)
	barrier := make(chan struct{})
	var running atomic.Int32
	register(t, h, "par", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		running.Add(1)
		<-barrier
		return invoke.Response{}, nil
	})
	deploy(t, h, function.Spec{Name: "par", Version: "1", Handler: "par", MaxInstances: 3, IdleTimeout: function.Duration(100 * time.Millisecond)})
	if st, _ := h.Status("par"); len(st.Instances) != 0 {
		t.Fatalf("on-demand function has %d instances before any event", len(st.Instances))
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = h.Invoke(context.Background(), "par", invoke.Request{})
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d invocations ran at once, want 3 (MaxInstances)", running.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(barrier)
	wg.Wait()
	st, _ := h.Status("par")
	if st.Stats.ColdStarts != 3 {
		t.Errorf("cold starts %d, want 3", st.Stats.ColdStarts)
	}
	deadline = time.Now().Add(5 * time.Second)
	for st, _ := h.Status("par"); len(st.Instances) != 0; st, _ = h.Status("par") {
		if time.Now().After(deadline) {
			t.Fatalf("%d instances still up after the idle timeout", len(st.Instances))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestContinuousKeepsInstances(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "echo", echo)
	deploy(t, h, function.Spec{Name: "daemon", Version: "1", Handler: "echo", Mode: function.Continuous, MinInstances: 2, IdleTimeout: function.Duration(20 * time.Millisecond)})
	time.Sleep(100 * time.Millisecond)
	st, _ := h.Status("daemon")
	if len(st.Instances) != 2 || st.Mode != function.Continuous {
		t.Fatalf("continuous function: %d instances, mode %s; want 2 kept alive", len(st.Instances), st.Mode)
	}
	if _, err := h.Invoke(context.Background(), "daemon", invoke.Request{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.Status("daemon"); st.Stats.ColdStarts != 2 {
		t.Errorf("cold starts %d, want 2 (at deploy only)", st.Stats.ColdStarts)
	}
}

// TestHotDeployUnderLoad: 100 deploys while callers invoke continuously;
// every invocation gets exactly one result, none an error, and each result
// comes from a version that was current at some point during the call.
func TestHotDeployUnderLoad(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "versioned", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		inv, _ := function.FromContext(ctx)
		time.Sleep(200 * time.Microsecond)
		return invoke.Response{Payload: []byte(inv.Version)}, nil
	})
	spec := function.Spec{Name: "hot", Runtime: function.RuntimeGo, Version: "0", Handler: "versioned", MaxInstances: 2, QueueSize: 1000}
	deployUnderLoad(t, h, spec, func(v int) { time.Sleep(2 * time.Millisecond) })
}

// deployUnderLoad deploys spec as versions 1 to 100 while 4 callers invoke
// it continuously (pause runs after each deploy), then checks that every
// call got exactly one answer, none an error, and that the host counted
// each one.
func deployUnderLoad(t *testing.T, h *function.Host, spec function.Spec, pause func(version int)) {
	t.Helper()
	deploy(t, h, spec)
	ctx, stop := context.WithCancel(context.Background())
	var calls, answers, failures atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				calls.Add(1)
				resp, err := h.Invoke(context.Background(), spec.Name, invoke.Request{Payload: []byte(`{}`)})
				answers.Add(1)
				switch {
				case err != nil:
					failures.Add(1)
					t.Errorf("invoke during deploys: %v", err)
				case len(resp.Payload) == 0:
					t.Error("empty result")
				}
			}
		}()
	}
	for v := 1; v <= 100; v++ {
		spec.Version = fmt.Sprint(v)
		deploy(t, h, spec)
		pause(v)
	}
	stop()
	wg.Wait()
	if calls.Load() != answers.Load() || failures.Load() != 0 {
		t.Errorf("%d calls, %d answers, %d failures", calls.Load(), answers.Load(), failures.Load())
	}
	if st, _ := h.Status(spec.Name); st.Version != "100" || st.Stats.Invocations != uint64(answers.Load()) {
		t.Errorf("after deploys: version %s, %d invocations counted for %d answers", st.Version, st.Stats.Invocations, answers.Load())
	}
	t.Logf("%d invocations across 100 deploys of %s", answers.Load(), spec.Name)
}

// In-flight invocations finish on the version they started on.
func TestInFlightFinishesOnOldVersion(t *testing.T) {
	h := newHost(t, nil)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	register(t, h, "v", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		inv, _ := function.FromContext(ctx)
		if inv.Version == "1" {
			started <- struct{}{}
			<-release
		}
		return invoke.Response{Payload: []byte(inv.Version)}, nil
	})
	deploy(t, h, function.Spec{Name: "f", Version: "1", Handler: "v"})
	got := make(chan string, 1)
	go func() {
		resp, _ := h.Invoke(context.Background(), "f", invoke.Request{})
		got <- string(resp.Payload)
	}()
	<-started
	deploy(t, h, function.Spec{Name: "f", Version: "2", Handler: "v"})
	if resp, err := h.Invoke(context.Background(), "f", invoke.Request{}); err != nil || string(resp.Payload) != "2" {
		t.Errorf("new invocation: %q %v, want version 2", resp.Payload, err)
	}
	close(release)
	if v := <-got; v != "1" {
		t.Errorf("in-flight invocation finished on %q, want 1", v)
	}
}

func TestRemove(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "echo", echo)
	deploy(t, h, function.Spec{Name: "gone", Version: "1", Handler: "echo"})
	ctx := context.Background()
	if err := h.Remove(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(ctx, "gone", invoke.Request{}); !errors.Is(err, invoke.ErrNotFound) {
		t.Errorf("invoke after remove: %v", err)
	}
	if err := h.Remove(ctx, "gone"); !errors.Is(err, invoke.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	if len(h.List()) != 0 {
		t.Errorf("List after remove: %v", h.List())
	}
}

func TestInvokeAsync(t *testing.T) {
	results := make(chan function.AsyncResult, 1)
	h := newHost(t, &function.Options{OnAsyncResult: func(r function.AsyncResult) { results <- r }})
	register(t, h, "echo", echo)
	deploy(t, h, function.Spec{Name: "a", Version: "1", Handler: "echo"})
	ctx, cancel := context.WithCancel(context.Background())
	id, err := h.InvokeAsync(ctx, "a", invoke.Request{Payload: []byte("later")})
	cancel() // the invocation outlives the caller's context
	if err != nil || id == "" {
		t.Fatalf("InvokeAsync: %q %v", id, err)
	}
	r := <-results
	if r.ID != id || r.Err != nil || string(r.Response.Payload) != "later" {
		t.Errorf("async result %+v", r)
	}
	if kept, ok := h.AsyncResult(id); !ok || string(kept.Response.Payload) != "later" {
		t.Errorf("AsyncResult(%s) = %+v, %v", id, kept, ok)
	}
	if _, err := h.InvokeAsync(context.Background(), "missing", invoke.Request{}); !errors.Is(err, invoke.ErrNotFound) {
		t.Errorf("async invoke of an unknown function: %v", err)
	}
}

func TestBadSpecs(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "echo", echo)
	ok := function.Spec{Name: "f", Version: "1", Runtime: function.RuntimeGo, Handler: "echo"}
	for _, tc := range []struct {
		mutate func(*function.Spec)
		want   string
	}{
		{func(s *function.Spec) { s.Name = "" }, "name"},
		{func(s *function.Spec) { s.Name = "a/b" }, "name"},
		{func(s *function.Spec) { s.Version = "" }, "version"},
		{func(s *function.Spec) { s.Runtime = "cobol" }, `runtime: "cobol"`},
		{func(s *function.Spec) { s.Handler = "" }, "handler"},
		{func(s *function.Spec) { s.Mode = "sometimes" }, "mode"},
		{func(s *function.Spec) { s.MinInstances = 1 }, "minInstances"},
		{func(s *function.Spec) { s.Mode, s.MinInstances, s.MaxInstances = function.Continuous, 5, 2 }, "above maxInstances"},
		{func(s *function.Spec) { s.Timeout = -1 }, "negative"},
		{func(s *function.Spec) { s.Config = json.RawMessage("{bad") }, "config"},
		{func(s *function.Spec) { s.MaxProcesses = -1 }, "negative"},
		{func(s *function.Spec) { s.Env = map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:1"} }, "env.AWS_LAMBDA_RUNTIME_API: set by the host"},
		{func(s *function.Spec) { s.Env = map[string]string{"EDGEKIT_API_TOKEN": "x"} }, "env.EDGEKIT_API_TOKEN"},
		{func(s *function.Spec) { s.Env = map[string]string{"A=B": "x"} }, "not a variable name"},
	} {
		s := ok
		tc.mutate(&s)
		err := h.Deploy(context.Background(), s)
		if !errors.Is(err, function.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("spec %+v: %v, want ErrInvalidSpec naming %q", s, err, tc.want)
		}
	}
	s := ok
	s.Handler = "nobody"
	if err := h.Deploy(context.Background(), s); !errors.Is(err, function.ErrUnknownHandler) {
		t.Errorf("unknown handler: %v", err)
	}
	// A bad deploy leaves the running version serving.
	deploy(t, h, ok)
	bad := ok
	bad.Version, bad.Handler = "2", "nobody"
	_ = h.Deploy(context.Background(), bad)
	if st, _ := h.Status("f"); st.Version != "1" {
		t.Errorf("version after a failed deploy: %s", st.Version)
	}
	var js function.Spec
	err := json.Unmarshal([]byte(`{"name":"j","version":"1","runtime":"go","handler":"echo","timeout":"soon"}`), &js)
	if err == nil {
		t.Error("a timeout of \"soon\" parsed")
	}
}

func TestClose(t *testing.T) {
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	register(t, h, "wait", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		once.Do(func() { close(started) })
		<-release
		return invoke.Response{Payload: []byte("finished")}, nil
	})
	deploy(t, h, function.Spec{Name: "w", Version: "1", Handler: "wait"})
	got := make(chan string, 1)
	go func() {
		resp, _ := h.Invoke(context.Background(), "w", invoke.Request{})
		got <- string(resp.Payload)
	}()
	<-started
	closed := make(chan error, 1)
	go func() { closed <- h.Close(context.Background()) }()
	// Calls made before Close takes effect run (and wait for release);
	// once it has, new ones are refused.
	testenv.Eventually(t, "invocations refused while closing", func() bool {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a call that is accepted does not wait
		_, err := h.Invoke(ctx, "w", invoke.Request{})
		return errors.Is(err, function.ErrClosed)
	})
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "finished" {
		t.Errorf("in-flight invocation during Close: %q", v)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Sequential calls reuse the one instance: the worker is counted idle
// before the caller gets its answer, so the next call does not start a
// second instance. A native process function is the sharpest case: its
// answer reaches the caller from the pipe reader while the worker is still
// parked.
func TestSequentialCallsReuseOneInstance(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "echo", echo)
	deploy(t, h, function.Spec{Name: "seq", Version: "1", Handler: "echo"})
	deploy(t, h, nativeSpec("seq-native", "bench"))
	for _, name := range []string{"seq", "seq-native"} {
		for range 300 {
			if _, err := h.Invoke(context.Background(), name, invoke.Request{Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		if st, _ := h.Status(name); st.Stats.ColdStarts != 1 {
			t.Errorf("%s: %d cold starts for 300 sequential calls, want 1", name, st.Stats.ColdStarts)
		}
	}
}

// A config-only change (same version, new Config) is a deploy like any
// other: new invocations see the new document.
func TestConfigOnlyChange(t *testing.T) {
	h := newHost(t, nil)
	register(t, h, "cfg", func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		inv, _ := function.FromContext(ctx)
		return invoke.Response{Payload: inv.Config}, nil
	})
	s := function.Spec{Name: "configured", Version: "1", Handler: "cfg", Config: json.RawMessage(`{"limit":1}`)}
	deploy(t, h, s)
	s.Config = json.RawMessage(`{"limit":2}`)
	deploy(t, h, s)
	resp, err := h.Invoke(context.Background(), "configured", invoke.Request{})
	if err != nil || string(resp.Payload) != `{"limit":2}` {
		t.Errorf("after a config change: %q %v", resp.Payload, err)
	}
}
