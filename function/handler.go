package function

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/edgekit/edgekit/invoke"
)

// Handler is an in-process Go function. Register it with Host.Register and
// deploy a Spec with Runtime "go" whose Handler names it.
//
// ctx ends at the invocation's deadline; FromContext and Logger give the
// invocation's metadata and a logger. A panic is recovered into an
// *invoke.Error of type "Panic" (the stack goes to the log). Handlers must be
// safe for concurrent use when MaxInstances > 1.
type Handler interface {
	Handle(ctx context.Context, req invoke.Request) (invoke.Response, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req invoke.Request) (invoke.Response, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req invoke.Request) (invoke.Response, error) {
	return f(ctx, req)
}

// Invocation is what a handler can learn about the call it serves.
type Invocation struct {
	Function string
	Version  string
	// Instance names the instance running the call.
	Instance string
	// Deadline is when the invocation times out.
	Deadline time.Time
	// Config is the function's configuration document (Spec.Config).
	Config json.RawMessage
	// Source says what caused the invocation (invoke.Request.Source).
	Source map[string]string
	// Trace is the W3C trace context of its cause (invoke.Request.Trace).
	Trace invoke.Trace

	ids *requestIDs
	seq uint64
	log *slog.Logger
}

// RequestID identifies the invocation in logs and results: a UUID that
// cannot be predicted from other invocations' ids.
func (inv *Invocation) RequestID() string { return inv.ids.id(inv.seq) }

type invocationKey struct{}

// FromContext returns the invocation a handler's ctx belongs to.
func FromContext(ctx context.Context) (*Invocation, bool) {
	inv, ok := ctx.Value(invocationKey{}).(*Invocation)
	return inv, ok
}

// Logger returns a logger carrying the invocation's function, version,
// instance and request_id, or the default logger outside an invocation.
func Logger(ctx context.Context) *slog.Logger {
	inv, ok := FromContext(ctx)
	if !ok {
		return slog.Default()
	}
	return inv.log.With("function", inv.Function, "version", inv.Version, "instance", inv.Instance, "request_id", inv.RequestID())
}

// invCtx is an invocation's context. It carries the Invocation and ends at
// the deadline, when the caller's context ends, or when the invocation is
// over. The timer and the watch on the parent are made only when the
// handler asks for Done, so a handler that never waits on ctx costs one
// allocation.
type invCtx struct {
	parent context.Context
	inv    Invocation

	mu        sync.Mutex
	done      chan struct{}
	err       error
	timer     *time.Timer
	stopWatch func() bool
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *invCtx) Deadline() (time.Time, bool) { return c.inv.Deadline, true }

func (c *invCtx) Value(key any) any {
	if key == (invocationKey{}) {
		return &c.inv
	}
	return c.parent.Value(key)
}

func (c *invCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *invCtx) errLocked() error {
	if c.err != nil {
		return c.err
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.inv.Deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *invCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	if err := c.errLocked(); err != nil {
		c.err, c.done = err, closedChan
		return c.done
	}
	c.done = make(chan struct{})
	c.timer = time.AfterFunc(time.Until(c.inv.Deadline), func() { c.cancel(context.DeadlineExceeded) })
	c.stopWatch = context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
	return c.done
}

func (c *invCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done == nil {
		c.done = closedChan
	} else if c.done != closedChan {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopWatch != nil {
		c.stopWatch()
	}
}

// end cancels the context when the invocation is over, in case the handler
// kept it.
func (c *invCtx) end() { c.cancel(context.Canceled) }
