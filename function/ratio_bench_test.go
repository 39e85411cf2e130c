package function_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/benchutil"
	"github.com/edgekit/edgekit/invoke"
)

// recordedRatios are the figures docs/PERFORMANCE.md gives for
// BenchmarkInvokeRatios ("The invoke path at its floor", by mode and row):
// the worst run seen on the two machines they were taken on (2-core AMD
// EPYC KVM, 2026-12-04: three runs on one, nine on the other), so that a
// run more than benchutil.Regression times worse is worse than anything
// seen there, not its noise. in-process is the extra ns over a direct
// call; the others are p50 over the floor's.
var recordedRatios = map[string]float64{
	"idle/in-process":    931,
	"busy/in-process":    988,
	"idle/go-native":     1.83,
	"busy/go-native":     1.90,
	"idle/node-native":   1.87,
	"busy/node-native":   1.83,
	"idle/python-native": 1.67,
	"busy/python-native": 1.78,
	"idle/lambda-go":     1.17,
	"busy/lambda-go":     1.19,
}

// BenchmarkInvokeRatios measures each invoke path against the floor it
// stands on, interleaved call by call, in both machine modes (idle, and
// busy with a spinning process beside it), and fails when a ratio is more
// than 20% worse than recorded:
//
//   - in-process: Host.Invoke of an in-process Go handler against calling
//     it directly, in batches of 1,000 (extra-ns/op; target ≤ 1,000, and
//     allocs/op ≤ 1);
//   - go-native, node-native, python-native: a warm native-protocol
//     function through the host against an echo child of the same runtime
//     over pipes (target ≤ 2×);
//   - lambda-go: the aws-lambda-go test function through the host against
//     the same binary driven by a minimal runtime API server (target ≤
//     1.1×).
func BenchmarkInvokeRatios(b *testing.B) {
	payload := []byte(`{"temperature":21.5,"unit":"C"}`)
	benchutil.Modes(b, func(b *testing.B) {
		b.Run("in-process", func(b *testing.B) {
			const batch = 1000
			h := function.HandlerFunc(echo)
			invoke1 := hostFunction(b, function.Spec{Runtime: function.RuntimeGo, Handler: "echo"}, payload)
			ctx, req := context.Background(), invoke.Request{Payload: payload}
			direct := func() error {
				for range batch {
					sink, _ = h.Handle(ctx, req)
				}
				return nil
			}
			invokes := func() error {
				for range batch {
					if err := invoke1(); err != nil {
						return err
					}
				}
				return nil
			}
			p := benchutil.Pair(b, 300, direct, invokes)
			allocs := testing.AllocsPerRun(1000, func() { _ = invoke1() })
			b.ReportMetric(allocs, "allocs/invoke")
			if allocs > 1 {
				b.Errorf("REGRESSION: %v allocations per in-process invoke, want ≤ 1", allocs)
			}
			checkRatio(b, "extra-ns/op", float64(p.Extra())/batch, p)
		})
		native := func(name string, spec function.Spec, floorCmd ...string) {
			b.Run(name, func(b *testing.B) {
				p := benchutil.Pair(b, 2000, pipeEcho(b, payload, floorCmd[0], floorCmd[1:]...), hostFunction(b, spec, payload))
				checkRatio(b, "×floor", p.Ratio(), p)
			})
		}
		native("go-native", goNativeSpec(), filepath.Join(binDir, "pipeecho"))
		native("node-native", nodeNativeSpec, nodeEcho...)
		native("python-native", pythonNativeSpec, pythonEcho...)
		b.Run("lambda-go", func(b *testing.B) {
			p := benchutil.Pair(b, 1000, minimalLambda(b, payload), hostFunction(b, lambdaSpec("b", "bench"), payload))
			checkRatio(b, "×floor", p.Ratio(), p)
		})
	})
}

// checkRatio checks got against the figure recorded for the benchmark's
// mode and row, and logs what p measured when it fails; a row with none
// recorded is only reported.
func checkRatio(b *testing.B, unit string, got float64, p benchutil.Paired) {
	b.Helper()
	_, key, _ := strings.Cut(b.Name(), "/") // "idle/go-native"
	if r, ok := recordedRatios[key]; ok && r > 0 {
		if !benchutil.CheckRatio(b, unit, got, r) {
			b.Log(p)
		}
		return
	}
	b.ReportMetric(got, unit)
}

// BenchmarkFloors are what the in-process path is made of, for reading
// BenchmarkInvokeRatios's figures (docs/PERFORMANCE.md): two goroutines
// handing a value back and forth (an in-process invoke makes this round
// trip: caller → instance → caller), arming and stopping a timer, and
// reading the clock.
func BenchmarkFloors(b *testing.B) {
	benchutil.Modes(b, func(b *testing.B) {
		b.Run("goroutine-round-trip", func(b *testing.B) {
			req, resp := make(chan int), make(chan int)
			go func() {
				for v := range req {
					resp <- v
				}
			}()
			defer close(req)
			for b.Loop() {
				req <- 1
				<-resp
			}
		})
		b.Run("timer-arm-stop", func(b *testing.B) {
			t := time.NewTimer(time.Hour)
			t.Stop()
			for b.Loop() {
				t.Reset(time.Minute)
				t.Stop()
			}
		})
		b.Run("time-now", func(b *testing.B) {
			for b.Loop() {
				clock = time.Now()
			}
		})
		b.Run("monotonic-read", func(b *testing.B) {
			for b.Loop() {
				elapsed = time.Since(clock)
			}
		})
	})
}

var (
	clock   = time.Now()
	elapsed time.Duration
)
