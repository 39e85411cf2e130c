package otelinvoke_test

import (
	"context"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/otelinvoke"
)

// A function whose invocations are spans, children of their callers'.
func ExampleHandler() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	h, _ := function.New(nil)
	defer h.Close(context.Background())
	_ = h.Register("hello", otelinvoke.Handler(tp, function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: []byte(`"hi"`)}, nil
	})))
	_ = h.Deploy(context.Background(), function.Spec{Name: "hello", Version: "1", Runtime: function.RuntimeGo, Handler: "hello"})
	caller := invoke.ParseTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	_, _ = h.Invoke(context.Background(), "hello", invoke.Request{Trace: caller})
	s := rec.Ended()[0]
	fmt.Println(s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID())
	// Output: invoke hello 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7
}
