// Package fnapi is the contract between a function and the gateway it runs
// on: the methods a function calls (publish a message, invoke a function,
// read and write devices, read its configuration), their arguments and
// answers as JSON, and the errors a refusal carries. The Go client is
// package function/native; the Node.js and Python modules (edgekit) speak
// the same methods over the same frames, or through the gateway's local
// API (POST /v1/calls/{method}) from a runtime-API bootstrap; the gateway
// (package edge/fncall) serves them, enforcing the function's
// spec.Permissions. It has no dependency beyond the standard library.
//
// A call is a method name, its arguments as a JSON object, and a payload of
// raw bytes (a message's or an event's). Its answer is a payload (the
// result) or an Error. Every call is bounded by the invocation's deadline
// or the caller's own, and by the function's timeout.
package fnapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// The methods. Each names its arguments' type; the payload and the
// answer are as said.
const (
	// Publish sends the payload as a message (PublishArgs); the answer is
	// empty once the bus has taken it.
	Publish = "publish"
	// Invoke calls a function with the payload as its event
	// (InvokeArgs); the answer is its result, or with Async set empty
	// once the invocation is queued.
	Invoke = "invoke"
	// DeviceGet reads properties (DeviceGetArgs); the answer is a
	// DeviceGetAnswer.
	DeviceGet = "device.get"
	// DeviceSet writes properties (DeviceSetArgs); the answer is a
	// DeviceSetAnswer.
	DeviceSet = "device.set"
	// DeviceCall calls a device's service (DeviceCallArgs); the answer is
	// a DeviceCallAnswer.
	DeviceCall = "device.call"
	// DeviceList lists the devices the function may reach
	// (DeviceListArgs); the answer is a DeviceListAnswer.
	DeviceList = "device.list"
	// ConfigGet answers the function's configuration document as
	// deployed (no arguments; "null" when it has none).
	ConfigGet = "config.get"
	// Flush answers once every call made before it without waiting for
	// an answer (id 0 on the native protocol) has been carried out: empty
	// when each was, or an Error saying how many were refused since the
	// last flush, with the first refusal's type and message. No
	// arguments. A function that publishes without waiting calls it to
	// learn what was refused.
	Flush = "flush"
)

// PublishArgs are a publish's arguments.
type PublishArgs struct {
	Topic string `json:"topic"`
	// QoS is 0, 1 or 2 (default 0).
	QoS         byte   `json:"qos,omitempty"`
	Retain      bool   `json:"retain,omitempty"`
	ContentType string `json:"contentType,omitempty"`
	// UserProperties are name and value pairs, in order, with repeats.
	UserProperties [][2]string `json:"userProperties,omitempty"`
}

// InvokeArgs are an invoke's arguments.
type InvokeArgs struct {
	Function string `json:"function"`
	// Async queues the invocation and answers at once.
	Async bool `json:"async,omitempty"`
}

// DeviceGetArgs are a device.get's arguments.
type DeviceGetArgs struct {
	Device string `json:"device"`
	// Properties are the ids to read; none reads them all.
	Properties []string `json:"properties,omitempty"`
}

// DeviceGetAnswer is what a device.get answers: values by id, and why
// those that could not be read were not.
type DeviceGetAnswer struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Errors     map[string]string          `json:"errors,omitempty"`
}

// DeviceSetArgs are a device.set's arguments.
type DeviceSetArgs struct {
	Device     string                     `json:"device"`
	Properties map[string]json.RawMessage `json:"properties"`
}

// DeviceSetAnswer is what a device.set answers: per property, null when
// written, else why not.
type DeviceSetAnswer struct {
	Results map[string]*string `json:"results"`
}

// DeviceCallArgs are a device.call's arguments.
type DeviceCallArgs struct {
	Device  string                     `json:"device"`
	Service string                     `json:"service"`
	Input   map[string]json.RawMessage `json:"input,omitempty"`
}

// DeviceCallAnswer is a service's output.
type DeviceCallAnswer struct {
	Output map[string]json.RawMessage `json:"output"`
}

// DeviceListArgs are a device.list's arguments.
type DeviceListArgs struct {
	// Labels, when set, keeps the devices that carry every one of them.
	Labels map[string]string `json:"labels,omitempty"`
}

// DeviceListAnswer lists devices.
type DeviceListAnswer struct {
	Devices []DeviceInfo `json:"devices"`
}

// DeviceInfo is one device as a function sees it.
type DeviceInfo struct {
	Name string `json:"name"`
	// State is "online", "offline" or "degraded".
	State  string            `json:"state"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Error is a refused or failed call, as it travels: a type to branch on
// and a message naming what is wrong. errors.Is matches it against the
// sentinel of its type.
type Error struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
	// Stack is a failed invocation's stack trace, when the function
	// reported one (Invoke).
	Stack []string `json:"stackTrace,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Type, e.Message) }

// Is reports whether target is the sentinel of e's type.
func (e *Error) Is(target error) bool {
	return slices.Contains(kinds[:], target) && target.Error() == e.Type
}

// The error types and their sentinels. A function's own error from Invoke
// carries the function's type and matches none of them.
var (
	// ErrForbidden: the function's permissions do not allow the call.
	ErrForbidden = errors.New("Forbidden")
	// ErrBadRequest: a malformed call (arguments, method, payload size).
	ErrBadRequest = errors.New("BadRequest")
	// ErrTimeout: the call's deadline passed, before it started or while
	// it ran.
	ErrTimeout = errors.New("Timeout")
	// ErrUnavailable: what the call needs is not running (no device
	// manager on this gateway, the gateway stopping).
	ErrUnavailable = errors.New("Unavailable")
	// ErrTooManyCalls: the instance has as many calls under way as it
	// may.
	ErrTooManyCalls = errors.New("TooManyCalls")
	// ErrUnknownFunction: Invoke named a function that is not deployed.
	ErrUnknownFunction = errors.New("UnknownFunction")
	// ErrThrottled: Invoke found the function's queue full.
	ErrThrottled = errors.New("Throttled")
	// The device errors, as the devices' bus topics name them
	// (docs/TOPICS.md).
	ErrUnknownDevice   = errors.New("UnknownDevice")
	ErrUnknownProperty = errors.New("UnknownProperty")
	ErrUnknownService  = errors.New("UnknownService")
	ErrInvalidValue    = errors.New("InvalidValue")
	ErrReadOnly        = errors.New("ReadOnly")
	ErrOffline         = errors.New("Offline")
)

// kinds are the sentinels, whose texts are the types they match.
var kinds = [...]error{ErrForbidden, ErrBadRequest, ErrTimeout, ErrUnavailable, ErrTooManyCalls, ErrUnknownFunction, ErrThrottled,
	ErrUnknownDevice, ErrUnknownProperty, ErrUnknownService, ErrInvalidValue, ErrReadOnly, ErrOffline}

// DecodeValue reads a property, input or output value as the device
// manager checks it: numbers as json.Number, so that none loses precision
// before the thing model says what it is.
func DecodeValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// DecodeValues reads values by id (DecodeValue); an error names the id.
func DecodeValues(raw map[string]json.RawMessage) (map[string]any, error) {
	out := make(map[string]any, len(raw))
	for id, b := range raw {
		v, err := DecodeValue(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		out[id] = v
	}
	return out, nil
}

// Errorf makes an Error of the sentinel's type.
func Errorf(sentinel error, format string, args ...any) *Error {
	return &Error{Type: sentinel.Error(), Message: fmt.Sprintf(format, args...)}
}

// Limits a gateway holds every call to.
const (
	// MaxArgs bounds a call's JSON arguments.
	MaxArgs = 64 << 10
	// MaxPayload bounds a call's payload (a message, an event).
	MaxPayload = 1 << 20
	// MaxCallsInFlight bounds the calls one instance has under way; one
	// more is answered ErrTooManyCalls.
	MaxCallsInFlight = 32
)
