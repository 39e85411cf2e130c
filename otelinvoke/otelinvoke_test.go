package otelinvoke_test

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/otelinvoke"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestHandlerSpans: an invocation through the function host becomes a
// span whose parent is the caller's, in the same trace; the span's own
// context goes on; an error marks the span failed.
func TestHandlerSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	var onward invoke.Trace
	_ = h.Register("traced", otelinvoke.Handler(tp, function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		onward = otelinvoke.Trace(ctx)
		if string(req.Payload) == "fail" {
			return invoke.Response{}, errors.New("broken")
		}
		return invoke.Response{Payload: []byte(`{}`)}, nil
	})))
	if err := h.Deploy(context.Background(), function.Spec{Name: "traced", Version: "3", Runtime: function.RuntimeGo, Handler: "traced"}); err != nil {
		t.Fatal(err)
	}
	tr := invoke.ParseTrace(parent, "congo=t61rcWkgMzE")
	if _, err := h.Invoke(context.Background(), "traced", invoke.Request{Payload: []byte(`{}`), Trace: tr}); err != nil {
		t.Fatal(err)
	}
	_, _ = h.Invoke(context.Background(), "traced", invoke.Request{Payload: []byte("fail"), Trace: tr})
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Name() != "invoke traced" || s.SpanContext().TraceID().String() != tr.TraceID() || s.Parent().SpanID().String() != tr.ParentID() || !s.Parent().IsRemote() {
		t.Errorf("span %s: trace %s parent %s, want trace %s parent %s", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID(), tr.TraceID(), tr.ParentID())
	}
	if s.SpanKind() != trace.SpanKindServer {
		t.Errorf("span kind %v", s.SpanKind())
	}
	if last := spans[1]; onward.TraceID() != tr.TraceID() || onward.ParentID() != last.SpanContext().SpanID().String() || onward.State != "congo=t61rcWkgMzE" {
		t.Errorf("the trace context going on: %+v, want the same trace with the span as parent", onward)
	}
	if spans[1].Status().Description != "broken" {
		t.Errorf("the failed invocation's span: %+v", spans[1].Status())
	}
	if got := otelinvoke.Trace(context.Background()); got.Valid() {
		t.Errorf("a context without a span gave %+v", got)
	}
	if ctx := otelinvoke.Context(context.Background(), invoke.Trace{}); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("an empty trace made a span context")
	}
}
