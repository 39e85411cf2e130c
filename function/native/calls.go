package native

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/edgekit/edgekit/function/fnapi"
)

// calls is the function's side of the gateway API: calls go out on the
// telemetry pipe (fd 5), answers come back on fd 6. There is no reader
// goroutine: a caller waiting for its answer reads fd 6 itself when no
// other caller is reading, hands the answers it reads for others to them,
// and passes the reading on when its own has come. A lone caller is woken
// by its answer directly, not through a second goroutine.
type calls struct {
	in  *os.File
	out *pipe

	mu      sync.Mutex
	next    uint64
	pending map[uint64]*slot
	reading bool  // a caller is reading fd 6
	broken  error // set when fd 6 can no longer be read

	// The reader's, while reading.
	r   *bufio.Reader
	buf []byte

	// The last publish arguments queued without waiting, and their JSON:
	// a stream repeats them with each message.
	pmu      sync.Mutex
	lastArgs fnapi.PublishArgs
	lastMeta []byte
}

// slot is one call waiting for its answer.
type slot struct {
	ans  *Frame
	wake chan struct{} // its answer came, or it may read
}

func newCalls(in *os.File, out *pipe) *calls {
	c := &calls{in: in, out: out, pending: map[uint64]*slot{}}
	if in != nil {
		c.r = bufio.NewReaderSize(in, 16<<10)
	}
	return c
}

// nudge wakes one waiting caller to read (c.mu held), unless one reads.
func (c *calls) nudge() {
	if c.reading {
		return
	}
	for _, s := range c.pending {
		if s.ans == nil {
			select {
			case s.wake <- struct{}{}:
			default:
			}
			return
		}
	}
}

// read reads one answer and gives it to its caller; it returns false when
// the read ended at ctx's deadline. c.reading is set by the caller.
func (c *calls) read(ctx context.Context) bool {
	deadline, _ := ctx.Deadline()
	_ = c.in.SetReadDeadline(deadline)
	f, err := ReadFrame(c.r, &c.buf)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading = false
	switch {
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return false
	case err != nil:
		c.broken = fmt.Errorf("native: the gateway's answers: %w", err)
		for _, s := range c.pending {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	default:
		if s := c.pending[f.Seq]; s != nil && s.ans == nil {
			ans := *f
			ans.Payload = append([]byte(nil), f.Payload...)
			s.ans = &ans
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
	return true
}

// call sends a call and waits for its answer or ctx's end.
func (c *calls) call(ctx context.Context, method string, args any, payload []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fnapi.Errorf(fnapi.ErrTimeout, "%s: %v", method, err)
	}
	meta, err := json.Marshal(args)
	if err != nil {
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments: %v", method, err)
	}
	if c.in == nil {
		return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: the host gave no answer pipe (fd 6)", method)
	}
	s := &slot{wake: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.broken != nil {
		c.mu.Unlock()
		return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: %v", method, c.broken)
	}
	c.next++
	id := c.next
	c.pending[id] = s
	c.mu.Unlock()
	c.out.send(&Frame{Type: FrameCall, Seq: id, Deadline: deadlineMillis(ctx), Name: method, Meta: meta, Payload: payload})
	for {
		c.mu.Lock()
		if s.ans != nil || c.broken != nil {
			delete(c.pending, id)
			c.nudge() // the reading passes to a caller still waiting
			broken := c.broken
			c.mu.Unlock()
			if s.ans == nil {
				return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: %v", method, broken)
			}
			return answer(method, s.ans)
		}
		if !c.reading {
			c.reading = true
			c.mu.Unlock()
			if !c.read(ctx) {
				break
			}
			continue
		}
		c.mu.Unlock()
		select {
		case <-s.wake:
			continue
		case <-ctx.Done():
		}
		break
	}
	c.mu.Lock()
	delete(c.pending, id)
	c.nudge()
	c.mu.Unlock()
	return nil, fnapi.Errorf(fnapi.ErrTimeout, "%s: %v", method, ctx.Err())
}

// publishNoWait queues a publish that wants no answer (id 0): it returns
// once the frame is queued for the host, which carries such calls out in
// order and keeps their refusals for the next flush.
func (c *calls) publishNoWait(ctx context.Context, args *fnapi.PublishArgs, payload []byte) error {
	const method = fnapi.Publish
	if err := ctx.Err(); err != nil {
		return fnapi.Errorf(fnapi.ErrTimeout, "%s: %v", method, err)
	}
	meta, err := c.publishMeta(args)
	if err != nil {
		return fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments: %v", method, err)
	}
	c.out.queue(&Frame{Type: FrameCall, Deadline: deadlineMillis(ctx), Name: method, Meta: meta, Payload: payload})
	return nil
}

// publishMeta is json.Marshal(a), the last arguments' encoding kept (a
// stream repeats them). The frame's copy is made when it is queued.
func (c *calls) publishMeta(a *fnapi.PublishArgs) ([]byte, error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	last := &c.lastArgs
	if c.lastMeta != nil && a.Topic == last.Topic && a.QoS == last.QoS && a.Retain == last.Retain &&
		a.ContentType == last.ContentType && slices.Equal(a.UserProperties, last.UserProperties) {
		return c.lastMeta, nil
	}
	// What is kept and encoded is a copy, down to the strings: the
	// caller's user properties may change, and need not escape to the
	// heap with each message (escape analysis follows a field into
	// everything its struct points to).
	keep := fnapi.PublishArgs{Topic: strings.Clone(a.Topic), QoS: a.QoS, Retain: a.Retain, ContentType: strings.Clone(a.ContentType)}
	for _, p := range a.UserProperties {
		keep.UserProperties = append(keep.UserProperties, [2]string{strings.Clone(p[0]), strings.Clone(p[1])})
	}
	meta, err := json.Marshal(keep)
	if err != nil {
		return nil, err
	}
	c.lastArgs, c.lastMeta = keep, meta
	return meta, nil
}

// deadlineMillis is ctx's deadline as a call frame carries it: Unix
// milliseconds, 0 for none.
func deadlineMillis(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return d.UnixMilli()
	}
	return 0
}

// answer is a call's result or error frame as call returns it.
func answer(method string, f *Frame) ([]byte, error) {
	if f.Type != FrameError {
		return f.Payload, nil
	}
	e := &fnapi.Error{}
	if err := json.Unmarshal(f.Payload, e); err != nil || e.Type == "" {
		return nil, &fnapi.Error{Type: "Error", Message: fmt.Sprintf("%s: %s", method, f.Payload)}
	}
	return nil, e
}

// callOf is the connection ctx carries.
func callOf(ctx context.Context, method string) (*calls, error) {
	if c, ok := ctx.Value(connKey{}).(*conn); ok && c.calls != nil {
		return c.calls, nil
	}
	return nil, fnapi.Errorf(fnapi.ErrUnavailable, "%s: the context is not a native function's (pass the handler's ctx)", method)
}

// do makes a call and decodes its JSON answer into out (when not nil).
func do(ctx context.Context, method string, args any, payload []byte, out any) ([]byte, error) {
	c, err := callOf(ctx, method)
	if err != nil {
		return nil, err
	}
	body, err := c.call(ctx, method, args, payload)
	if err != nil || out == nil {
		return body, err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, fmt.Errorf("native: %s: the gateway's answer: %w", method, err)
	}
	return body, nil
}

// PublishOptions are a message's MQTT v5 fields beside its topic and
// payload, and whether to wait for the gateway's answer; nil means QoS 0,
// not retained, waiting.
type PublishOptions struct {
	QoS            byte
	Retain         bool
	ContentType    string
	UserProperties [][2]string
	// NoWait returns once the message is queued for the gateway instead
	// of once the bus has taken it. Messages sent this way reach the bus
	// in the order they were published, written to the gateway many to a
	// system call: a stream of them costs a fraction of a publish that
	// waits. A refusal is not lost: Flush returns it (and the gateway
	// logs the first). The message is queued even when the function
	// returns before the gateway has read it.
	NoWait bool
}

// Publish sends payload on topic through the gateway's bus, and returns
// once the bus has taken it (with opts.NoWait, once it is queued). The
// function may publish under outputs/{its name}/ and on what its
// permissions list.
func Publish(ctx context.Context, topic string, payload []byte, opts *PublishOptions) error {
	if opts != nil && opts.NoWait {
		c, err := callOf(ctx, fnapi.Publish)
		if err != nil {
			return err
		}
		return c.publishNoWait(ctx, &fnapi.PublishArgs{Topic: topic, QoS: opts.QoS, Retain: opts.Retain, ContentType: opts.ContentType, UserProperties: opts.UserProperties}, payload)
	}
	args := fnapi.PublishArgs{Topic: topic}
	if opts != nil {
		// Copies: what do keeps would otherwise make everything opts
		// points to escape to the heap, on the no-wait path too.
		args.QoS, args.Retain, args.ContentType, args.UserProperties = opts.QoS, opts.Retain, strings.Clone(opts.ContentType), slices.Clone(opts.UserProperties)
	}
	_, err := do(ctx, fnapi.Publish, args, payload, nil)
	return err
}

// Flush waits until the gateway has carried out every publish made with
// NoWait before it, and returns what it refused of them since the last
// Flush: nil when nothing, or an *fnapi.Error with the count and the
// first refusal's type (errors.Is matches the fnapi sentinels).
func Flush(ctx context.Context) error {
	_, err := do(ctx, fnapi.Flush, struct{}{}, nil, nil)
	return err
}

// Invoke calls a function with event and returns its result. A failed
// invocation's error is an *fnapi.Error with the function's own type,
// message and stack.
func Invoke(ctx context.Context, function string, event []byte) ([]byte, error) {
	return do(ctx, fnapi.Invoke, fnapi.InvokeArgs{Function: function}, event, nil)
}

// InvokeAsync queues an invocation of function and returns once it is
// queued.
func InvokeAsync(ctx context.Context, function string, event []byte) error {
	_, err := do(ctx, fnapi.Invoke, fnapi.InvokeArgs{Function: function, Async: true}, event, nil)
	return err
}

// GetProperties reads a device's properties (none named: all of them).
func GetProperties(ctx context.Context, device string, ids ...string) (*fnapi.DeviceGetAnswer, error) {
	var a fnapi.DeviceGetAnswer
	if _, err := do(ctx, fnapi.DeviceGet, fnapi.DeviceGetArgs{Device: device, Properties: ids}, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// SetProperties writes a device's properties, each value checked against
// its thing model first; it returns, per property, nil when written or
// why not.
func SetProperties(ctx context.Context, device string, values map[string]any) (map[string]error, error) {
	props, err := encodeValues("property", values)
	if err != nil {
		return nil, err
	}
	var a fnapi.DeviceSetAnswer
	if _, err := do(ctx, fnapi.DeviceSet, fnapi.DeviceSetArgs{Device: device, Properties: props}, nil, &a); err != nil {
		return nil, err
	}
	res := make(map[string]error, len(a.Results))
	for id, why := range a.Results {
		res[id] = nil
		if why != nil {
			res[id] = fmt.Errorf("property %s: %s", id, *why)
		}
	}
	return res, nil
}

// CallService calls a device's service with its input parameters and
// returns its output.
func CallService(ctx context.Context, device, service string, input map[string]any) (map[string]json.RawMessage, error) {
	in, err := encodeValues("input", input)
	if err != nil {
		return nil, err
	}
	var a fnapi.DeviceCallAnswer
	if _, err := do(ctx, fnapi.DeviceCall, fnapi.DeviceCallArgs{Device: device, Service: service, Input: in}, nil, &a); err != nil {
		return nil, err
	}
	return a.Output, nil
}

// ListDevices lists the devices the function may reach, with their state
// and labels; with labels, those that carry every one of them.
func ListDevices(ctx context.Context, labels map[string]string) ([]fnapi.DeviceInfo, error) {
	var a fnapi.DeviceListAnswer
	if _, err := do(ctx, fnapi.DeviceList, fnapi.DeviceListArgs{Labels: labels}, nil, &a); err != nil {
		return nil, err
	}
	return a.Devices, nil
}

// Config returns the function's configuration document as the gateway
// holds it now ("null" when it has none).
func Config(ctx context.Context) (json.RawMessage, error) {
	return do(ctx, fnapi.ConfigGet, struct{}{}, nil, nil)
}

// encodeValues encodes each value as JSON; what cannot be is refused,
// named as what (a property, an input) and its id.
func encodeValues(what string, values map[string]any) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(values))
	for id, v := range values {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%s %s: %v", what, id, err)
		}
		out[id] = b
	}
	return out, nil
}
