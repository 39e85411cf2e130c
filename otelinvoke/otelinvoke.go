// Package otelinvoke connects edgekit's W3C trace context (invoke.Trace) to
// OpenTelemetry. It is a module of its own, so that edgekit's core does not
// link the OpenTelemetry API or SDK: firmware that traces with OpenTelemetry
// imports this adapter.
//
// Context turns an invocation's trace context into a context whose remote
// parent is the caller's span; Trace turns the span of a context back into
// the trace context to send on (an HTTP call, a message's user
// properties). Handler wraps an in-process function so that each
// invocation is a span, child of its cause's.
package otelinvoke

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

var propagator = propagation.TraceContext{}

// carrier is an invoke.Trace as the propagator's text map.
type carrier struct{ t *invoke.Trace }

func (c carrier) Get(key string) string {
	switch key {
	case invoke.TraceParentKey:
		return c.t.Parent
	case invoke.TraceStateKey:
		return c.t.State
	}
	return ""
}

func (c carrier) Set(key, value string) {
	switch key {
	case invoke.TraceParentKey:
		c.t.Parent = value
	case invoke.TraceStateKey:
		c.t.State = value
	}
}

func (c carrier) Keys() []string { return []string{invoke.TraceParentKey, invoke.TraceStateKey} }

// Context returns ctx with t as its remote span context (ctx itself when t
// holds none).
func Context(ctx context.Context, t invoke.Trace) context.Context {
	if !t.Valid() {
		return ctx
	}
	return propagator.Extract(ctx, carrier{&t})
}

// Trace returns the trace context of ctx's span, checked as ParseTrace
// checks what comes from outside (the zero Trace when ctx has no valid
// span).
func Trace(ctx context.Context) invoke.Trace {
	var t invoke.Trace
	propagator.Inject(ctx, carrier{&t})
	return invoke.ParseTrace(t.Parent, t.State)
}

// Handler wraps h: each invocation runs in a span named "invoke
// <function>" of tp's tracer, child of the invocation's trace context,
// with the function, version and request id as attributes; an error marks
// the span failed.
func Handler(tp trace.TracerProvider, h function.Handler) function.Handler {
	tracer := tp.Tracer("github.com/edgekit/edgekit/otelinvoke")
	return function.HandlerFunc(func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		name, attrs := "invoke", []attribute.KeyValue(nil)
		if inv, ok := function.FromContext(ctx); ok {
			name += " " + inv.Function
			attrs = append(attrs, attribute.String("faas.name", inv.Function), attribute.String("faas.version", inv.Version),
				attribute.String("faas.invocation_id", inv.RequestID()))
			req.Trace = inv.Trace
		}
		ctx, span := tracer.Start(Context(ctx, req.Trace), name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		resp, err := h.Handle(ctx, req)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return resp, err
	})
}
