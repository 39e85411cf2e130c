// Package native is for authors of edgekit-native Go functions: Start runs
// a handler behind the host's framed protocol over pipes, which costs a
// fraction of the Lambda runtime API's two HTTP exchanges per invocation.
// Deploy such a function with Runtime "executable" and API "native".
//
//	func main() {
//		native.Start(func(ctx context.Context, event []byte) ([]byte, error) {
//			return event, nil
//		})
//	}
//
// The handler's context ends at the invocation's deadline and carries its
// metadata (FromContext). Metric sends a named value to the host, Log a
// record at a level. Anything written to stdout or stderr becomes a log
// record on the host too.
//
// Through the same context the function calls the gateway: Publish a
// message, Invoke a function, read and write devices (GetProperties,
// SetProperties, CallService, ListDevices), read its Config. Each call is
// bounded by the context's deadline (and the function's timeout); the
// gateway allows what the function's spec.Permissions list and refuses the
// rest with an *fnapi.Error naming why (errors.Is matches the fnapi
// sentinels). A goroutine that outlives the invocation calls with
// context.WithoutCancel(ctx), which keeps the connection.
package native

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/edgekit/edgekit/function/fnapi"
)

// Invocation is what a handler learns about its call.
type Invocation struct {
	RequestID string            `json:"requestId"`
	Function  string            `json:"function"`
	Version   string            `json:"version"`
	Source    map[string]string `json:"source,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the
	// invocation's cause, when it had one.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

type invocationKey struct{}

// FromContext returns the invocation a handler's ctx belongs to.
func FromContext(ctx context.Context) (Invocation, bool) {
	inv, ok := ctx.Value(invocationKey{}).(Invocation)
	return inv, ok
}

// Handler handles one invocation.
type Handler func(ctx context.Context, event []byte) ([]byte, error)

// pipe is one of the function's outgoing pipes to the host. send writes
// a frame before it returns; queue leaves it to a writer goroutine, which
// writes every frame queued while it wrote the last batch in one write(2):
// a stream of frames costs a system call and a wake-up of the host per
// batch, not per frame. Frames reach the pipe in the order they were sent
// or queued.
type pipe struct {
	out *os.File

	wmu  sync.Mutex // held by whoever writes: frames go out in order
	wbuf []byte     // the batch being written

	mu      sync.Mutex
	queued  []byte     // frames queued and not yet taken by a writer
	room    *sync.Cond // on mu: queued has shrunk
	kick    chan struct{}
	started bool // the writer goroutine runs
	idle    bool // it found nothing queued and waits for a kick
}

// maxQueued bounds the bytes of frames queued: queue waits above it.
const maxQueued = 256 << 10

func newPipe(out *os.File) *pipe {
	p := &pipe{out: out, kick: make(chan struct{}, 1)}
	p.room = sync.NewCond(&p.mu)
	return p
}

// send writes f, after every frame queued before it.
func (p *pipe) send(f *Frame) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.mu.Lock()
	p.wbuf = AppendFrame(p.take(p.wbuf[:0]), f)
	p.mu.Unlock()
	p.write()
}

// queue hands f to the writer goroutine, waiting while maxQueued bytes
// are queued.
func (p *pipe) queue(f *Frame) {
	p.mu.Lock()
	for len(p.queued) >= maxQueued {
		p.room.Wait()
	}
	p.queued = AppendFrame(p.queued, f)
	if !p.started {
		p.started = true
		go p.writer()
	}
	kick := p.idle
	p.idle = false
	p.mu.Unlock()
	if kick {
		p.kick <- struct{}{} // room for one: only an idle writer is kicked
	}
}

// take appends the queued frames to b and empties the queue (p.mu held).
func (p *pipe) take(b []byte) []byte {
	if len(p.queued) == 0 {
		return b
	}
	if len(b) == 0 {
		b, p.queued = p.queued, b // swap, no copy
	} else {
		b = append(b, p.queued...)
		p.queued = p.queued[:0]
	}
	p.room.Broadcast()
	return b
}

// writer writes what is queued until it finds nothing, then waits to be
// kicked; it lives as long as the process.
func (p *pipe) writer() {
	for {
		p.wmu.Lock()
		p.mu.Lock()
		p.wbuf = p.take(p.wbuf[:0])
		if len(p.wbuf) == 0 {
			p.idle = true
			p.mu.Unlock()
			p.wmu.Unlock()
			<-p.kick
			continue
		}
		p.mu.Unlock()
		p.write()
		p.wmu.Unlock()
	}
}

// write writes p.wbuf (p.wmu held); a host that closed the pipe has
// stopped the function.
func (p *pipe) write() {
	if _, err := p.out.Write(p.wbuf); err != nil {
		fmt.Fprintln(os.Stderr, "native: host pipe closed:", err)
		os.Exit(1)
	}
}

// conn is the function's end of the protocol: replies on fd 4; log,
// metric and call frames on fd 5; answers to calls on fd 6.
type conn struct {
	ctx                context.Context // Background carrying the conn
	replies, telemetry *pipe
	calls              *calls
	driver             *driving // with Options.Driver
}

type connKey struct{}

// Metric sends a named value (a reading, a count) to the host; ctx is the
// handler's. The host shows the latest value per name in the function's
// Status.
func Metric(ctx context.Context, name string, value float64) {
	if c, ok := ctx.Value(connKey{}).(*conn); ok {
		c.telemetry.send(&Frame{Type: FrameMetric, Name: name, Value: value})
	}
}

// Log sends a log record at level to the host, which keeps it in the
// function's log (records below Info are passed to the host's logger
// only). ctx is the handler's, or one derived from it.
func Log(ctx context.Context, level slog.Level, msg string) {
	c, ok := ctx.Value(connKey{}).(*conn)
	if !ok {
		fmt.Fprintln(os.Stderr, msg)
		return
	}
	var l byte
	switch {
	case level >= slog.LevelError:
		l = 3
	case level >= slog.LevelWarn:
		l = 2
	case level >= slog.LevelInfo:
		l = 1
	}
	c.telemetry.send(&Frame{Type: FrameLog, Level: l, Payload: []byte(msg)})
}

// Options are what StartWith takes beside the handler.
type Options struct {
	// OnConfig, when set, is called with the function's configuration
	// each time a deployment changes it while the instance runs (the
	// instance is not restarted for it), between invocations, in order.
	// ctx carries the connection for the gateway API, with no deadline.
	OnConfig func(ctx context.Context, config json.RawMessage)
	// Driver, when set, makes the function a device driver: StartWith
	// says hello to the gateway before it serves anything, and the
	// gateway's requests for the function's devices go to Driver.
	Driver Driver
}

// Start serves invocations until the host closes the pipe; it does not
// return. Outside a host (no file descriptors 3, 4 and 5) it exits with an
// error.
func Start(h Handler) { StartWith(h, nil) }

// StartWith is Start with options.
func StartWith(h Handler, opts *Options) {
	var o Options
	if opts != nil {
		o = *opts
	}
	in, out, tel := os.NewFile(3, "edgekit-in"), os.NewFile(4, "edgekit-out"), os.NewFile(5, "edgekit-telemetry")
	if in == nil || out == nil || tel == nil {
		fmt.Fprintln(os.Stderr, "native: not started by an edgekit host (no file descriptors 3, 4 and 5)")
		os.Exit(2)
	}
	c := &conn{replies: newPipe(out), telemetry: newPipe(tel)}
	c.ctx = context.WithValue(context.Background(), connKey{}, c)
	c.calls = newCalls(answerPipe(), c.telemetry)
	if o.Driver != nil {
		c.driver = &driving{d: o.Driver, things: map[string]fnapi.Thing{}, keys: map[string]string{}}
		if err := hello(c.ctx); err != nil {
			body, _ := json.Marshal(map[string]any{"errorType": "Driver.HelloRefused", "errorMessage": err.Error()})
			c.replies.send(&Frame{Type: FrameInitError, Payload: body})
			os.Exit(1)
		}
	}
	c.replies.send(&Frame{Type: FrameReady})
	r := bufio.NewReaderSize(in, 64<<10)
	var buf []byte
	for {
		f, err := ReadFrame(r, &buf)
		if err != nil {
			os.Exit(0) // the host closed the pipe: stop
		}
		switch f.Type {
		case FrameInvoke:
			serve(c, h, f)
		case FrameConfig:
			cfg := string(f.Payload)
			if cfg == "null" {
				cfg = ""
			}
			_ = os.Setenv("EDGEKIT_FUNCTION_CONFIG", cfg) // what later invocations read
			if o.OnConfig != nil {
				o.OnConfig(c.ctx, bytes.Clone(f.Payload))
			}
		}
	}
}

func serve(c *conn, h Handler, f *Frame) {
	ctx := newInvocationCtx(c.ctx, f)
	defer ctx.cancel(context.Canceled)
	if c.driver != nil && ctx.invocation().Source["type"] == fnapi.DriverSource {
		h = c.driver.serveOp
	}
	out, err := call(ctx, h, f.Payload)
	if err != nil {
		typ := fmt.Sprintf("%T", err)
		var fe *fnapi.Error
		switch {
		case errors.As(err, &fe):
			typ = fe.Type
		case isPanic(err):
			typ = "Panic"
		}
		body, _ := json.Marshal(map[string]any{"errorType": typ, "errorMessage": err.Error()})
		c.replies.send(&Frame{Type: FrameError, Seq: f.Seq, Payload: body})
		return
	}
	c.replies.send(&Frame{Type: FrameResult, Seq: f.Seq, Payload: out})
}

type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprint(p.value) }

func isPanic(err error) bool {
	_, ok := err.(*panicError)
	return ok
}

func call(ctx context.Context, h Handler, event []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &panicError{value: r, stack: string(debug.Stack())}
			fmt.Fprintf(os.Stderr, "panic: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, event)
}

// answerPipe is fd 6, in non-blocking mode so that its reader waits in
// the runtime's poller, not in a read(2): a goroutine blocked in a system
// call keeps its P until sysmon takes it back, and the caller the reader
// has just woken waits on that P for tens of microseconds. Nil when the
// host gave no fd 6.
func answerPipe() *os.File {
	if err := syscall.SetNonblock(6, true); err != nil {
		return nil
	}
	return os.NewFile(6, "edgekit-answers")
}
