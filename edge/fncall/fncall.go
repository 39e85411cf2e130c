// Package fncall serves what functions ask of the gateway (package fnapi's
// methods) on the gateway's own parts: a publish goes on its bus, an
// invoke to its function host, a device call to its device manager, and
// the configuration comes from the caller's deployed spec. It is the
// function host's CallHandler (function.Options.Calls).
//
// Everything a function asks is checked against its spec.Permissions and
// refused, naming what was asked, when they do not allow it:
//
//   - publish: its own prefix outputs/{name}/#, and the filters its
//     permissions list. Never the gateway's own topics (edgekit/#,
//     $-topics) nor a device's reports (devices/+/properties,
//     devices/+/state, devices/+/events/#), whatever is listed; user
//     properties named edgekit-* are the gateway's (edgekit-device marks a
//     device's messages) and are refused. Each message carries
//     edgekit-function, the caller's name.
//   - invoke: the functions its permissions list.
//   - device calls and the device list: the devices its permissions list.
package fncall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/spec"
	"github.com/edgekit/edgekit/invoke"
)

// Functions is what an invoke reaches: function.Host is one.
type Functions interface {
	invoke.Invoker
	InvokeAsync(ctx context.Context, function string, req invoke.Request) (string, error)
}

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives refused calls at debug level; nil discards.
	Logger *slog.Logger
	// Drivers serves the driver methods (fnapi.Driver*: package
	// edge/fndriver's Set.Serve); without it they are refused.
	Drivers function.CallHandler
}

// Server serves function calls. Its Serve is a function.CallHandler.
type Server struct {
	bus       bus.Bus
	functions Functions
	devices   atomic.Pointer[device.Manager]
	drivers   function.CallHandler
	log       *slog.Logger

	// plans are what publish arguments decide, by their JSON: a function
	// publishing a stream sends the same arguments with each message,
	// and decoding and checking them cost more than the publish.
	pmu   sync.Mutex
	plans map[string]*publishPlan
}

// publishPlan is what a publish's arguments decide for a function: the
// refusal, or the message's topic, options and user properties. Shared
// and read-only once made.
type publishPlan struct {
	args  fnapi.PublishArgs
	fn    string   // the function it was checked for
	perm  []string // and its permissions.publish
	props []bus.UserProperty
	err   error
}

// Bounds of the publish plans kept: entries, and the arguments' length
// (longer ones are decoded and checked each time).
const (
	maxPlans       = 256
	maxPlanArgsLen = 512
)

// plan decodes and checks c's publish arguments, or finds them done.
func (s *Server) plan(c *function.Call) (*publishPlan, error) {
	fn, perm := c.Function.Name, c.Function.Permissions.Publish
	keep := len(c.Args) <= maxPlanArgsLen
	if keep {
		s.pmu.Lock()
		p := s.plans[string(c.Args)]
		s.pmu.Unlock()
		if p != nil && p.fn == fn && slices.Equal(p.perm, perm) {
			return p, nil
		}
	}
	p := &publishPlan{fn: fn, perm: perm}
	if err := c.DecodeArgs(&p.args); err != nil {
		return nil, err
	}
	p.props, p.err = checkPublish(fn, perm, &p.args)
	if keep {
		s.pmu.Lock()
		if s.plans == nil || len(s.plans) >= maxPlans {
			s.plans = map[string]*publishPlan{}
		}
		s.plans[string(c.Args)] = p
		s.pmu.Unlock()
	}
	return p, nil
}

// New returns a server publishing on b and invoking through functions.
// Device calls are answered fnapi.ErrUnavailable until SetDevices.
func New(b bus.Bus, functions Functions, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{bus: b, functions: functions, drivers: o.Drivers, log: o.Logger}
}

// SetDevices gives the server the device manager its device calls reach
// (the gateway starts it after the function host).
func (s *Server) SetDevices(m *device.Manager) { s.devices.Store(m) }

// Serve answers one call.
func (s *Server) Serve(ctx context.Context, c *function.Call) ([]byte, error) {
	out, err := s.serve(ctx, c)
	if err != nil {
		s.log.Debug("fncall: call refused or failed", "function", c.Function.Name, "method", c.Method, "error", err)
	}
	return out, err
}

func (s *Server) serve(ctx context.Context, c *function.Call) ([]byte, error) {
	perm := c.Function.Permissions
	switch c.Method {
	case fnapi.Publish:
		p, err := s.plan(c)
		if err != nil {
			return nil, err
		}
		return nil, s.publish(ctx, p, c.Payload)
	case fnapi.Invoke:
		var a fnapi.InvokeArgs
		if err := c.DecodeArgs(&a); err != nil {
			return nil, err
		}
		if !spec.Allows(perm.Invoke, a.Function) {
			return nil, fnapi.Errorf(fnapi.ErrForbidden, "invoke %q: not among the functions its permissions.invoke list", a.Function)
		}
		req := invoke.Request{Payload: c.Payload, Source: map[string]string{"type": "function", "function": c.Function.Name}}
		if a.Async {
			_, err := s.functions.InvokeAsync(ctx, a.Function, req)
			return nil, invokeError(a.Function, err)
		}
		resp, err := s.functions.Invoke(ctx, a.Function, req)
		return resp.Payload, invokeError(a.Function, err)
	case fnapi.DeviceGet:
		var a fnapi.DeviceGetArgs
		m, err := s.deviceCall(c, &a, &a.Device)
		if err != nil {
			return nil, err
		}
		got, err := m.Get(ctx, a.Device, a.Properties)
		if err != nil {
			return nil, deviceError(a.Device, err)
		}
		ans := fnapi.DeviceGetAnswer{Properties: map[string]json.RawMessage{}, Errors: map[string]string{}}
		for id, r := range got {
			if r.Err != nil {
				ans.Errors[id] = r.Err.Error()
			} else if ans.Properties[id], err = json.Marshal(r.Value); err != nil {
				return nil, fmt.Errorf("device %s: property %s: %w", a.Device, id, err)
			}
		}
		return json.Marshal(ans)
	case fnapi.DeviceSet:
		var a fnapi.DeviceSetArgs
		m, err := s.deviceCall(c, &a, &a.Device)
		if err != nil {
			return nil, err
		}
		if len(a.Properties) == 0 {
			return nil, fnapi.Errorf(fnapi.ErrBadRequest, "device.set %s: no properties given", a.Device)
		}
		values, err := decodeValues("properties", a.Properties)
		if err != nil {
			return nil, err
		}
		res, err := m.Set(ctx, a.Device, values)
		if err != nil {
			return nil, deviceError(a.Device, err)
		}
		ans := fnapi.DeviceSetAnswer{Results: map[string]*string{}}
		for id, e := range res {
			ans.Results[id] = nil
			if e != nil {
				msg := e.Error()
				ans.Results[id] = &msg
			}
		}
		return json.Marshal(ans)
	case fnapi.DeviceCall:
		var a fnapi.DeviceCallArgs
		m, err := s.deviceCall(c, &a, &a.Device)
		if err != nil {
			return nil, err
		}
		in, err := decodeValues("input", a.Input)
		if err != nil {
			return nil, err
		}
		out, err := m.Call(ctx, a.Device, a.Service, in)
		if err != nil {
			return nil, deviceError(a.Device, err)
		}
		return json.Marshal(map[string]any{"output": out})
	case fnapi.DeviceList:
		var a fnapi.DeviceListArgs
		if err := c.DecodeArgs(&a); err != nil {
			return nil, err
		}
		m := s.devices.Load()
		if m == nil {
			return nil, fnapi.Errorf(fnapi.ErrUnavailable, "device.list: this gateway runs no device manager")
		}
		ans := fnapi.DeviceListAnswer{Devices: []fnapi.DeviceInfo{}}
		for _, name := range m.Devices() {
			if !spec.Allows(perm.Devices, name) {
				continue
			}
			sh, err := m.Shadow(name)
			if err != nil || !hasLabels(sh.Labels, a.Labels) {
				continue
			}
			ans.Devices = append(ans.Devices, fnapi.DeviceInfo{Name: name, State: string(sh.State), Labels: sh.Labels})
		}
		return json.Marshal(ans)
	case fnapi.DriverHello, fnapi.DriverReport, fnapi.DriverEvent, fnapi.DriverState:
		if s.drivers == nil {
			return nil, fnapi.Errorf(fnapi.ErrForbidden, "%s: this gateway serves no driver functions", c.Method)
		}
		return s.drivers(ctx, c)
	case fnapi.ConfigGet:
		if len(c.Function.Config) == 0 {
			return []byte("null"), nil
		}
		return c.Function.Config, nil
	}
	return nil, fnapi.Errorf(fnapi.ErrBadRequest, "unknown method %q", c.Method)
}

// reserved are the filters no function publishes on, whatever its
// permissions say: the gateway's own topics and the devices' reports.
var reserved = [...]string{"edgekit/#", "devices/+/properties", "devices/+/state", "devices/+/events/#"}

// checkPublish decides a publish by function fn with permissions.publish
// perm: the message's user properties (the gateway's own last, the slice
// full so that an append copies), or the refusal.
func checkPublish(fn string, perm []string, a *fnapi.PublishArgs) ([]bus.UserProperty, error) {
	if err := bus.ValidateTopic(a.Topic); err != nil {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "publish: topic %q: %v", a.Topic, err)
	}
	if a.QoS > 2 {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "publish %s: QoS %d (want 0, 1 or 2)", a.Topic, a.QoS)
	}
	if strings.HasPrefix(a.Topic, "$") || slices.ContainsFunc(reserved[:], func(f string) bool { return bus.Match(f, a.Topic) }) {
		return nil, fnapi.Errorf(fnapi.ErrForbidden, "publish %s: the gateway's own topic (edgekit/#, $-topics and the devices' reports are never a function's)", a.Topic)
	}
	if !bus.Match("outputs/"+fn+"/#", a.Topic) && !slices.ContainsFunc(perm, func(f string) bool {
		return bus.ValidateFilter(f) == nil && bus.Match(f, a.Topic)
	}) {
		return nil, fnapi.Errorf(fnapi.ErrForbidden, "publish %s: outside outputs/%s/# and the filters its permissions.publish list", a.Topic, fn)
	}
	props := make([]bus.UserProperty, 0, len(a.UserProperties)+1)
	for _, p := range a.UserProperties {
		if strings.HasPrefix(strings.ToLower(p[0]), "edgekit-") {
			return nil, fnapi.Errorf(fnapi.ErrForbidden, "publish %s: user property %s: edgekit-* properties are the gateway's", a.Topic, p[0])
		}
		props = append(props, bus.UserProperty{Key: p[0], Value: p[1]})
	}
	return append(props, bus.UserProperty{Key: "edgekit-function", Value: fn}), nil
}

func (s *Server) publish(ctx context.Context, p *publishPlan, payload []byte) error {
	if p.err != nil {
		return p.err
	}
	a := &p.args
	msg := &bus.Message{Topic: a.Topic, Payload: payload, QoS: bus.QoS(a.QoS), Retain: a.Retain, ContentType: a.ContentType, UserProperties: p.props}
	if err := s.bus.Publish(ctx, msg); err != nil {
		switch {
		case errors.Is(err, bus.ErrInvalidMessage), errors.Is(err, bus.ErrPayloadTooLarge), errors.Is(err, bus.ErrInvalidQoS):
			return fnapi.Errorf(fnapi.ErrBadRequest, "publish %s: %v", a.Topic, err)
		case errors.Is(err, bus.ErrQueueFull), errors.Is(err, bus.ErrNotConnected), errors.Is(err, bus.ErrClosed):
			return fnapi.Errorf(fnapi.ErrUnavailable, "publish %s: %v", a.Topic, err)
		}
		return fmt.Errorf("publish %s: %w", a.Topic, err)
	}
	return nil
}

// deviceCall decodes a device call's arguments into args, whose device
// name is at *name, and returns the manager once the caller may reach
// that device.
func (s *Server) deviceCall(c *function.Call, args any, name *string) (*device.Manager, error) {
	if err := c.DecodeArgs(args); err != nil {
		return nil, err
	}
	if !spec.Allows(c.Function.Permissions.Devices, *name) {
		return nil, fnapi.Errorf(fnapi.ErrForbidden, "%s %q: not among the devices its permissions.devices list", c.Method, *name)
	}
	m := s.devices.Load()
	if m == nil {
		return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: this gateway runs no device manager", c.Method)
	}
	return m, nil
}

// decodeValues reads values as the device manager checks them; a
// malformed one is a bad request naming field and id.
func decodeValues(field string, raw map[string]json.RawMessage) (map[string]any, error) {
	out, err := fnapi.DecodeValues(raw)
	if err != nil {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s.%v", field, err)
	}
	return out, nil
}

// deviceError is a device manager's error about device name as a call
// answers it.
func deviceError(name string, err error) error { return DeviceError("device "+name, err) }

// DeviceError is a device manager's error as a call answers it, after
// what (the device, the method): the device errors with their types (as
// the devices' topics name them), a closed manager as
// fnapi.ErrUnavailable, anything else as it is.
func DeviceError(what string, err error) error {
	typ := devicebus.ErrorType(err)
	if errors.Is(err, device.ErrClosed) {
		typ = fnapi.ErrUnavailable.Error()
	}
	if typ == "Error" {
		return fmt.Errorf("%s: %w", what, err)
	}
	return &fnapi.Error{Type: typ, Message: fmt.Sprintf("%s: %v", what, err)}
}

// invokeError is an invocation's error as a call answers it: a function's
// own error passes as it is (the host sends its type and stack).
func invokeError(name string, err error) error {
	var fe *invoke.Error
	if err == nil || errors.As(err, &fe) {
		return err
	}
	for _, k := range []struct{ err, kind error }{
		{invoke.ErrNotFound, fnapi.ErrUnknownFunction}, {invoke.ErrThrottled, fnapi.ErrThrottled},
		{invoke.ErrTimeout, fnapi.ErrTimeout}, {invoke.ErrUnavailable, fnapi.ErrUnavailable},
	} {
		if errors.Is(err, k.err) {
			return fnapi.Errorf(k.kind, "invoke %s: %v", name, err)
		}
	}
	return err
}

// hasLabels reports whether labels carry every one of want.
func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
