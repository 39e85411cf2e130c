package native

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/edgekit/edgekit/function/fnapi"
)

// Driver is a device driver written as a native Go function: give it to
// StartWith (Options.Driver) and the gateway's requests for the devices
// bound to the function reach it, never the handler (docs/FUNCTION-API.md,
// Drivers). Each call's ctx ends at the request's deadline; a goroutine
// that reports for a device after Attach returns keeps the connection with
// context.WithoutCancel(ctx).
//
// An error that is an *fnapi.Error of a device type (fnapi.Errorf with
// fnapi.ErrUnknownDevice, ErrUnknownProperty, ErrUnknownService,
// ErrInvalidValue, ErrReadOnly, ErrOffline) refuses the request as that;
// any other answers a generic error with its text.
type Driver interface {
	// Attach serves a device, or serves it with new settings (its model
	// or config changed), or again after the driver's process was
	// restarted. The device is online once it returns, unless the driver
	// says otherwise (SetState).
	Attach(ctx context.Context, t fnapi.Thing) error
	// Detach serves the device no more.
	Detach(ctx context.Context, name string) error
	// GetProperties reads properties: a value that is an error fails that
	// property alone; an id left out is answered UnknownProperty.
	GetProperties(ctx context.Context, t fnapi.Thing, ids []string) (map[string]any, error)
	// SetProperties writes values already checked against the model and
	// returns an error for each one not written.
	SetProperties(ctx context.Context, t fnapi.Thing, values map[string]json.RawMessage) (map[string]error, error)
	// CallService calls a service with checked input and returns its
	// output.
	CallService(ctx context.Context, t fnapi.Thing, service string, input map[string]json.RawMessage) (map[string]any, error)
}

// driving is a Driver and the devices the gateway gave it.
type driving struct {
	d Driver

	mu     sync.Mutex
	things map[string]fnapi.Thing
	keys   map[string]string // each thing as JSON, to tell a repeat from a change
}

// serveOp answers one of the gateway's driver ops.
func (s *driving) serveOp(ctx context.Context, payload []byte) ([]byte, error) {
	var op fnapi.DriverOp
	if err := json.Unmarshal(payload, &op); err != nil {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "driver op: %v", err)
	}
	switch op.Op {
	case fnapi.OpAttach, fnapi.OpUpdate:
		if op.Thing == nil {
			return nil, fnapi.Errorf(fnapi.ErrBadRequest, "driver op %s: no thing", op.Op)
		}
		key, _ := json.Marshal(op.Thing)
		s.mu.Lock()
		same := s.keys[op.Thing.Name] == string(key)
		s.mu.Unlock()
		if same {
			return []byte("null"), nil
		}
		if err := s.d.Attach(ctx, *op.Thing); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.things[op.Thing.Name], s.keys[op.Thing.Name] = *op.Thing, string(key)
		s.mu.Unlock()
		return []byte("null"), nil
	case fnapi.OpDetach:
		s.mu.Lock()
		_, known := s.things[op.Device]
		delete(s.things, op.Device)
		delete(s.keys, op.Device)
		s.mu.Unlock()
		if known {
			if err := s.d.Detach(ctx, op.Device); err != nil {
				return nil, err
			}
		}
		return []byte("null"), nil
	}
	s.mu.Lock()
	t, ok := s.things[op.Device]
	s.mu.Unlock()
	if !ok {
		return nil, fnapi.Errorf(fnapi.ErrUnknownDevice, "device %s: not one of this driver's", op.Device)
	}
	switch op.Op {
	case fnapi.OpGet:
		got, err := s.d.GetProperties(ctx, t, op.Properties)
		if err != nil {
			return nil, err
		}
		ans := fnapi.DriverGetAnswer{Properties: map[string]json.RawMessage{}, Errors: map[string]*fnapi.Error{}}
		for _, id := range op.Properties {
			v, ok := got[id]
			if !ok {
				continue
			}
			if e, isErr := v.(error); isErr {
				ans.Errors[id] = wireError(e)
			} else if ans.Properties[id], err = json.Marshal(v); err != nil {
				ans.Errors[id] = fnapi.Errorf(fnapi.ErrInvalidValue, "property %s: %v", id, err)
				delete(ans.Properties, id)
			}
		}
		return json.Marshal(ans)
	case fnapi.OpSet:
		res, err := s.d.SetProperties(ctx, t, op.Values)
		if err != nil {
			return nil, err
		}
		ans := fnapi.DriverSetAnswer{Errors: map[string]*fnapi.Error{}}
		for id, e := range res {
			if e != nil {
				ans.Errors[id] = wireError(e)
			}
		}
		return json.Marshal(ans)
	case fnapi.OpCall:
		out, err := s.d.CallService(ctx, t, op.Service, op.Input)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]any{}
		}
		return json.Marshal(map[string]any{"output": out})
	}
	return nil, fnapi.Errorf(fnapi.ErrBadRequest, "driver op %q: unknown", op.Op)
}

// wireError is err as a driver's answer carries it: an *fnapi.Error with
// its type, anything else as "Error" with its text.
func wireError(err error) *fnapi.Error {
	var fe *fnapi.Error
	if errors.As(err, &fe) {
		return fe
	}
	return &fnapi.Error{Type: "Error", Message: err.Error()}
}

// hello tells the gateway the instance serves as a driver.
func hello(ctx context.Context) error {
	_, err := do(ctx, fnapi.DriverHello, struct{}{}, nil, nil)
	return err
}

// Report hands over property values a device of the driver's told, and
// returns the values the thing model refused (by id, why); the others were
// taken. ctx is one of the Driver's or the handler's, or derived from one.
func Report(ctx context.Context, device string, values map[string]any, at time.Time) (map[string]string, error) {
	props, err := encodeValues("property", values)
	if err != nil {
		return nil, err
	}
	args := fnapi.DriverReportArgs{Device: device, Properties: props}
	if !at.IsZero() {
		args.Time = at.UnixMilli()
	}
	var a fnapi.DriverReportAnswer
	if _, err := do(ctx, fnapi.DriverReport, args, nil, &a); err != nil {
		return nil, err
	}
	return a.Refused, nil
}

// Emit raises an event of a device of the driver's, checked against its
// thing model.
func Emit(ctx context.Context, device, event string, output map[string]any) error {
	out, err := encodeValues("output", output)
	if err != nil {
		return err
	}
	_, err = do(ctx, fnapi.DriverEvent, fnapi.DriverEventArgs{Device: device, Event: event, Output: out}, nil, nil)
	return err
}

// SetState tells a device's link state: "online", "offline" or
// "degraded", with the cause when it is not online.
func SetState(ctx context.Context, device, state, cause string) error {
	_, err := do(ctx, fnapi.DriverState, fnapi.DriverStateArgs{Device: device, State: state, Cause: cause}, nil, nil)
	return err
}
