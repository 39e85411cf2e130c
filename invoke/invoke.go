// Package invoke is the small contract between what starts functions and
// what runs them: package trigger calls an Invoker, and function.Host is
// one. Keeping it in its own leaf package lets trigger (and a vendor's own
// callers) invoke functions without importing package function.
package invoke

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors an Invoker returns, wrapped with the function's name.
// Callers branch on them with errors.Is.
var (
	// ErrNotFound: no function of that name is deployed.
	ErrNotFound = errors.New("function not found")
	// ErrThrottled: the function's queue is full; try again later.
	ErrThrottled = errors.New("function throttled: queue full")
	// ErrTimeout: the invocation passed its deadline.
	ErrTimeout = errors.New("function timed out")
	// ErrFunction: the function ran and reported an error (see *Error).
	ErrFunction = errors.New("function error")
	// ErrUnavailable: the function cannot run now (it is starting, crash
	// looping, or being removed).
	ErrUnavailable = errors.New("function unavailable")
)

// Request is one invocation's input.
type Request struct {
	// Payload is the event, usually JSON.
	Payload []byte
	// ContentType describes Payload; empty means application/json.
	ContentType string
	// Source says what caused the invocation (for example "type": "mqtt",
	// "topic": ..., "device": ...). Out-of-process functions receive it as
	// the Lambda client context.
	Source map[string]string
	// Trace is the W3C trace context of the invocation's cause (see
	// ParseTrace), passed to the function and onto its published result.
	Trace Trace
}

// Response is one invocation's output.
type Response struct {
	Payload     []byte
	ContentType string
}

// Invoker runs functions by name. Implementations are safe for concurrent
// use.
type Invoker interface {
	// Invoke runs the named function and returns its response, or an error
	// wrapping one of this package's sentinels. ctx bounds the wait.
	Invoke(ctx context.Context, function string, req Request) (Response, error)
}

// Error is a function's own error: what a handler returned, what a runtime
// reported through its error endpoint, or a recovered panic. It matches
// ErrFunction.
type Error struct {
	Function string
	Version  string
	// Type classifies the error ("Panic", "Runtime.ExitError", or the
	// function's own error type).
	Type    string
	Message string
	// Stack is the function's stack trace, when it reported one.
	Stack []string
	// Cause is the in-process handler's own error, for errors.Is and As.
	Cause error
}

func (e *Error) Error() string {
	return fmt.Sprintf("function %s (version %s): %s: %s", e.Function, e.Version, e.Type, e.Message)
}

// Is makes errors.Is(err, ErrFunction) true.
func (e *Error) Is(target error) bool { return target == ErrFunction }

// Unwrap returns Cause.
func (e *Error) Unwrap() error { return e.Cause }

// ErrorType names the kind of err for replies on the wire (MQTT user
// properties, HTTP headers, dead letters): a function's own error type, or
// FunctionNotFound, Timeout, Throttled, Unavailable, else Error.
func ErrorType(err error) string {
	var fe *Error
	switch {
	case errors.As(err, &fe):
		return fe.Type
	case errors.Is(err, ErrNotFound):
		return "FunctionNotFound"
	case errors.Is(err, ErrTimeout):
		return "Timeout"
	case errors.Is(err, ErrThrottled):
		return "Throttled"
	case errors.Is(err, ErrUnavailable):
		return "Unavailable"
	default:
		return "Error"
	}
}
