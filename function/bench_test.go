package function_test

import (
	"context"
	"testing"

	"github.com/edgekit/edgekit/function"
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
