package function_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
)

// lambdaSpec is the aws-lambda-go test function with a behaviour.
func lambdaSpec(name, behaviour string) function.Spec {
	return function.Spec{
		Name: name, Version: "1", Runtime: function.RuntimeExecutable, Handler: "lambda", CodeDir: binDir,
		Env: map[string]string{"TEST_BEHAVIOUR": behaviour, "EXTRA": "from-spec"},
	}
}

// TestLambdaGoFunctionUnmodified: a function built with aws-lambda-go's
// lambda.Start runs as it would in the cloud and sees the Lambda
// environment and context.
func TestLambdaGoFunctionUnmodified(t *testing.T) {
	h := newHost(t, nil)
	s := lambdaSpec("lambda-echo", "echo")
	s.Config = json.RawMessage(`{"unit":"C"}`)
	s.Timeout = function.Duration(5 * time.Second)
	deploy(t, h, s)
	resp, err := h.Invoke(context.Background(), "lambda-echo", invoke.Request{
		Payload: []byte(`{"temperature":21.5}`), Source: map[string]string{"topic": "devices/boiler/temperature"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(resp.Payload, &got); err != nil {
		t.Fatalf("response %q: %v", resp.Payload, err)
	}
	ev, _ := json.Marshal(got["event"])
	if string(ev) != `{"temperature":21.5}` {
		t.Errorf("event %s", ev)
	}
	if got["function"] != "lambda-echo" || got["version"] != "1" || got["memory"] != float64(128) || got["extra_env"] != "from-spec" || got["config"] != `{"unit":"C"}` {
		t.Errorf("environment: %v", got)
	}
	if id, _ := got["request_id"].(string); id == "" {
		t.Errorf("no request id: %v", got)
	}
	if got["log_group"] != "/aws/lambda/lambda-echo" || !strings.Contains(fmt.Sprint(got["log_stream"]), "[1]") {
		t.Errorf("lambdacontext.LogGroupName %v, LogStreamName %v", got["log_group"], got["log_stream"])
	}
	// The environment Lambda defines (docs/CLOUD.md), and none of FC's.
	env, _ := got["env"].(map[string]any)
	for k, want := range map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME": "lambda-echo", "AWS_LAMBDA_FUNCTION_VERSION": "1", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"AWS_REGION": "edge", "AWS_DEFAULT_REGION": "edge", "TZ": ":UTC", "_HANDLER": "lambda", "LAMBDA_TASK_ROOT": binDir,
		"AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/lambda-echo", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
	} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
	if v, _ := env["AWS_LAMBDA_LOG_STREAM_NAME"].(string); !strings.Contains(v, "/[1]") {
		t.Errorf("AWS_LAMBDA_LOG_STREAM_NAME = %q, want YYYY/MM/DD/[version]instance", v)
	}
	if v, _ := env["LAMBDA_RUNTIME_DIR"].(string); v == "" {
		t.Error("no LAMBDA_RUNTIME_DIR")
	}
	if v, _ := env["AWS_LAMBDA_RUNTIME_API"].(string); !strings.HasPrefix(v, "127.0.0.1:") {
		t.Errorf("AWS_LAMBDA_RUNTIME_API = %q", v)
	}
	for k := range env {
		if strings.HasPrefix(k, "FC_") {
			t.Errorf("a Lambda function has FC's %s", k)
		}
	}
	if arn, _ := got["arn"].(string); !strings.Contains(arn, ":function:lambda-echo:1") {
		t.Errorf("arn %q", arn)
	}
	if c, _ := got["custom"].(map[string]any); c["topic"] != "devices/boiler/temperature" {
		t.Errorf("client context custom %v", got["custom"])
	}
	if d, _ := got["deadline_in"].(float64); d <= 0 || d > 5000 {
		t.Errorf("deadline in %v ms", d)
	}
	// Warm: the second invocation reuses the process.
	resp2, err := h.Invoke(context.Background(), "lambda-echo", invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var got2 map[string]any
	_ = json.Unmarshal(resp2.Payload, &got2)
	if got2["pid"] != got["pid"] {
		t.Errorf("second invocation ran in pid %v, first in %v: not warm", got2["pid"], got["pid"])
	}
	if st, _ := h.Status("lambda-echo"); st.Stats.ColdStarts != 1 || len(st.Instances) != 1 {
		t.Errorf("status %+v", st)
	}
}

func TestLambdaErrorsAndPanics(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, lambdaSpec("lambda-error", "error"))
	_, err := h.Invoke(context.Background(), "lambda-error", invoke.Request{Payload: []byte(`"x"`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || !strings.Contains(fe.Message, `bad input: "x"`) || fe.Type == "" {
		t.Errorf("function error: %v", err)
	}

	deploy(t, h, lambdaSpec("lambda-panic", "panic"))
	for i := range 2 { // aws-lambda-go exits after a panic: a new instance serves the next call
		_, err = h.Invoke(context.Background(), "lambda-panic", invoke.Request{Payload: []byte(`{}`)})
		if !errors.As(err, &fe) || !strings.Contains(fe.Message, "handler panicked") {
			t.Errorf("panic %d: %v", i, err)
		}
		// aws-lambda-go posts the stack as frame objects; they used to be lost.
		if !slices.ContainsFunc(fe.Stack, func(f string) bool { return strings.Contains(f, "lambda/main.go:") }) {
			t.Errorf("panic %d: the stack does not name the handler's file: %q", i, fe.Stack)
		}
	}
	if st, _ := h.Status("lambda-panic"); st.CrashLoop != "" {
		t.Errorf("a function that panics per call is not a crash loop: %s", st.CrashLoop)
	}
}

// TestTimeoutKillsTheProcessGroup: at the deadline the instance and the
// child it spawned are killed; a new instance serves the next call.
func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	h := newHost(t, nil)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	s := lambdaSpec("hang", "spawn-and-hang")
	s.Env["CHILD_PID_FILE"] = pidFile
	s.Timeout = function.Duration(700 * time.Millisecond)
	deploy(t, h, s)
	_, err := h.Invoke(context.Background(), "hang", invoke.Request{Payload: []byte(`{}`)})
	if !errors.Is(err, invoke.ErrTimeout) {
		t.Fatalf("hanging function: %v, want ErrTimeout", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the function did not record its child: %v", err)
	}
	child, _ := strconv.Atoi(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(child, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after the timeout", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCrashAtStartKeepsThePreviousVersion(t *testing.T) {
	h := newHost(t, nil)
	good := lambdaSpec("svc", "echo")
	deploy(t, h, good)
	bad := lambdaSpec("svc", "exit-at-start")
	bad.Version = "2"
	err := h.Deploy(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "exited before asking for its first invocation") || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("deploy of a version that exits at start: %v", err)
	}
	if st, _ := h.Status("svc"); st.Version != "1" {
		t.Errorf("version after the failed deploy: %s", st.Version)
	}
	if _, err := h.Invoke(context.Background(), "svc", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Errorf("previous version stopped serving: %v", err)
	}
	missing := lambdaSpec("svc", "echo")
	missing.Version, missing.Handler = "3", "no-such-binary"
	if err := h.Deploy(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("deploy with a missing executable: %v", err)
	}
}

func TestResponseOverTheLimit(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, lambdaSpec("big", "big"))
	_, err := h.Invoke(context.Background(), "big", invoke.Request{Payload: []byte(`{}`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "Function.ResponseSizeTooLarge" {
		t.Errorf("7 MB response: %v, want Function.ResponseSizeTooLarge", err)
	}
}

// TestCrashLoopBreaker: a continuous function whose instances die right
// after starting is marked crash looping and refuses invocations.
func TestCrashLoopBreaker(t *testing.T) {
	h := newHost(t, nil)
	s := lambdaSpec("flaky", "echo")
	s.Mode, s.MinInstances = function.Continuous, 1
	deploy(t, h, s)
	// Make every further start fail: remove the executable's execute bit
	// on a private copy.
	dir := t.TempDir()
	src, _ := os.ReadFile(filepath.Join(binDir, "lambda"))
	if err := os.WriteFile(filepath.Join(dir, "lambda"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	s.CodeDir, s.Version = dir, "2"
	deploy(t, h, s)
	if err := os.Chmod(filepath.Join(dir, "lambda"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Kill the running instance: every restart now fails.
	pid := instancePID(t, h, "flaky")
	if pid == 0 {
		t.Fatal("no pid from the running instance")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	st, _ := h.Status("flaky")
	for ; st.CrashLoop == ""; st, _ = h.Status("flaky") {
		if time.Now().After(deadline) {
			t.Fatalf("no crash loop reported: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := h.Invoke(context.Background(), "flaky", invoke.Request{}); !errors.Is(err, invoke.ErrUnavailable) {
		t.Errorf("invoke of a crash-looping function: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(st.LastError, "not an executable") {
		t.Errorf("last error %q does not say why", st.LastError)
	}

	// The cause mended, the same spec deployed again starts it afresh.
	if err := os.Chmod(filepath.Join(dir, "lambda"), 0o755); err != nil {
		t.Fatal(err)
	}
	deploy(t, h, s)
	if st, _ := h.Status("flaky"); st.CrashLoop != "" {
		t.Fatalf("crash loop still reported after the same spec was deployed again: %s", st.CrashLoop)
	}
	if _, err := h.Invoke(context.Background(), "flaky", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatalf("invoke after the redeploy: %v", err)
	}
}

// instancePID asks the echo function for its pid.
func instancePID(t *testing.T, h *function.Host, name string) int {
	t.Helper()
	resp, err := h.Invoke(context.Background(), name, invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		return 0
	}
	var got struct{ PID int }
	_ = json.Unmarshal(resp.Payload, &got)
	return got.PID
}

// TestFunctionComputeProfile: a function that speaks the FC runtime API
// as fc-runtime-go-sdk does — asking for the next invocation before it
// answers the current one, and refusing one without the timeout header —
// is served: every call answered, with FC's headers (the credentials ones
// present and empty), and its errors kept.
func TestFunctionComputeProfile(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, function.Spec{Name: "fc-echo", Version: "1", Runtime: function.RuntimeExecutable, API: function.APIFC, Handler: "fc", CodeDir: binDir,
		Timeout: function.Duration(7 * time.Second), MemoryLimitMB: 96})
	for i := range 5 { // pipelined: each /next waits while the call before it is answered
		resp, err := h.Invoke(context.Background(), "fc-echo", invoke.Request{Payload: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		var got struct {
			FC         bool              `json:"fc"`
			Event      map[string]any    `json:"event"`
			RequestID  string            `json:"request_id"`
			Function   map[string]any    `json:"function"`
			Service    map[string]any    `json:"service"`
			Region     string            `json:"region"`
			Account    string            `json:"account_id"`
			DeadlineIn float64           `json:"deadline_in"`
			Headers    map[string]string `json:"headers"`
			Env        map[string]string `json:"env"`
		}
		if err != nil || json.Unmarshal(resp.Payload, &got) != nil || !got.FC || got.Event["n"] != float64(i) || got.RequestID == "" {
			t.Fatalf("FC call %d: %q %v", i, resp.Payload, err)
		}
		// What fccontext.FromContext gives a handler.
		if fmt.Sprint(got.Function) != "map[Handler:fc Memory:96 Name:fc-echo Timeout:7]" ||
			fmt.Sprint(got.Service) != "map[LogProject: LogStore: Qualifier:1 ServiceName:fc-echo VersionId:1]" ||
			got.Region != "edge" || got.Account != "000000000000" || got.DeadlineIn <= 0 || got.DeadlineIn > 7000 {
			t.Errorf("FC context: %s", resp.Payload)
		}
		want := map[string]string{"x-fc-function-name": "fc-echo", "x-fc-qualifier": "1", "x-fc-service-name": "fc-echo", "x-fc-function-handler": "fc",
			"x-fc-function-memory": "96", "x-fc-function-timeout": "7", "x-fc-region": "edge", "x-fc-account-id": "000000000000",
			"x-fc-access-key-id": "", "x-fc-access-key-secret": "", "x-fc-security-token": "", "x-fc-version-id": "1",
			"x-fc-function-initializer": "", "x-fc-initialization-timeout": "", "x-fc-instance-lifecycle-pre-stop-handler": "",
			"x-fc-instance-lifecycle-pre-freeze-handler": "", "x-fc-service-logproject": "", "x-fc-service-logstore": "", "x-fc-control-path": "/invoke"}
		if !maps.Equal(got.Headers, want) {
			t.Fatalf("FC headers %v, want %v", got.Headers, want)
		}
		// The environment FC defines (docs/CLOUD.md), and none of Lambda's.
		for k, want := range map[string]string{"FC_FUNCTION_NAME": "fc-echo", "FC_FUNCTION_HANDLER": "fc", "FC_FUNCTION_MEMORY_SIZE": "96",
			"FC_FUNC_CODE_PATH": binDir, "FC_REGION": "edge", "FC_ACCOUNT_ID": "000000000000", "FC_SERVICE_NAME": "fc-echo",
			"FC_FUNCTION_VERSION": "1", "FC_QUALIFIER": "1"} {
			if got.Env[k] != want {
				t.Errorf("%s = %q, want %q", k, got.Env[k], want)
			}
		}
		if got.Env["FC_INSTANCE_ID"] == "" || !strings.HasPrefix(got.Env["FC_RUNTIME_API"], "127.0.0.1:") {
			t.Errorf("FC_INSTANCE_ID %q, FC_RUNTIME_API %q", got.Env["FC_INSTANCE_ID"], got.Env["FC_RUNTIME_API"])
		}
		for k := range got.Env {
			if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "LAMBDA_") {
				t.Errorf("an FC function has Lambda's %s", k)
			}
		}
	}
	_, err := h.Invoke(context.Background(), "fc-echo", invoke.Request{Payload: []byte(`{"fail":true}`)})
	var fe *invoke.Error
	if !errors.As(err, &fe) || fe.Type != "*errors.errorString" || fe.Message != "asked to fail" {
		t.Errorf("FC error: %v", err)
	}
}

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler { return &withAttrs{r, as} }
func (r *recorder) WithGroup(string) slog.Handler         { return r }

type withAttrs struct {
	r  *recorder
	as []slog.Attr
}

func (w *withAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (w *withAttrs) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(w.as...)
	return w.r.Handle(ctx, rec)
}
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.r, append(append([]slog.Attr{}, w.as...), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }

// TestOutputBecomesLogRecords: each line a function prints is a slog
// record carrying the function, version and instance.
func TestOutputBecomesLogRecords(t *testing.T) {
	rec := &recorder{}
	h := newHost(t, &function.Options{Logger: slog.New(rec)})
	deploy(t, h, lambdaSpec("chatty", "echo"))
	if _, err := h.Invoke(context.Background(), "chatty", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		var found *slog.Record
		for i := range rec.recs {
			if strings.HasPrefix(rec.recs[i].Message, "handling ") {
				found = &rec.recs[i]
			}
		}
		rec.mu.Unlock()
		if found != nil {
			attrs := map[string]string{}
			found.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
			if attrs["function"] != "chatty" || attrs["version"] != "1" || attrs["instance"] == "" || attrs["stream"] != "stderr" {
				t.Errorf("log record attrs %v", attrs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the function's output line never became a log record")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMemoryLimit: a function that allocates past its limit is stopped,
// the failure says so, and the host and other functions carry on. Under
// cgroup v1 the kernel kills the process (a Go function here); under
// RLIMIT_AS the allocation fails inside the function (Python: MemoryError).
// RLIMIT_AS also counts the address space a runtime reserves at start: a
// Go binary does not start under a few hundred MB.
func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		limiter  function.MemoryLimiter
		spec     func() function.Spec
		wantType string
	}{
		{function.MemoryCgroup1, func() function.Spec { return lambdaSpec("leaky", "leak") }, "Runtime.OutOfMemory"},
		{function.MemoryRlimitData, func() function.Spec { return lambdaSpec("leaky", "leak") }, "Runtime.ExitError"},
		{function.MemoryRlimitAS, func() function.Spec {
			return function.Spec{Name: "leaky", Version: "1", Runtime: function.RuntimePython, Handler: "main.leak", CodeDir: codeDir(t, "python")}
		}, "MemoryError"},
	} {
		t.Run(string(tc.limiter), func(t *testing.T) {
			needs(t, "python3")
			h, err := function.New(&function.Options{MemoryLimiter: tc.limiter})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Close(context.Background()) })
			s := tc.spec()
			s.MemoryLimitMB = 200
			deploy(t, h, s)
			healthy := function.Spec{Name: "healthy", Version: "1", Runtime: function.RuntimePython, Handler: "main.handler", CodeDir: codeDir(t, "python")}
			if tc.limiter != function.MemoryRlimitAS { // a Go runtime does not start under RLIMIT_AS 128 MB
				healthy = lambdaSpec("healthy", "echo")
			}
			deploy(t, h, healthy)
			_, err = h.Invoke(context.Background(), "leaky", invoke.Request{Payload: []byte(`{}`)})
			var fe *invoke.Error
			if !errors.As(err, &fe) || fe.Type != tc.wantType {
				t.Fatalf("leaking function: %v, want a %s error", err, tc.wantType)
			}
			if tc.limiter == function.MemoryCgroup1 && !strings.Contains(fe.Message, "cgroup1 200 MB") {
				t.Errorf("the out-of-memory error does not name the limit: %v", err)
			}
			st, _ := h.Status("leaky")
			if st.MemoryLimit != string(tc.limiter)+" 200 MB" {
				t.Errorf("Status.MemoryLimit %q", st.MemoryLimit)
			}
			if _, err := h.Invoke(context.Background(), "healthy", invoke.Request{Payload: []byte(`{}`)}); err != nil {
				t.Errorf("another function after the leak: %v", err)
			}
		})
	}
}

// TestRunAsUser: an instance runs as the uid and gid its spec names.
// reachableBin copies the test function name into a directory any uid may
// reach, and returns the directory. (binDir stays the host's: functions
// there run as the host's user.)
func reachableBin(t *testing.T, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "edgekit-reachable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(filepath.Join(binDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunAsUser(t *testing.T) {
	testenv.Root(t, "switching users")
	h := newHost(t, &function.Options{MemoryLimiter: function.MemoryNone})
	s := lambdaSpec("as-nobody", "echo")
	s.CodeDir = reachableBin(t, "lambda")
	s.User = &function.User{UID: 65534, GID: 65534}
	deploy(t, h, s)
	resp, err := h.Invoke(context.Background(), "as-nobody", invoke.Request{Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(resp.Payload, &got)
	if got["uid"] != float64(65534) || got["gid"] != float64(65534) {
		t.Errorf("ran as uid %v gid %v, want 65534 (response %s)", got["uid"], got["gid"], resp.Payload)
	}
	bad := function.Spec{Name: "x", Version: "1", Runtime: function.RuntimeGo, Handler: "h", User: &function.User{UID: 1}}
	if err := h.Deploy(context.Background(), bad); !errors.Is(err, function.ErrInvalidSpec) {
		t.Errorf("user on an in-process function: %v", err)
	}
}

// TestFunctionsRunAsTheirOwnUID: as root, each out-of-process function
// whose spec names no user runs as a uid of its own from the function
// range; one whose code that uid cannot reach runs as the host's user,
// and Deploy says why.
func TestFunctionsRunAsTheirOwnUID(t *testing.T) {
	testenv.Root(t, "switching users")
	var logs testenv.Buffer
	h := newHost(t, &function.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	dir := reachableBin(t, "lambda")
	uids := map[float64]bool{}
	for _, name := range []string{"own-a", "own-b"} {
		s := lambdaSpec(name, "echo")
		s.CodeDir = dir
		deploy(t, h, s)
		resp, err := h.Invoke(context.Background(), name, invoke.Request{Payload: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		_ = json.Unmarshal(resp.Payload, &got)
		uid, _ := got["uid"].(float64)
		if uid < function.DefaultFunctionUIDFirst || uid >= function.DefaultFunctionUIDFirst+function.DefaultFunctionUIDCount || got["gid"] != uid {
			t.Errorf("%s ran as uid %v gid %v, want one of the function range", name, got["uid"], got["gid"])
		}
		uids[uid] = true
		if st, _ := h.Status(name); st.User != fmt.Sprintf("%d:%d", int(uid), int(uid)) {
			t.Errorf("%s: Status.User %q", name, st.User)
		}
	}
	if len(uids) != 2 {
		t.Errorf("two functions share a uid: %v", uids)
	}
	deploy(t, h, lambdaSpec("unreachable", "echo")) // binDir is the host's alone (0700)
	if st, _ := h.Status("unreachable"); st.User != "host" || !strings.Contains(logs.String(), "runs as the host's user") {
		t.Errorf("a function its uid cannot reach: Status.User %q; logs %s", st.User, logs.String())
	}
}

// TestNoFunctionTakesAnothersInvocation: a function that learns another
// instance's runtime API address (from its environment, as the same uid
// can, or handed the whole address, secret and all, as another uid) and
// its invocation's request id asks /next and posts a forged response; both
// are refused, and the invocation in flight gets its own instance's answer.
func TestNoFunctionTakesAnothersInvocation(t *testing.T) {
	needs(t, "python3")
	h := newHost(t, nil)
	deploy(t, h, function.Spec{Name: "victim", Version: "1", Runtime: function.RuntimePython, API: function.APILambda,
		Handler: "main.wait_file", CodeDir: codeDir(t, "python")})
	thief := lambdaSpec("thief", "event")
	if os.Getuid() == 0 {
		// The same uid as the victim, which runs as the host's user (its
		// interpreter may be out of a function uid's reach).
		thief.User = &function.User{UID: 0, GID: 0}
		if st, _ := h.Status("victim"); st.User != "host" {
			thief.User = nil
			t.Logf("the victim runs as %s", st.User)
		}
	}
	deploy(t, h, thief)
	files := t.TempDir()
	idFile, goFile := filepath.Join(files, "id"), filepath.Join(files, "go")
	t.Cleanup(func() { os.WriteFile(goFile, nil, 0o644) }) // before the host closes
	type result struct {
		resp invoke.Response
		err  error
	}
	victim := make(chan result, 1)
	go func() {
		resp, err := h.Invoke(context.Background(), "victim", invoke.Request{Payload: fmt.Appendf(nil, `{"id_file":%q,"go_file":%q}`, idFile, goFile)})
		victim <- result{resp, err}
	}()
	testenv.Eventually(t, "the victim's invocation runs", func() bool { b, _ := os.ReadFile(idFile); return len(b) > 0 })
	id, _ := os.ReadFile(idFile)
	st, _ := h.Status("victim")
	if len(st.Instances) != 1 || st.Instances[0].PID == 0 {
		t.Fatalf("victim instances %+v", st.Instances)
	}
	pid := st.Instances[0].PID
	steal := func(name string, event string) map[string]any {
		t.Helper()
		resp, err := h.Invoke(context.Background(), name, invoke.Request{Payload: []byte(event)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got map[string]any
		if err := json.Unmarshal(resp.Payload, &got); err != nil {
			t.Fatalf("%s answered %q", name, resp.Payload)
		}
		return got
	}

	got := steal("thief", fmt.Sprintf(`{"do":"steal","pid":%d,"requestID":%q}`, pid, id))
	if got["environ"] != "read" || got["next"] != float64(403) || got["response"] != float64(403) {
		t.Errorf("a function of the same uid: %v, want the environment read and /next and the response refused (403)", got)
	}

	if os.Getuid() == 0 {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatal(err)
		}
		var addr string
		for kv := range strings.SplitSeq(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "AWS_LAMBDA_RUNTIME_API="); ok {
				addr = v
			}
		}
		other := lambdaSpec("thief-nobody", "event")
		other.CodeDir = reachableBin(t, "lambda")
		other.User = &function.User{UID: 65534, GID: 65534}
		deploy(t, h, other)
		got := steal("thief-nobody", fmt.Sprintf(`{"do":"steal","pid":%d,"requestID":%q}`, pid, id))
		if got["environ"] == "read" {
			t.Errorf("another uid read the victim's environment: %v", got)
		}
		got = steal("thief-nobody", fmt.Sprintf(`{"do":"steal","addr":%q,"requestID":%q}`, addr, id))
		if got["next"] != float64(403) || got["response"] != float64(403) {
			t.Errorf("another uid with the whole address: %v, want /next and the response refused (403)", got)
		}
		hostPort, _, _ := strings.Cut(addr, "/")
		got = steal("thief-nobody", fmt.Sprintf(`{"do":"steal","addr":%q,"requestID":%q}`, hostPort, id))
		if got["next"] != float64(403) || got["response"] != float64(403) {
			t.Errorf("another uid without the secret: %v, want /next and the response refused (403)", got)
		}
	}

	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-victim
	if r.err != nil || string(r.resp.Payload) != `"mine"` {
		t.Fatalf("the victim's invocation: %q, %v; want its own answer", r.resp.Payload, r.err)
	}
}

// TestNativePipesOutOfReach: a function of another uid cannot open the
// native protocol's pipes through /proc, neither the instance's ends nor
// the host's.
func TestNativePipesOutOfReach(t *testing.T) {
	testenv.Root(t, "switching users")
	h := newHost(t, nil)
	victim := nativeSpec("pipes", "echo")
	victim.CodeDir = reachableBin(t, "native")
	deploy(t, h, victim)
	if st, _ := h.Status("pipes"); st.User == "host" {
		t.Fatalf("the native function runs as the host's user")
	}
	thief := lambdaSpec("pipe-thief", "event")
	thief.CodeDir = reachableBin(t, "lambda")
	deploy(t, h, thief)
	if _, err := h.Invoke(context.Background(), "pipes", invoke.Request{Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	st, _ := h.Status("pipes")
	if len(st.Instances) == 0 || st.Instances[0].PID == 0 {
		t.Fatalf("no instance: %+v", st.Instances)
	}
	for what, pid := range map[string]int{"the instance": st.Instances[0].PID, "the host": os.Getpid()} {
		resp, err := h.Invoke(context.Background(), "pipe-thief", invoke.Request{Payload: fmt.Appendf(nil, `{"do":"open-fds","pid":%d}`, pid)})
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Opened []int }
		if err := json.Unmarshal(resp.Payload, &got); err != nil {
			t.Fatalf("%q: %v", resp.Payload, err)
		}
		if len(got.Opened) != 0 {
			t.Errorf("a function of another uid opened descriptors %v of %s through /proc", got.Opened, what)
		}
	}
}

// TestOutlivesAnEarlierDeadline: an instance keeps an earlier, shorter
// invocation's deadline (the native pipes' deadlines, a runtime API
// instance's timer: moving them costs a timer update per call); an
// invocation that runs past it, within its own, is answered and the
// instance kept.
func TestOutlivesAnEarlierDeadline(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec function.Spec
		hold func(d string) string
	}{
		{"native", nativeSpec("hold", "hold"), func(d string) string { return d }},
		{"lambda", lambdaSpec("hold", "event"), func(d string) string { return `{"Do":"hold","For":"` + d + `"}` }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, nil)
			s := tc.spec
			s.Mode, s.Timeout = function.Continuous, function.Duration(time.Minute)
			deploy(t, h, s)
			short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if _, err := h.Invoke(short, "hold", invoke.Request{Payload: []byte(tc.hold("0s"))}); err != nil {
				t.Fatalf("short call: %v", err)
			}
			resp, err := h.Invoke(context.Background(), "hold", invoke.Request{Payload: []byte(tc.hold("700ms"))})
			if err != nil || string(resp.Payload) != `"held"` {
				t.Fatalf("a call past the earlier deadline: %q %v", resp.Payload, err)
			}
			if st, _ := h.Status("hold"); st.Stats.ColdStarts != 1 {
				t.Errorf("%d cold starts: the instance was replaced", st.Stats.ColdStarts)
			}
		})
	}
}
