// Package busrr serves MQTT v5 requests on the bus the way every edgekit
// caller answers them: requests run concurrently up to a bound; a request
// with a response topic must carry correlation data; the reply carries the
// answer, or an error as JSON {"error", "error_type"} with the user
// properties edgekit-error and edgekit-error-type. A request without a
// response topic runs and is not answered. Replies go only to response
// topics under the server's prefix (default "replies/"): a request naming
// any other response topic (the gateway's own status, say) is refused
// unhandled and logged, so that no caller makes the gateway publish where
// it publishes itself.
package busrr

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
)

// ErrBadRequest marks a request refused before it is handled; its type on
// the wire is "BadRequest".
var ErrBadRequest = errors.New("bad request")

// DefaultResponsePrefix is where replies go unless a server is told
// otherwise: mosquitto_rr -e replies/<me>.
const DefaultResponsePrefix = "replies/"

// ErrorProperties are the user properties of a failed request's reply:
// edgekit-error (why) and edgekit-error-type (typ).
func ErrorProperties(why, typ string) []bus.UserProperty {
	return []bus.UserProperty{{Key: "edgekit-error", Value: why}, {Key: "edgekit-error-type", Value: typ}}
}

// ReplyError reads a reply's error: why and its type, and whether the
// request failed.
func ReplyError(m *bus.Message) (why, typ string, failed bool) {
	for _, p := range m.UserProperties {
		switch p.Key {
		case "edgekit-error":
			why, failed = p.Value, true
		case "edgekit-error-type":
			typ = p.Value
		}
	}
	return why, typ, failed
}

// Answer is a handler's reply.
type Answer struct {
	Payload     []byte
	ContentType string
}

// Handler answers one request; ctx ends when the server closes.
type Handler func(ctx context.Context, req *bus.Message) (Answer, error)

// Options configure a Server.
type Options struct {
	// Concurrency bounds the requests handled at once; default 64.
	Concurrency int
	// MaxPayload bounds a request's payload; default 1 MiB.
	MaxPayload int
	// ResponsePrefix is where replies may go: a request's response topic
	// must start with it. Default DefaultResponsePrefix; it must end with
	// "/" and hold no wildcard.
	ResponsePrefix string
	// ErrorType names an error on the wire; ErrBadRequest is named before
	// it is asked. Default "Error".
	ErrorType func(error) string
	// Logger receives failed requests; nil discards.
	Logger *slog.Logger
}

// Server serves one topic filter.
type Server struct {
	bus    bus.Bus
	handle Handler
	opts   Options
	sub    bus.Subscription
	slots  chan struct{}
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex
	closed bool // no request starts once set
}

// Serve subscribes filter on b and answers with handle until Close.
func Serve(ctx context.Context, b bus.Bus, filter string, handle Handler, opts *Options) (*Server, error) {
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
	if o.ErrorType == nil {
		o.ErrorType = func(error) string { return "Error" }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ResponsePrefix == "" {
		o.ResponsePrefix = DefaultResponsePrefix
	}
	if !strings.HasSuffix(o.ResponsePrefix, "/") || strings.ContainsAny(o.ResponsePrefix, "+#") || bus.ValidateTopic(o.ResponsePrefix+"x") != nil {
		return nil, fmt.Errorf("response prefix %q: want a topic prefix ending in \"/\", without wildcards", o.ResponsePrefix)
	}
	s := &Server{bus: b, handle: handle, opts: o, slots: make(chan struct{}, o.Concurrency)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	sub, err := b.Subscribe(ctx, filter, s.receive, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("subscribing to %s: %w", filter, err)
	}
	s.sub = sub
	return s, nil
}

// receive starts a request, waiting for a free slot.
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
		s.serve(m)
	}()
}

func (s *Server) serve(m *bus.Message) {
	if m.ResponseTopic != "" && !strings.HasPrefix(m.ResponseTopic, s.opts.ResponsePrefix) {
		// Not handled, not answered: a reply there could pass for the
		// gateway's own messages.
		s.opts.Logger.Warn("request refused: its response topic is outside the reply prefix", "topic", m.Topic,
			"response_topic", m.ResponseTopic, "reply_prefix", s.opts.ResponsePrefix)
		return
	}
	var ans Answer
	var err error
	switch {
	case m.ResponseTopic != "" && len(m.CorrelationData) == 0:
		err = fmt.Errorf("%w: correlation data: required with a response topic", ErrBadRequest)
	case len(m.Payload) > s.opts.MaxPayload:
		err = fmt.Errorf("%w: payload: %d bytes, over the limit of %d", ErrBadRequest, len(m.Payload), s.opts.MaxPayload)
	default:
		ans, err = s.handle(s.ctx, m)
	}
	if err != nil {
		s.opts.Logger.Warn("request failed", "topic", m.Topic, "err", err)
	}
	if m.ResponseTopic == "" {
		return
	}
	out := &bus.Message{Topic: m.ResponseTopic, QoS: bus.AtLeastOnce, CorrelationData: m.CorrelationData,
		Payload: ans.Payload, ContentType: ans.ContentType}
	if err != nil {
		typ := "BadRequest"
		if !errors.Is(err, ErrBadRequest) {
			typ = s.opts.ErrorType(err)
		}
		out.Payload, _ = json.Marshal(map[string]string{"error": err.Error(), "error_type": typ})
		out.ContentType = "application/json"
		out.UserProperties = ErrorProperties(err.Error(), typ)
	}
	if perr := s.bus.Publish(context.WithoutCancel(s.ctx), out); perr != nil {
		s.opts.Logger.Warn("reply not sent", "response_topic", m.ResponseTopic, "err", perr)
	}
}

// Close stops answering and waits for the requests in flight (or ctx,
// which then cancels them). It is safe to call twice.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		err = s.sub.Unsubscribe(ctx)
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if werr := drain.Wait(ctx, &s.wg, s.stop); werr != nil {
			err = errors.Join(err, fmt.Errorf("waiting for requests in flight: %w", werr))
		}
		s.stop()
	})
	return err
}
