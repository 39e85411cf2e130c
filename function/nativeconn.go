package function

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/function/native"
	"github.com/edgekit/edgekit/invoke"
)

// nativeConn is the host's end of the native framed protocol with one
// instance (package native documents the format). Invoke frames go to the
// instance's fd 3. Its replies come back on fd 4, read by whoever runs the
// invocation, on its own goroutine: no handoff between the write and the
// result. Log and metric frames come on fd 5, read by a goroutine of their
// own so that a function may send them at any time; so do its calls of the
// gateway's API, answered on fd 6 (callServer).
type nativeConn struct {
	fn, ver string
	w       *os.File // the instance's fd 3
	r       *os.File // its fd 4
	br      *bufio.Reader
	tel     *os.File // its fd 5
	calls   *callServer
	log     *slog.Logger
	metric  func(name string, v float64)

	ready   chan struct{} // closed by the first reply: the handler loaded
	initErr chan error    // or it failed to
	started chan struct{} // closed when the first reply was read, or could not be

	// wmu orders writes on fd 3: an invocation's, and a configuration
	// change's from the deploy.
	wmu sync.Mutex

	// Used by one invocation at a time.
	wbuf, rbuf []byte
	metaHead   []byte // {"function":…,"version":…,"requestId":"
	// counts is set (before ready is closed) when the function reports
	// its output with each reply; wrote is what the current reply said
	// (the invocation's goroutine only).
	counts bool
	wrote  bool
	// deadline is what setDeadline last set on fds 3 and 4; stale says
	// interrupt has set another since.
	deadline time.Time
	stale    atomic.Bool
}

// nativePipes are the four pipes of the protocol: the child gets
// child[0], child[1], child[2] and child[3] as fds 3, 4, 5 and 6.
type nativePipes struct {
	hostW, hostR, hostTel, hostAnswers *os.File
	child                              []*os.File
}

func newNativePipes() (*nativePipes, error) {
	var ps nativePipes
	var files []*os.File
	fail := func(err error) (*nativePipes, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	childIn, hostW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files = append(files, childIn, hostW)
	hostR, childOut, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files = append(files, hostR, childOut)
	hostTel, childTel, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	files = append(files, hostTel, childTel)
	childAnswers, hostAnswers, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	ps.hostW, ps.hostR, ps.hostTel, ps.hostAnswers = hostW, hostR, hostTel, hostAnswers
	ps.child = []*os.File{childIn, childOut, childTel, childAnswers}
	return &ps, nil
}

func newNativeConn(spec Spec, instance string, config func() json.RawMessage, ps *nativePipes, calls CallHandler, log *slog.Logger, metric func(string, float64)) *nativeConn {
	fn, ver := spec.Name, spec.Version
	head, _ := json.Marshal(struct {
		Function string `json:"function"`
		Version  string `json:"version"`
	}{fn, ver})
	head = append(head[:len(head)-1], `,"requestId":"`...)
	return &nativeConn{
		fn: fn, ver: ver, w: ps.hostW, r: ps.hostR, br: bufio.NewReaderSize(ps.hostR, 64<<10), tel: ps.hostTel,
		calls: newCallServer(spec, instance, config, calls, ps.hostAnswers, log),
		log:   log, metric: metric, ready: make(chan struct{}), initErr: make(chan error, 1), started: make(chan struct{}), metaHead: head,
	}
}

// start reads the instance's first reply, ready or init error, and serves
// its log and metric frames until it closes them.
func (c *nativeConn) start() {
	go func() {
		defer close(c.started)
		for {
			f, err := native.ReadFrame(c.br, &c.rbuf)
			if err != nil {
				return // the instance exited or was stopped: start sees that
			}
			switch f.Type {
			case native.FrameReady:
				c.counts = bytes.Equal(f.Payload, countsOutput)
				close(c.ready)
				return
			case native.FrameInitError:
				c.initErr <- c.functionError(f.Payload)
				return
			}
		}
	}()
	go c.telemetry()
}

func (c *nativeConn) telemetry() {
	c.readTelemetry(bufio.NewReaderSize(c.tel, 64<<10), nil)
}

// readTelemetry serves fd 5's frames until it closes. A call is run on
// this goroutine, right away, while a new one takes over the reading:
// the call's answer does not wait for a goroutine to be scheduled, which
// costs about as much again as the pipes' round trip. A call that wants
// no answer (id 0) is run here before the next frame is read: such calls
// are carried out in the order they were made, a flush after them finds
// them done, and a stream of them costs no goroutine each.
func (c *nativeConn) readTelemetry(r *bufio.Reader, buf []byte) {
	f := new(native.Frame) // this reader's, reused
	for {
		if err := native.ReadFrameTo(r, &buf, f); err != nil {
			return
		}
		switch f.Type {
		case native.FrameLog:
			level := map[byte]slog.Level{0: slog.LevelDebug, 1: slog.LevelInfo, 2: slog.LevelWarn, 3: slog.LevelError}[f.Level]
			c.log.Log(context.Background(), level, string(f.Payload), "stream", "native")
		case native.FrameMetric:
			c.metric(f.Name, f.Value)
		case native.FrameCall:
			if call, deadline := c.calls.prepare(f); call != nil {
				if f.Seq == 0 {
					c.calls.run(0, call, deadline)
					continue
				}
				id := f.Seq
				go c.readTelemetry(r, buf)
				c.calls.run(id, call, deadline)
				return
			}
		}
	}
}

func (c *nativeConn) functionError(body []byte) *invoke.Error {
	return functionError(c.fn, c.ver, body, "")
}

// send writes one invoke frame.
func (c *nativeConn) send(seq uint64, deadline time.Time, requestID string, source map[string]string, trace invoke.Trace, payload []byte) error {
	c.wrote = false
	meta := append(append(c.metaHead[:len(c.metaHead):len(c.metaHead)], requestID...), '"')
	if len(source) > 0 {
		src, _ := json.Marshal(source)
		meta = append(append(meta, `,"source":`...), src...)
	}
	if trace.Valid() { // checked by ParseTrace: no character needs escaping but in tracestate
		meta = append(append(append(meta, `,"traceparent":"`...), trace.Parent...), '"')
		if trace.State != "" {
			st, _ := json.Marshal(trace.State)
			meta = append(append(meta, `,"tracestate":`...), st...)
		}
	}
	meta = append(meta, '}')
	c.wbuf = native.AppendFrame(c.wbuf[:0], &native.Frame{Type: native.FrameInvoke, Seq: seq, Deadline: deadline.UnixMilli(), Meta: meta, Payload: payload})
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for b := c.wbuf; ; {
		n, err := c.w.Write(b)
		if err == nil {
			return nil
		}
		if now := time.Now(); errors.Is(err, os.ErrDeadlineExceeded) && !c.stale.Load() && now.Before(deadline) {
			// An earlier invocation's deadline (see setDeadline):
			// write the rest by this one's.
			b = b[n:]
			c.stale.Store(true)
			if err := c.setDeadline(deadline, now); err != nil {
				return fmt.Errorf("writing to the instance: %w", err)
			}
			continue
		}
		return fmt.Errorf("writing to the instance: %w", err)
	}
}

// configure sends the function its changed configuration. fd 3 holds at
// most one invocation besides, so the write does not wait on the
// function.
func (c *nativeConn) configure(cfg json.RawMessage) error {
	if len(cfg) == 0 {
		cfg = json.RawMessage("null")
	}
	b := native.AppendFrame(nil, &native.Frame{Type: native.FrameConfig, Payload: cfg})
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.w.Write(b)
	return err
}

// reply reads replies until the result or error of invocation seq. A
// transport failure is returned as is: os.ErrDeadlineExceeded at the read
// deadline or after interrupt, io.EOF when the instance closed its end.
func (c *nativeConn) reply(seq uint64) (invoke.Response, error) {
	for {
		f, err := native.ReadFrame(c.br, &c.rbuf)
		if err != nil {
			return invoke.Response{}, err
		}
		if f.Seq != seq {
			continue // not ours: a reply to nothing the host is waiting for
		}
		switch f.Type {
		case native.FrameWrote:
			c.wrote = true
		case native.FrameResult:
			return invoke.Response{Payload: bytes.Clone(f.Payload)}, nil
		case native.FrameError:
			return invoke.Response{}, c.functionError(f.Payload)
		}
	}
}

// countsOutput is what a ready frame says when the function tells, with
// each reply, whether it wrote output ('W').
var countsOutput = []byte("counts-output")

// quiet reports whether the invocation whose reply was just read wrote
// no output, as the function says; false when it does not count (send
// clears what the last reply said).
func (c *nativeConn) quiet() bool { return c.counts && !c.wrote }

// setDeadline bounds the next write of an invocation and reads of
// replies by t; now is the time. The pipes' deadline is moved only when
// it would come after t or has passed: in the steady state the previous
// invocation's, a moment before t, serves, and an invocation costs no
// timer update. It fires at most once per timeout during a call, which
// then sets t (see runNative).
func (c *nativeConn) setDeadline(t, now time.Time) error {
	if !c.stale.Swap(false) && earlierServes(c.deadline, t, now) {
		return nil
	}
	c.deadline = time.Time{}
	if err := c.w.SetWriteDeadline(t); err != nil {
		return err
	}
	if err := c.r.SetReadDeadline(t); err != nil {
		return err
	}
	c.deadline = t
	return nil
}

// earlierServes reports whether at, an earlier invocation's deadline still
// set (zero: none), may bound the current one's, due at t: it is still
// ahead and no later than t. Keeping it saves a timer update per call;
// when it fires during the call, the caller sets t and goes on.
func earlierServes(at, t, now time.Time) bool {
	return !at.IsZero() && !at.After(t) && now.Before(at)
}

// interrupt makes a blocked write of an invocation or read of replies
// return os.ErrDeadlineExceeded now.
func (c *nativeConn) interrupt() {
	c.stale.Store(true) // first: send tells an interruption by it
	past := time.Unix(1, 0)
	_ = c.w.SetWriteDeadline(past)
	_ = c.r.SetReadDeadline(past)
}

func (c *nativeConn) close() {
	c.w.Close()
	c.r.Close()
	c.tel.Close()
	c.calls.close()
}
