package function

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// c is the handler's until it returns: the host reuses it for the
// instance's next call that wants no answer (its Payload is the message's
// own, and may be kept).
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
// time, and one that wants no answer on the reader, before it reads on;
// the instance's stop ends them and close waits for them.
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

	// The reader's, for the calls that want no answer, which it runs one
	// after another: consecutive ones mostly share the invocation's
	// deadline, and then a context.
	inline struct {
		call          Call
		args          []byte
		frameDeadline int64 // the last call's, as its frame said (Unix ms)
		deadline      time.Time
		ctx           context.Context
		cancel        context.CancelFunc
	}

	// The refusals of calls that wanted no answer, since the last flush:
	// how many, and the first.
	rmu     sync.Mutex
	refused int
	first   *fnapi.Error
}

func newCallServer(spec Spec, instance string, config func() json.RawMessage, handler CallHandler, w *os.File, log *slog.Logger) *callServer {
	ctx, cancel := context.WithCancel(context.Background())
	if config == nil {
		config = func() json.RawMessage { return spec.Config }
	}
	return &callServer{spec: spec, instance: instance, config: config, handler: handler, w: w, log: log, slots: make(chan struct{}, fnapi.MaxCallsInFlight), ctx: ctx, cancel: cancel}
}

// prepare checks the call f, whose slices are the reader's and are
// copied, and returns it with its deadline for run, which the caller
// calls on a goroutine it owns, tracked by close. What is refused before
// the handler runs is answered at once, and prepare returns nil.
func (s *callServer) prepare(f *native.Frame) (*Call, time.Time) {
	id, method := f.Seq, f.Name
	var now, deadline time.Time
	if in := &s.inline; id == 0 && f.Deadline != 0 && f.Deadline == in.frameDeadline && in.ctx != nil && in.ctx.Err() == nil {
		// One more of a stream from one invocation: its context is
		// made and has not ended (no clock read).
		deadline = in.deadline
	} else {
		now = time.Now()
		deadline = now.Add(time.Duration(s.spec.Timeout))
		if f.Deadline != 0 {
			if d := time.UnixMilli(f.Deadline); d.Before(deadline) {
				deadline = d
			}
		}
	}
	switch {
	case len(f.Meta) > fnapi.MaxArgs:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments of %d bytes, above the limit of %d", method, len(f.Meta), fnapi.MaxArgs))
		return nil, deadline
	case len(f.Payload) > fnapi.MaxPayload:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: payload of %d bytes, above the limit of %d", method, len(f.Payload), fnapi.MaxPayload))
		return nil, deadline
	case !now.IsZero() && !now.Before(deadline):
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline had passed when it arrived", method))
		return nil, deadline
	case method == fnapi.Flush:
		// Calls that want no answer run on the reader before it reads
		// the next frame: every one made before this has been carried out.
		s.answer(id, method, nil, s.takeRefusals())
		return nil, deadline
	case s.handler == nil:
		s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: this host serves no gateway API", method))
		return nil, deadline
	}
	if id != 0 { // calls that want no answer run one at a time on the reader
		select {
		case s.slots <- struct{}{}:
		default:
			s.answer(id, method, nil, fnapi.Errorf(fnapi.ErrTooManyCalls, "%s: %d calls of this instance are under way", method, fnapi.MaxCallsInFlight))
			return nil, deadline
		}
	}
	s.gmu.Lock()
	if s.closed {
		s.gmu.Unlock()
		if id != 0 {
			<-s.slots
		}
		return nil, deadline // the instance is stopping: nobody reads the answer
	}
	s.wg.Add(1)
	s.gmu.Unlock()
	var c *Call
	if id == 0 {
		c = &s.inline.call // the reader's: the last such call has returned
		s.inlineContext(f.Deadline, deadline)
	} else {
		c = new(Call)
	}
	*c = Call{Function: s.spec, Instance: s.instance, InstanceDone: s.ctx.Done(), Method: method, Args: s.args(id, f.Meta), Payload: bytes.Clone(f.Payload)}
	c.Function.Config = s.config()
	return c, deadline
}

// run runs the call id that prepare returned, and answers it. A call that
// wants no answer (id 0) is the reader's to run, before it reads on, in
// the context prepare made it.
func (s *callServer) run(id uint64, c *Call, deadline time.Time) {
	defer s.wg.Done()
	var ctx context.Context
	if id == 0 {
		ctx = s.inline.ctx
	} else {
		defer func() { <-s.slots }()
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(s.ctx, deadline)
		defer cancel()
	}
	out, err := s.handler(ctx, c)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline passed: %v", c.Method, err)
	}
	s.answer(id, c.Method, out, err)
}

// args is a copy of a call's arguments. Calls that want no answer share
// the last one's copy when they repeat its arguments (a stream of
// publishes does); the reader's only for those.
func (s *callServer) args(id uint64, meta []byte) []byte {
	if id != 0 {
		return bytes.Clone(meta)
	}
	if !bytes.Equal(s.inline.args, meta) {
		s.inline.args = bytes.Clone(meta)
	}
	return s.inline.args
}

// inlineContext makes s.inline.ctx the context of a call that wants no
// answer, ending at deadline, its frame having said frameDeadline: the
// last one's when that ends then too. The reader's only.
func (s *callServer) inlineContext(frameDeadline int64, deadline time.Time) {
	in := &s.inline
	if in.ctx == nil || !in.deadline.Equal(deadline) || in.ctx.Err() != nil {
		if in.cancel != nil {
			in.cancel()
		}
		in.ctx, in.cancel = context.WithDeadline(s.ctx, deadline)
		in.deadline = deadline
	}
	in.frameDeadline = frameDeadline
}

// serve starts the call f on a goroutine of its own, or runs it when it
// wants no answer, as the reader does.
func (s *callServer) serve(f *native.Frame) {
	if c, deadline := s.prepare(f); c != nil {
		if f.Seq == 0 {
			s.run(0, c, deadline)
			return
		}
		go s.run(f.Seq, c, deadline)
	}
}

// answer writes a call's result or error on fd 6; a call with id 0 wants
// none, so its refusal is kept for the next flush.
func (s *callServer) answer(id uint64, method string, out []byte, err error) {
	if id == 0 {
		if err != nil {
			s.refuse(method, err)
		}
		return
	}
	f := &native.Frame{Type: native.FrameResult, Seq: id, Payload: out}
	if err != nil {
		body, _ := json.Marshal(CallError(err))
		f = &native.Frame{Type: native.FrameError, Seq: id, Payload: body}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wbuf = native.AppendFrame(s.wbuf[:0], f)
	_ = s.w.SetWriteDeadline(time.Now().Add(answerWrite))
	if _, werr := s.w.Write(s.wbuf); werr != nil {
		s.log.Warn("function: the answer to a call was not taken", "method", method, "error", werr)
	}
}

// refuse keeps the refusal of a call that wanted no answer for the next
// flush; the first since the last flush goes to the function's log too
// (a function publishing without waiting may be refused many times a
// millisecond).
func (s *callServer) refuse(method string, err error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.refused++
	if s.first == nil {
		s.first = CallError(err)
		s.log.Warn("function: a call that wanted no answer was refused (more are counted until the function flushes)", "method", method, "error", err)
	}
}

// takeRefusals returns the refusals since the last flush as one error,
// nil when there were none, and forgets them.
func (s *callServer) takeRefusals() error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	n, first := s.refused, s.first
	s.refused, s.first = 0, nil
	if n == 0 {
		return nil
	}
	return &fnapi.Error{Type: first.Type, Message: fmt.Sprintf("%d of the calls made without waiting for an answer since the last flush were refused; the first: %s", n, first.Message)}
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
