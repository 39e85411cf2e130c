// Package mqttcall lets MQTT clients call functions: MQTT v5 request/
// response on the bus. A request is a message on
//
//	<prefix>functions/<name>/invoke
//
// whose payload is the event. With a response topic, the function's result
// comes back there with the request's correlation data (which is then
// required); a failure comes back as JSON {"error", "error_type"} with the
// user properties edgekit-error and edgekit-error-type. Without a response
// topic the call is asynchronous: the function runs, nobody is answered.
//
// From a shell, through the gateway's Mosquitto:
//
//	mosquitto_rr -V 5 -t functions/hello/invoke -e replies/me -D PUBLISH correlation-data 1 -m '{}'
package mqttcall

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/busrr"
	"github.com/edgekit/edgekit/invoke"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Prefix goes before "functions/<name>/invoke", e.g. "gw1/"; default
	// none.
	Prefix string
	// Concurrency bounds the calls running at once; default 64. Requests
	// beyond it wait (the bus holds them back).
	Concurrency int
	// MaxPayload bounds a request's payload; default 1 MiB.
	MaxPayload int
	// ResponsePrefix is where replies may go; a request with a response
	// topic outside it is refused unhandled. Default "replies/".
	ResponsePrefix string
	// Logger receives the server's records; nil discards.
	Logger *slog.Logger
}

// Server answers function calls on a bus.
type Server struct{ rr *busrr.Server }

// Serve subscribes to the call topic on b and answers through inv until
// Close.
func Serve(ctx context.Context, b bus.Bus, inv invoke.Invoker, opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	filter := o.Prefix + "functions/+/invoke"
	if err := bus.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("mqttcall: prefix %q: %w", o.Prefix, err)
	}
	call := func(ctx context.Context, m *bus.Message) (busrr.Answer, error) {
		name := strings.TrimSuffix(strings.TrimPrefix(m.Topic, o.Prefix+"functions/"), "/invoke")
		parent, _ := m.Property(invoke.TraceParentKey)
		state, _ := m.Property(invoke.TraceStateKey)
		req := invoke.Request{Payload: m.Payload, ContentType: m.ContentType, Source: map[string]string{"type": "mqtt", "topic": m.Topic},
			Trace: invoke.ParseTrace(parent, state)}
		resp, err := inv.Invoke(ctx, name, req)
		if err != nil {
			return busrr.Answer{}, fmt.Errorf("function %s: %w", name, err)
		}
		return busrr.Answer{Payload: resp.Payload, ContentType: resp.ContentType}, nil
	}
	rr, err := busrr.Serve(ctx, b, filter, call, &busrr.Options{Concurrency: o.Concurrency, MaxPayload: o.MaxPayload, ResponsePrefix: o.ResponsePrefix,
		ErrorType: invoke.ErrorType, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("mqttcall: %w", err)
	}
	return &Server{rr: rr}, nil
}

// Close stops answering and waits for the calls in flight (or ctx, which
// then cancels them). It is safe to call twice.
func (s *Server) Close(ctx context.Context) error { return s.rr.Close(ctx) }
