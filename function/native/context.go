package native

import (
	"context"
	"encoding/json"
	"sync"
	"time"
)

// invocationCtx is a handler's context. It ends at the invocation's
// deadline or when the handler returns, and carries the connection and the
// invocation's metadata. The timer behind Done is armed only when a
// handler asks for Done, and the metadata is decoded only when FromContext
// asks: an invocation that does neither costs no timer and no JSON
// decoding, which is most of what a warm invocation costs the function
// besides its handler.
type invocationCtx struct {
	conn     context.Context // Background carrying the connection
	deadline time.Time
	meta     []byte // the invoke frame's, copied

	once sync.Once
	inv  Invocation

	mu    sync.Mutex
	done  chan struct{}
	err   error
	timer *time.Timer
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func newInvocationCtx(conn context.Context, f *Frame) *invocationCtx {
	return &invocationCtx{conn: conn, deadline: time.UnixMilli(f.Deadline), meta: append([]byte(nil), f.Meta...)}
}

func (c *invocationCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *invocationCtx) Value(key any) any {
	if key == (invocationKey{}) {
		return c.invocation()
	}
	return c.conn.Value(key)
}

// invocation decodes the metadata the first time it is asked for.
func (c *invocationCtx) invocation() Invocation {
	c.once.Do(func() { _ = json.Unmarshal(c.meta, &c.inv) })
	return c.inv
}

func (c *invocationCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errLocked()
}

func (c *invocationCtx) errLocked() error {
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.err = context.DeadlineExceeded
	}
	return c.err
}

func (c *invocationCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.done != nil:
	case c.errLocked() != nil:
		c.done = closedChan
	default:
		c.done = make(chan struct{})
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
	return c.done
}

// cancel ends the context with err, unless it has ended already.
func (c *invocationCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil && c.done != nil {
		return
	}
	if c.err == nil {
		c.err = err
	}
	switch c.done {
	case nil:
		c.done = closedChan
	case closedChan:
	default:
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}
