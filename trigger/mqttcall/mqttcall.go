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
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/drain"
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
	// Logger receives the server's records; nil discards.
	Logger *slog.Logger
}

// Server answers function calls on a bus.
type Server struct {
	bus   bus.Bus
	inv   invoke.Invoker
	opts  Options
	sub   bus.Subscription
	slots chan struct{}
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	once  sync.Once

	mu     sync.Mutex
	closed bool // no call starts once set
}

// Serve subscribes to the call topic on b and answers through inv until
// Close.
func Serve(ctx context.Context, b bus.Bus, inv invoke.Invoker, opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	filter := o.Prefix + "functions/+/invoke"
	if err := bus.ValidateFilter(filter); err != nil {
		return nil, fmt.Errorf("mqttcall: prefix %q: %w", o.Prefix, err)
	}
	s := &Server{bus: b, inv: inv, opts: o, slots: make(chan struct{}, o.Concurrency)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	sub, err := b.Subscribe(ctx, filter, s.receive, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("mqttcall: subscribing to %s: %w", filter, err)
	}
	s.sub = sub
	return s, nil
}

// receive starts a call, waiting for a free slot.
func (s *Server) receive(ctx context.Context, m *bus.Message) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		s.wg.Done()
		return
	case <-s.ctx.Done():
		s.wg.Done()
		return
	}
	go func() {
		defer func() { <-s.slots; s.wg.Done() }()
		s.call(m)
	}()
}

// errBadRequest marks a request the server refuses before any function
// runs.
var errBadRequest = errors.New("bad request")

func (s *Server) call(m *bus.Message) {
	name := strings.TrimSuffix(strings.TrimPrefix(m.Topic, s.opts.Prefix+"functions/"), "/invoke")
	var err error
	switch {
	case m.ResponseTopic != "" && len(m.CorrelationData) == 0:
		err = fmt.Errorf("%w: correlation data: required with a response topic", errBadRequest)
	case len(m.Payload) > s.opts.MaxPayload:
		err = fmt.Errorf("%w: payload: %d bytes, over the limit of %d", errBadRequest, len(m.Payload), s.opts.MaxPayload)
	}
	if err != nil {
		s.log(m, name, err)
		s.reply(m, invoke.Response{}, err)
		return
	}
	req := invoke.Request{Payload: m.Payload, ContentType: m.ContentType, Source: map[string]string{"type": "mqtt", "topic": m.Topic}}
	resp, err := s.inv.Invoke(s.ctx, name, req)
	if err != nil {
		s.log(m, name, err)
	}
	if m.ResponseTopic != "" {
		s.reply(m, resp, err)
	}
}

func (s *Server) log(m *bus.Message, name string, err error) {
	s.opts.Logger.Warn("mqttcall: call failed", "function", name, "topic", m.Topic, "err", err)
}

// reply answers m on its response topic.
func (s *Server) reply(m *bus.Message, resp invoke.Response, err error) {
	if m.ResponseTopic == "" {
		return
	}
	out := &bus.Message{Topic: m.ResponseTopic, QoS: bus.AtLeastOnce, CorrelationData: m.CorrelationData,
		Payload: resp.Payload, ContentType: resp.ContentType}
	if err != nil {
		typ := errorType(err)
		out.Payload, _ = json.Marshal(map[string]string{"error": err.Error(), "error_type": typ})
		out.ContentType = "application/json"
		out.UserProperties = []bus.UserProperty{{Key: "edgekit-error", Value: err.Error()}, {Key: "edgekit-error-type", Value: typ}}
	}
	if perr := s.bus.Publish(context.WithoutCancel(s.ctx), out); perr != nil {
		s.opts.Logger.Warn("mqttcall: reply not sent", "response_topic", m.ResponseTopic, "err", perr)
	}
}

// errorType classifies err for the reply.
func errorType(err error) string {
	if errors.Is(err, errBadRequest) {
		return "BadRequest"
	}
	return invoke.ErrorType(err)
}

// Close stops answering and waits for the calls in flight (or ctx, which
// then cancels them). It is safe to call twice.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		err = s.sub.Unsubscribe(ctx)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if werr := drain.Wait(ctx, &s.wg, s.stop); werr != nil {
			err = errors.Join(err, fmt.Errorf("mqttcall: close: waiting for calls in flight: %w", werr))
		}
		s.stop()
	})
	return err
}
