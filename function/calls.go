package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/native"
	"github.com/edgekit/edgekit/invoke"
)

// CallHandler serves one call a function made of the gateway (package
// fnapi names the methods; package native and the bootstraps make them).
// It returns the answer's payload, or an error: an *fnapi.Error travels as
// it is, an *invoke.Error (a function's, from Invoke) with its type and
// stack, and any other error as type "Error" with its text. ctx ends at
// the call's deadline, or when the calling instance stops.
type CallHandler func(ctx context.Context, c *Call) ([]byte, error)

// Call is what a function asked of the gateway.
type Call struct {
	// Function is the caller's version as deployed: its name, its
	// permissions, its configuration. The caller cannot choose it: it is
	// the spec of the instance whose pipe the call came on.
	Function Spec
	// Instance is the calling instance's id, and InstanceDone is closed
	// when that instance stops (a driver's devices go offline with it).
	// A call through the local API has neither.
	Instance     string
	InstanceDone <-chan struct{}
	Method       string
	Args         json.RawMessage // a JSON object, or empty
	Payload      []byte
}

// DecodeArgs reads the call's arguments into v strictly: an unknown field
// is a mistake the caller should hear of, and is refused as
// fnapi.ErrBadRequest naming the method. No arguments leave v as it is.
func (c *Call) DecodeArgs(v any) error {
	if len(bytes.TrimSpace(c.Args)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(c.Args))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments: %v", c.Method, err)
	}
	return nil
}

// answerWrite bounds the write of one answer: an instance that does not
// read its answers loses them, not the host's goroutines.
const answerWrite = time.Second

// callServer serves one native instance's calls (fd 5 in, fd 6 out). A
// call runs on a goroutine of its own, at most fnapi.MaxCallsInFlight at a
// time; the instance's stop ends them and close waits for them.
type callServer struct {
	spec     Spec
	instance string
	config   func() json.RawMessage // the function's configuration now
	handler  CallHandler
	w        *os.File // the instance's fd 6
	log      *slog.Logger
	slots    chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc

	gmu    sync.Mutex // orders wg.Add before close's Wait
	closed bool
	wg     sync.WaitGroup

	mu   sync.Mutex // one answer written at a time
	wbuf []byte
}

func newCallServer(spec Spec, instance string, config func() json.RawMessage, handler CallHandler, w *os.File, log *slog.Logger) *callServer {
	ctx, cancel := context.WithCancel(context.Background())
	if config == nil {
		config = func() json.RawMessage { return spec.Config }
	}
	return &callServer{spec: spec, instance: instance, config: config, handler: handler, w: w, log: log, slots: make(chan struct{}, fnapi.MaxCallsInFlight), ctx: ctx, cancel: cancel}
}

// prepare checks the call f, whose slices are the reader's and are
// copied, and returns what runs it: the caller runs that on a goroutine
// it owns, tracked by close. What is refused before the handler runs is
// answered at once, and prepare returns nil.
func (s *callServer) prepare(f *native.Frame) func() {
	id, method := f.Seq, f.Name
	deadline := time.Now().Add(time.Duration(s.spec.Timeout))
	if f.Deadline != 0 {
		if d := time.UnixMilli(f.Deadline); d.Before(deadline) {
			deadline = d
		}
	}
	switch {
	case len(f.Meta) > fnapi.MaxArgs:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments of %d bytes, above the limit of %d", method, len(f.Meta), fnapi.MaxArgs))
		return nil
	case len(f.Payload) > fnapi.MaxPayload:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: payload of %d bytes, above the limit of %d", method, len(f.Payload), fnapi.MaxPayload))
		return nil
	case !time.Now().Before(deadline):
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline had passed when it arrived", method))
		return nil
	case s.handler == nil:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: this host serves no gateway API", method))
		return nil
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrTooManyCalls, "%s: %d calls of this instance are under way", method, fnapi.MaxCallsInFlight))
		return nil
	}
	s.gmu.Lock()
	if s.closed {
		s.gmu.Unlock()
		<-s.slots
		return nil // the instance is stopping: nobody reads the answer
	}
	s.wg.Add(1)
	s.gmu.Unlock()
	fn := s.spec
	fn.Config = s.config()
	c := &Call{Function: fn, Instance: s.instance, InstanceDone: s.ctx.Done(), Method: method, Args: bytes.Clone(f.Meta), Payload: bytes.Clone(f.Payload)}
	return func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		defer cancel()
		out, err := s.handler(ctx, c)
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline passed: %v", method, err)
		}
		s.answer(id, method, out, err)
	}
}

// serve starts the call f on a goroutine of its own.
func (s *callServer) serve(f *native.Frame) {
	if run := s.prepare(f); run != nil {
		go run()
	}
}

// answer writes a call's result or error on fd 6; a call with id 0 wants
// none, so its error goes to the function's log.
func (s *callServer) answer(id uint64, method string, out []byte, err error) {
	f := &native.Frame{Type: native.FrameResult, Seq: id, Payload: out}
	if err != nil {
		body, _ := json.Marshal(CallError(err))
		f = &native.Frame{Type: native.FrameError, Seq: id, Payload: body}
	}
	if id == 0 {
		if err != nil {
			s.log.Warn("function: a call that wanted no answer failed", "method", method, "error", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wbuf = native.AppendFrame(s.wbuf[:0], f)
	_ = s.w.SetWriteDeadline(time.Now().Add(answerWrite))
	if _, werr := s.w.Write(s.wbuf); werr != nil {
		s.log.Warn("function: the answer to a call was not taken", "method", method, "error", werr)
	}
}

// CallError is err as a call's answer carries it: an *fnapi.Error as it is,
// an *invoke.Error (a function's own, from Invoke) with its type and stack,
// anything else as type "Error" with its text. The local API answers the
// same.
func CallError(err error) *fnapi.Error {
	var fe *fnapi.Error
	if errors.As(err, &fe) {
		return fe
	}
	var ie *invoke.Error
	if errors.As(err, &ie) {
		return &fnapi.Error{Type: ie.Type, Message: ie.Message, Stack: ie.Stack}
	}
	return &fnapi.Error{Type: "Error", Message: err.Error()}
}

// close ends the calls under way, waits for them and closes fd 6.
func (s *callServer) close() {
	s.gmu.Lock()
	s.closed = true
	s.gmu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.w.Close()
}
