package function_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/native"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/invoke"
)

var sink invoke.Response

// BenchmarkDirectCall is the baseline: the handler called as a function.
func BenchmarkDirectCall(b *testing.B) {
	h := function.HandlerFunc(echo)
	ctx := context.Background()
	req := invoke.Request{Payload: []byte(`{"temperature":21.5}`)}
	b.ReportAllocs()
	for b.Loop() {
		sink, _ = h.Handle(ctx, req)
	}
}

// BenchmarkInvokeInProcess is the same handler through Host.Invoke: queue,
// instance, deadline and metadata included (target: ≤ 1 µs and ≤ 2
// allocations more than BenchmarkDirectCall).
func BenchmarkInvokeInProcess(b *testing.B) {
	h, err := function.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close(context.Background())
	if err := h.Register("echo", function.HandlerFunc(echo)); err != nil {
		b.Fatal(err)
	}
	if err := h.Deploy(context.Background(), function.Spec{Name: "echo", Version: "1", Runtime: function.RuntimeGo, Handler: "echo", Mode: function.Continuous}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	req := invoke.Request{Payload: []byte(`{"temperature":21.5}`)}
	b.ReportAllocs()
	for b.Loop() {
		sink, err = h.Invoke(ctx, "echo", req)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// minimalRuntimeAPI is the baseline: the least a runtime API server can
// do (one fixed request id, no checks), written here so the host is
// measured against the protocol's own cost.
type minimalRuntimeAPI struct {
	events  chan []byte
	results chan []byte
}

func (m *minimalRuntimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/2018-06-01/runtime/invocation/next":
		var ev []byte
		select {
		case ev = <-m.events:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Lambda-Runtime-Aws-Request-Id", "r")
		w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
		_, _ = w.Write(ev)
	case r.Method == http.MethodPost && r.URL.Path == "/2018-06-01/runtime/invocation/r/response":
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		m.results <- body
	default:
		http.NotFound(w, r)
	}
}

// BenchmarkWarmInvokeLambda: a warm aws-lambda-go function, invoked one
// call at a time. "minimal-server" drives the binary with
// minimalRuntimeAPI; "host" goes through Host.Invoke (target: host p50 ≤
// 1.2× minimal-server). Reports p50-µs and p99-µs.
func BenchmarkWarmInvokeLambda(b *testing.B) {
	payload := []byte(`{"temperature":21.5,"unit":"C"}`)
	b.Run("minimal-server", func(b *testing.B) { benchutil.ReportLatency(b, 200, minimalLambda(b, payload)) })
	b.Run("host", func(b *testing.B) {
		benchutil.ReportLatency(b, 200, hostFunction(b, lambdaSpec("b", "bench"), payload))
	})
}

// minimalLambda starts the aws-lambda-go test function against
// minimalRuntimeAPI and returns a call that invokes it with payload.
func minimalLambda(b *testing.B, payload []byte) func() error {
	api := &minimalRuntimeAPI{events: make(chan []byte), results: make(chan []byte)}
	srv := httptest.NewServer(api)
	cmd := exec.Command(filepath.Join(binDir, "lambda"))
	cmd.Env = append(os.Environ(), "AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(srv.URL, "http://"), "TEST_BEHAVIOUR=bench")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		srv.CloseClientConnections()
		srv.Close()
	})
	return func() error {
		api.events <- payload
		<-api.results
		return nil
	}
}

// hostFunction deploys s, continuous, on a host of its own and returns a
// call that invokes it with payload.
func hostFunction(b *testing.B, s function.Spec, payload []byte) func() error {
	if tool := map[function.Runtime]string{function.RuntimeNode: "node", function.RuntimePython: "python3"}[s.Runtime]; tool != "" {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	h, err := function.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	if s.Runtime == function.RuntimeGo {
		if err := h.Register(s.Handler, function.HandlerFunc(echo)); err != nil {
			b.Fatal(err)
		}
	}
	s.Name, s.Version, s.Mode = "b", "1", function.Continuous
	if err := h.Deploy(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	return func() error {
		_, err := h.Invoke(context.Background(), "b", invoke.Request{Payload: payload})
		return err
	}
}

// pipeEcho starts tool, a long-lived child that writes back what it reads
// on stdin, and returns a call that sends it a frame of the native
// protocol's size for payload and reads it back: the floor of an
// out-of-process invocation in that runtime.
func pipeEcho(b *testing.B, payload []byte, tool string, args ...string) func() error {
	if _, err := exec.LookPath(tool); err != nil {
		b.Skipf("%s not installed", tool)
	}
	cmd := exec.Command(tool, args...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	// An invoke frame carries about this much besides the payload.
	frame := append(make([]byte, 4+1+20+90), payload...)
	back := make([]byte, len(frame))
	return func() error {
		if _, err := in.Write(frame); err != nil {
			return err
		}
		_, err := io.ReadFull(out, back)
		return err
	}
}

// The echo children of the floors, per runtime.
var (
	nodeEcho   = []string{"node", "-e", "process.stdin.on('data', (d) => process.stdout.write(d))"}
	pythonEcho = []string{"python3", "-c", `import os
while True:
    d = os.read(0, 65536)
    if not d:
        break
    os.write(1, d)`}
)

// BenchmarkColdStart: "fork-exec" starts the aws-lambda-go binary against
// minimalRuntimeAPI and serves one invocation (the floor); "host" invokes
// an on-demand function that has no instance, so the host starts one
// (target: ≤ floor + 5 ms). Reports ms/start.
func BenchmarkColdStart(b *testing.B) {
	payload := []byte(`{}`)
	b.Run("fork-exec", func(b *testing.B) {
		b.ResetTimer()
		for b.Loop() {
			// A server per start: a killed process's /next may still be
			// waiting on a shared one, and would take the next event.
			b.StopTimer()
			api := &minimalRuntimeAPI{events: make(chan []byte), results: make(chan []byte)}
			srv := httptest.NewServer(api)
			b.StartTimer()
			cmd := exec.Command(filepath.Join(binDir, "lambda"))
			cmd.Env = append(os.Environ(), "AWS_LAMBDA_RUNTIME_API="+strings.TrimPrefix(srv.URL, "http://"), "TEST_BEHAVIOUR=bench")
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			api.events <- payload
			<-api.results
			b.StopTimer()
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			srv.CloseClientConnections()
			srv.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/start")
	})
	b.Run("host", func(b *testing.B) {
		h, err := function.New(nil)
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close(context.Background())
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			b.StopTimer()
			name := "cold-" + strconv.Itoa(i)
			s := function.Spec{Name: name, Version: "1", Runtime: function.RuntimeExecutable, Handler: "lambda", CodeDir: binDir,
				IdleTimeout: function.Duration(time.Millisecond), Env: map[string]string{"TEST_BEHAVIOUR": "bench"}}
			if err := h.Deploy(ctx, s); err != nil {
				b.Fatal(err)
			}
			for st, _ := h.Status(name); len(st.Instances) > 0; st, _ = h.Status(name) {
				time.Sleep(time.Millisecond) // the deploy's instance idles out
			}
			b.StartTimer()
			if _, err := h.Invoke(ctx, name, invoke.Request{Payload: payload}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = h.Remove(ctx, name)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/start")
	})
}

// BenchmarkIdleFunctionsMemory: heap in use with 1,000 deployed, idle,
// on-demand functions, against an empty host (target: ≤ 20 MB more).
func BenchmarkIdleFunctionsMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	for b.Loop() {
		h, err := function.New(nil)
		if err != nil {
			b.Fatal(err)
		}
		_ = h.Register("echo", function.HandlerFunc(echo))
		before := heap()
		for i := range 1000 {
			if err := h.Deploy(context.Background(), function.Spec{Name: "f" + strconv.Itoa(i), Version: "1", Runtime: function.RuntimeGo, Handler: "echo"}); err != nil {
				b.Fatal(err)
			}
		}
		after := heap()
		b.ReportMetric(float64(after-before)/(1<<20), "MB/1000-functions")
		_ = h.Close(context.Background())
	}
}

// BenchmarkThroughputLambda: invocations per second of a warm
// aws-lambda-go function with 1 and 4 instances, callers keeping every
// instance busy. Reports invokes/s.
func BenchmarkThroughputLambda(b *testing.B) {
	for _, instances := range []int{1, 4} {
		b.Run("instances-"+strconv.Itoa(instances), func(b *testing.B) {
			h, err := function.New(nil)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close(context.Background())
			s := function.Spec{Name: "tp", Version: "1", Runtime: function.RuntimeExecutable, Handler: "lambda", CodeDir: binDir,
				Mode: function.Continuous, MinInstances: instances, MaxInstances: instances, Env: map[string]string{"TEST_BEHAVIOUR": "bench"}}
			if err := h.Deploy(context.Background(), s); err != nil {
				b.Fatal(err)
			}
			n := max(b.N, 2000)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 2 * instances {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(n) {
						if _, err := h.Invoke(context.Background(), "tp", invoke.Request{Payload: []byte(`{}`)}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "invokes/s")
		})
	}
}

// BenchmarkWarmInvokeNative: warm invocations over the native protocol,
// against floors: the same frame bytes written to a long-lived child over
// pipes and read back, the child being cat, or an echo loop in the
// function's own runtime (pipe-floor-go, -node, -python: what that runtime
// costs to wake, read and write, with no protocol). Target: each ≤ 2× its
// floor. The -lambda rows show Node.js and Python through their Lambda-API
// bootstraps for comparison. Reports p50-µs and p99-µs.
func BenchmarkWarmInvokeNative(b *testing.B) {
	payload := []byte(`{"temperature":21.5,"unit":"C"}`)
	floor := func(name string, cmd ...string) {
		b.Run(name, func(b *testing.B) { benchutil.ReportLatency(b, 200, pipeEcho(b, payload, cmd[0], cmd[1:]...)) })
	}
	floor("pipe-floor", "cat")
	floor("pipe-floor-go", filepath.Join(binDir, "pipeecho"))
	floor("pipe-floor-node", nodeEcho...)
	floor("pipe-floor-python", pythonEcho...)
	b.Run("go-native-without-host", func(b *testing.B) {
		// The native Go function driven over its pipes by the benchmark
		// itself: the protocol's and the child's own cost.
		childR, hostW, _ := os.Pipe()
		hostR, childW, _ := os.Pipe()
		cmd := exec.Command(filepath.Join(binDir, "native"))
		cmd.Env = append(os.Environ(), "TEST_BEHAVIOUR=bench")
		cmd.ExtraFiles = []*os.File{childR, childW}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		childR.Close()
		childW.Close()
		defer func() { hostW.Close(); _ = cmd.Wait(); hostR.Close() }()
		r := bufio.NewReader(hostR)
		var buf, wbuf []byte
		if f, err := native.ReadFrame(r, &buf); err != nil || f.Type != native.FrameReady {
			b.Fatalf("ready: %v %v", f, err)
		}
		meta := []byte(`{"requestId":"0-1","function":"b","version":"1"}`)
		seq := uint64(0)
		benchutil.ReportLatency(b, 200, func() error {
			seq++
			wbuf = native.AppendFrame(wbuf[:0], &native.Frame{Type: native.FrameInvoke, Seq: seq, Deadline: time.Now().Add(time.Minute).UnixMilli(), Meta: meta, Payload: payload})
			if _, err := hostW.Write(wbuf); err != nil {
				return err
			}
			_, err := native.ReadFrame(r, &buf)
			return err
		})
	})
	bench := func(name string, s function.Spec) {
		b.Run(name, func(b *testing.B) { benchutil.ReportLatency(b, 200, hostFunction(b, s, payload)) })
	}
	bench("go-native", goNativeSpec())
	bench("node-native", nodeNativeSpec)
	bench("node-lambda", function.Spec{Runtime: function.RuntimeNode, API: function.APILambda, Handler: "index.echo", CodeDir: nodeNativeSpec.CodeDir})
	bench("python-native", pythonNativeSpec)
	bench("python-lambda", function.Spec{Runtime: function.RuntimePython, API: function.APILambda, Handler: "main.echo", CodeDir: pythonNativeSpec.CodeDir})
}

// The native test functions, each returning its event.
func goNativeSpec() function.Spec {
	return function.Spec{Runtime: function.RuntimeExecutable, API: function.APINative, Handler: "native", CodeDir: binDir, Env: map[string]string{"TEST_BEHAVIOUR": "bench"}}
}

var (
	nodeNativeSpec   = function.Spec{Runtime: function.RuntimeNode, API: function.APINative, Handler: "index.echo", CodeDir: testdata("node")}
	pythonNativeSpec = function.Spec{Runtime: function.RuntimePython, API: function.APINative, Handler: "main.echo", CodeDir: testdata("python")}
)

func testdata(dir string) string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "testdata", dir)
}
