// Package devicebus puts a device.Manager on the bus: it publishes what
// the manager learns (property reports, events, state) and answers get,
// set and service requests (MQTT v5 request/response). The topics are in
// docs/TOPICS.md:
//
//	<prefix>devices/{device}/properties          reports: {"device", "time", "properties": {...}}
//	<prefix>devices/{device}/events/{event}      events: {"device", "event", "time", "output": {...}}
//	<prefix>devices/{device}/state               retained: {"device", "state", "cause", "time"}
//	<prefix>devices/{device}/get                 request {"properties": [...]} (none: all)
//	<prefix>devices/{device}/set                 request {"properties": {...}}
//	<prefix>devices/{device}/services/{service}  request: the input parameters
//
// Every published message carries the user property edgekit-device.
package devicebus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/busrr"
)

// Options configure the adapter. The zero value is usable.
type Options struct {
	// Prefix goes before "devices/", e.g. "gw1/"; default none.
	Prefix string
	// Concurrency bounds the requests handled at once; default 64.
	Concurrency int
	// ResponsePrefix is where replies may go; a request with a response
	// topic outside it is refused unhandled. Default "replies/".
	ResponsePrefix string
	// Logger receives failed requests; nil discards.
	Logger *slog.Logger
}

// Publisher returns the function a Manager publishes through
// (device.ManagerOptions.Publish): each notice becomes a QoS 1 message on
// its topic.
func Publisher(b bus.Bus, prefix string) func(ctx context.Context, n device.Notice) error {
	return func(ctx context.Context, n device.Notice) error {
		base := prefix + "devices/" + n.Device
		m := &bus.Message{QoS: bus.AtLeastOnce, ContentType: "application/json",
			UserProperties: []bus.UserProperty{{Key: "edgekit-device", Value: n.Device}}}
		var body any
		switch n.Kind {
		case device.PropertiesNotice:
			m.Topic = base + "/properties"
			body = struct {
				Device     string         `json:"device"`
				Time       time.Time      `json:"time"`
				Properties map[string]any `json:"properties"`
			}{n.Device, n.Time, n.Values}
		case device.EventNotice:
			m.Topic = base + "/events/" + n.Event
			body = struct {
				Device string         `json:"device"`
				Event  string         `json:"event"`
				Time   time.Time      `json:"time"`
				Output map[string]any `json:"output"`
			}{n.Device, n.Event, n.Time, n.Values}
		case device.StateNotice:
			m.Topic, m.Retain = base+"/state", true
			body = struct {
				Device string       `json:"device"`
				State  device.State `json:"state"`
				Cause  string       `json:"cause,omitempty"`
				Time   time.Time    `json:"time"`
			}{n.Device, n.State, n.Cause, n.Time}
		default:
			return fmt.Errorf("devicebus: unknown notice kind %q", n.Kind)
		}
		var err error
		if m.Payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("devicebus: %s: %w", m.Topic, err)
		}
		if err := b.Publish(ctx, m); err != nil {
			return fmt.Errorf("devicebus: %s: %w", m.Topic, err)
		}
		return nil
	}
}

// Server answers requests for a Manager's devices.
type Server struct{ rrs []*busrr.Server }

// Serve answers get, set and service requests on b until Close.
func Serve(ctx context.Context, b bus.Bus, m *device.Manager, opts *Options) (*Server, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	h := &handler{m: m, prefix: o.Prefix + "devices/"}
	s := &Server{}
	for _, suffix := range []string{"get", "set", "services/+"} {
		filter := o.Prefix + "devices/+/" + suffix
		if err := bus.ValidateFilter(filter); err != nil {
			return nil, fmt.Errorf("devicebus: prefix %q: %w", o.Prefix, err)
		}
		rr, err := busrr.Serve(ctx, b, filter, h.handle, &busrr.Options{Concurrency: o.Concurrency, ResponsePrefix: o.ResponsePrefix, ErrorType: ErrorType, Logger: o.Logger})
		if err != nil {
			_ = s.Close(ctx)
			return nil, fmt.Errorf("devicebus: %w", err)
		}
		s.rrs = append(s.rrs, rr)
	}
	return s, nil
}

// Close stops answering; it is safe to call twice.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	for _, rr := range s.rrs {
		errs = append(errs, rr.Close(ctx))
	}
	return errors.Join(errs...)
}

type handler struct {
	m      *device.Manager
	prefix string
}

func (h *handler) handle(ctx context.Context, req *bus.Message) (busrr.Answer, error) {
	name, rest, _ := strings.Cut(strings.TrimPrefix(req.Topic, h.prefix), "/")
	var answer any
	var err error
	switch {
	case rest == "get":
		var body struct {
			Properties []string `json:"properties"`
		}
		if err := decode(req.Payload, &body); err != nil {
			return busrr.Answer{}, err
		}
		var got map[string]device.Reading
		if got, err = h.m.Get(ctx, name, body.Properties); err == nil {
			values, errs := map[string]any{}, map[string]string{}
			for id, r := range got {
				if r.Err != nil {
					errs[id] = r.Err.Error()
				} else {
					values[id] = r.Value
				}
			}
			answer = map[string]any{"properties": values, "errors": errs}
		}
	case rest == "set":
		var body struct {
			Properties map[string]any `json:"properties"`
		}
		if err := decode(req.Payload, &body); err != nil {
			return busrr.Answer{}, err
		}
		if len(body.Properties) == 0 {
			return busrr.Answer{}, fmt.Errorf("%w: properties: none given", busrr.ErrBadRequest)
		}
		var res map[string]error
		if res, err = h.m.Set(ctx, name, body.Properties); err == nil {
			results := map[string]*string{}
			for id, e := range res {
				if e != nil {
					msg := e.Error()
					results[id] = &msg
				} else {
					results[id] = nil
				}
			}
			answer = map[string]any{"results": results}
		}
	case strings.HasPrefix(rest, "services/"):
		var in map[string]any
		if err := decode(req.Payload, &in); err != nil {
			return busrr.Answer{}, err
		}
		var out map[string]any
		if out, err = h.m.Call(ctx, name, strings.TrimPrefix(rest, "services/"), in); err == nil {
			answer = map[string]any{"output": out}
		}
	default:
		return busrr.Answer{}, fmt.Errorf("%w: topic %s: want devices/{device}/get, set or services/{service}", busrr.ErrBadRequest, req.Topic)
	}
	if err != nil {
		return busrr.Answer{}, err
	}
	payload, err := json.Marshal(answer)
	return busrr.Answer{Payload: payload, ContentType: "application/json"}, err
}

// decode reads a JSON request body; empty is an empty object.
func decode(payload []byte, v any) error {
	if len(strings.TrimSpace(string(payload))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: payload: %v", busrr.ErrBadRequest, err)
	}
	return nil
}

// ErrorType names an error for the wire: the error_type of a failed request
// (docs/TOPICS.md), "Error" for what is none of the device errors.
func ErrorType(err error) string {
	for _, kind := range []struct {
		err  error
		name string
	}{
		{device.ErrInvalidValue, "InvalidValue"}, {device.ErrUnknownDevice, "UnknownDevice"},
		{device.ErrUnknownProperty, "UnknownProperty"}, {device.ErrUnknownService, "UnknownService"},
		{device.ErrReadOnly, "ReadOnly"}, {device.ErrOffline, "Offline"}, {context.DeadlineExceeded, "Timeout"},
	} {
		if errors.Is(err, kind.err) {
			return kind.name
		}
	}
	return "Error"
}
