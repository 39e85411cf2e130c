// Package message is the message trigger: a function runs for each message
// that matches a topic filter on the bus (membus, or an MQTT broker through
// mqttbus), including shared subscriptions ("$share/group/filter").
//
// Params (trigger.Config.Params):
//
//	{
//	  "filter": "devices/+/telemetry",  // required
//	  "qos": 1,                          // the subscription's QoS; default 1
//	  "concurrency": 1,                  // invocations at once; default 1
//	  "retries": 3,                      // after a failed invocation, QoS ≥ 1; default 3
//	  "backoff": "100ms",                // first retry delay, doubling up to 30×; default 100ms
//	  "dead_letter": "edgekit/deadletter/<trigger>", // where a message goes after its retries
//	  "output": "results/temperature",   // optional: the function's result is published here
//	  "max_payload": 1048576             // bigger messages are dead-lettered unread; default 1 MiB
//	}
//
// Order: messages of one topic are handled one at a time, in the order the
// bus delivers them, also with concurrency above 1 (topics are spread over
// that many lanes).
//
// Delivery is at least once for QoS 1 and 2: a message counts as handled
// only when the function returns successfully; a failed invocation is
// retried with backoff, and after the last retry the message is published
// to the dead-letter topic, its payload and content type unchanged, with
// user properties edgekit-error, edgekit-error-type, edgekit-topic and
// edgekit-attempts. A trigger stopped while a message waits for a retry
// dead-letters it at once, so no message is dropped silently. A QoS 0
// message is tried once; a failure is logged. On an MQTT bus (mqttbus) the
// broker gets the message's acknowledgement only when the handler has
// returned, so a gateway that crashes mid-way gets it again.
//
// The invocation's payload is the message's payload; its Source has type
// "message", trigger, topic, qos, content_type, device (the user property
// "edgekit-device", else the second level of a "devices/{device}/..."
// topic) and each user property as "property.<key>".
package message

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
)

// Type is the trigger type this package makes.
const Type = "message"

// Params are a message trigger's parameters (see the package doc).
type Params struct {
	Filter      string `json:"filter"`
	QoS         *int   `json:"qos,omitempty"`
	Concurrency int    `json:"concurrency,omitempty"`
	Retries     *int   `json:"retries,omitempty"`
	Backoff     string `json:"backoff,omitempty"`
	DeadLetter  string `json:"dead_letter,omitempty"`
	Output      string `json:"output,omitempty"`
	MaxPayload  int    `json:"max_payload,omitempty"`
}

// Limits on the parameters.
const (
	MaxConcurrency    = 256
	MaxRetries        = 100
	DefaultMaxPayload = 1 << 20
)

// Options configure the triggers a Factory makes. The zero value is usable.
type Options struct {
	// Logger receives the triggers' records; nil discards.
	Logger *slog.Logger
}

// Factory makes message triggers that subscribe on b, for trigger.NewSet.
func Factory(b bus.Bus, opts *Options) trigger.Factory {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return func(c trigger.Config) (trigger.Trigger, error) {
		cfg, err := parse(c)
		if err != nil {
			return nil, err
		}
		return &msgTrigger{bus: b, log: o.Logger.With("trigger", c.Name), cfg: cfg}, nil
	}
}

// config is checked Params.
type config struct {
	name        string
	filter      string
	qos         bus.QoS
	concurrency int
	retries     int
	backoff     backoff.Policy
	deadLetter  string
	output      string
	maxPayload  int
}

func parse(c trigger.Config) (config, error) {
	var p Params
	if err := trigger.DecodeParams(c, &p, "filter"); err != nil {
		return config{}, err
	}
	cfg := config{name: c.Name, filter: p.Filter, qos: bus.AtLeastOnce, concurrency: 1, retries: 3,
		deadLetter: "edgekit/deadletter/" + c.Name, output: p.Output, maxPayload: DefaultMaxPayload}
	if err := bus.ValidateFilter(p.Filter); err != nil {
		return cfg, trigger.InvalidParam(c, "filter", "%v", err)
	}
	if p.QoS != nil {
		if q := bus.QoS(*p.QoS); *p.QoS < 0 || !q.Valid() {
			return cfg, trigger.InvalidParam(c, "qos", "%d: want 0, 1 or 2", *p.QoS)
		} else {
			cfg.qos = q
		}
	}
	if p.Concurrency != 0 {
		if p.Concurrency < 1 || p.Concurrency > MaxConcurrency {
			return cfg, trigger.InvalidParam(c, "concurrency", "%d: want 1 to %d", p.Concurrency, MaxConcurrency)
		}
		cfg.concurrency = p.Concurrency
	}
	if p.Retries != nil {
		if *p.Retries < 0 || *p.Retries > MaxRetries {
			return cfg, trigger.InvalidParam(c, "retries", "%d: want 0 to %d", *p.Retries, MaxRetries)
		}
		cfg.retries = *p.Retries
	}
	cfg.backoff = backoff.Policy{Min: 100 * time.Millisecond}
	if p.Backoff != "" {
		d, err := time.ParseDuration(p.Backoff)
		if err != nil || d <= 0 {
			return cfg, trigger.InvalidParam(c, "backoff", "%q: want a positive duration such as 100ms", p.Backoff)
		}
		cfg.backoff.Min = d
	}
	cfg.backoff.Max = 30 * cfg.backoff.Min
	if p.DeadLetter != "" {
		cfg.deadLetter = p.DeadLetter
	}
	if err := bus.ValidateTopic(cfg.deadLetter); err != nil {
		return cfg, trigger.InvalidParam(c, "dead_letter", "%v", err)
	}
	if p.Output != "" {
		if err := bus.ValidateTopic(p.Output); err != nil {
			return cfg, trigger.InvalidParam(c, "output", "%v", err)
		}
	}
	if p.MaxPayload != 0 {
		if p.MaxPayload < 0 {
			return cfg, trigger.InvalidParam(c, "max_payload", "%d: want a positive size in bytes", p.MaxPayload)
		}
		cfg.maxPayload = p.MaxPayload
	}
	return cfg, nil
}

// msgTrigger is one message trigger.
type msgTrigger struct {
	bus  bus.Bus
	log  *slog.Logger
	cfg  config
	fire trigger.Fire

	sub   bus.Subscription
	lanes []chan *bus.Message // concurrency > 1
	// laneMu is held shared by dispatch while it puts into a lane, and
	// exclusively by Stop to close them (lanesClosed).
	laneMu      sync.RWMutex
	lanesClosed bool
	seed        maphash.Seed
	ctx         context.Context // ends when the trigger has stopped, or Stop's ctx ended
	cancel      context.CancelFunc
	stopping    chan struct{} // closed when Stop begins: no more retries
	stopOnce    sync.Once
	wg          sync.WaitGroup // lane goroutines
	// gate is held shared by each message being handled; Stop takes it
	// exclusively to wait for them, and handling that starts after Stop
	// finds the trigger stopped.
	gate sync.RWMutex
}

func (t *msgTrigger) Start(ctx context.Context, fire trigger.Fire) error {
	t.fire = fire
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.stopping = make(chan struct{})
	h := t.handle
	if n := t.cfg.concurrency; n > 1 {
		t.seed = maphash.MakeSeed()
		t.lanes = make([]chan *bus.Message, n)
		for i := range t.lanes {
			lane := make(chan *bus.Message, 16)
			t.lanes[i] = lane
			t.wg.Add(1)
			go t.runLane(lane)
		}
		h = t.dispatch
	}
	sub, err := t.bus.Subscribe(ctx, t.cfg.filter, h, &bus.SubscribeOptions{QoS: t.cfg.qos})
	if err != nil {
		t.cancel()
		t.closeLanes()
		return fmt.Errorf("message trigger %s: subscribing to %s: %w", t.cfg.name, t.cfg.filter, err)
	}
	t.sub = sub
	return nil
}

// dispatch hands a message to its topic's lane, waiting for room (the bus
// holds back QoS ≥ 1 deliveries meanwhile; a lane's goroutine always
// makes room, handling or dead-lettering).
func (t *msgTrigger) dispatch(ctx context.Context, m *bus.Message) {
	t.laneMu.RLock()
	defer t.laneMu.RUnlock()
	if t.lanesClosed {
		t.unhandled(m, errStopped)
		return
	}
	lane := t.lanes[maphash.String(t.seed, m.Topic)%uint64(len(t.lanes))]
	select {
	case lane <- m:
	case <-ctx.Done():
		t.unhandled(m, errors.New("the bus subscription ended before the message was handled"))
	}
}

func (t *msgTrigger) runLane(lane chan *bus.Message) {
	defer t.wg.Done()
	for m := range lane {
		t.handle(t.ctx, m)
	}
}

// closeLanes closes the lanes once nothing can be put into them, and
// waits until their goroutines have handled what they held.
func (t *msgTrigger) closeLanes() {
	t.laneMu.Lock()
	if !t.lanesClosed {
		t.lanesClosed = true
		for _, lane := range t.lanes {
			close(lane)
		}
	}
	t.laneMu.Unlock()
	t.wg.Wait()
}

var errStopped = errors.New("the trigger stopped before the message was handled")

// unhandled dead-letters a message the trigger will not handle (QoS 0 is
// let go).
func (t *msgTrigger) unhandled(m *bus.Message, why error) {
	if m.QoS > bus.AtMostOnce {
		t.deadLetter(m, why, "TriggerStopped", 0)
	}
}

// handle runs the function for m until it succeeds, or dead-letters m.
func (t *msgTrigger) handle(_ context.Context, m *bus.Message) {
	t.gate.RLock()
	defer t.gate.RUnlock()
	if t.ctx.Err() != nil {
		t.unhandled(m, errStopped)
		return
	}
	if len(m.Payload) > t.cfg.maxPayload {
		t.deadLetter(m, fmt.Errorf("payload of %d bytes is over the trigger's max_payload of %d", len(m.Payload), t.cfg.maxPayload), "PayloadTooLarge", 0)
		return
	}
	req := invoke.Request{Payload: m.Payload, ContentType: m.ContentType, Source: source(t.cfg.name, m), Trace: traceOf(m)}
	var err error
	for attempt := 0; ; attempt++ {
		var resp invoke.Response
		// The invocation runs to its own deadline even while the trigger
		// stops: Stop waits for it.
		resp, err = t.fire(context.WithoutCancel(t.ctx), req)
		if err == nil {
			t.publishOutput(m, resp)
			return
		}
		if m.QoS == bus.AtMostOnce {
			t.log.Warn("message trigger: invocation failed (QoS 0: not retried)", "topic", m.Topic, "err", err)
			return
		}
		if attempt >= t.cfg.retries {
			break
		}
		timer := time.NewTimer(t.cfg.backoff.Delay(attempt))
		select {
		case <-timer.C:
		case <-t.stopping:
			timer.Stop()
			t.deadLetter(m, fmt.Errorf("%w; last error: %w", errStopped, err), invoke.ErrorType(err), attempt+1)
			return
		}
	}
	t.deadLetter(m, err, invoke.ErrorType(err), t.cfg.retries+1)
}

// source describes m for the function.
func source(triggerName string, m *bus.Message) map[string]string {
	src := map[string]string{"type": Type, "trigger": triggerName, "topic": m.Topic, "qos": strconv.Itoa(int(m.QoS))}
	if m.ContentType != "" {
		src["content_type"] = m.ContentType
	}
	if d, ok := m.Property("edgekit-device"); ok {
		src["device"] = d
	} else if rest, ok := strings.CutPrefix(m.Topic, "devices/"); ok {
		if d, _, _ := strings.Cut(rest, "/"); d != "" {
			src["device"] = d
		}
	}
	for _, p := range m.UserProperties {
		src["property."+p.Key] = p.Value
	}
	return src
}

// traceOf reads a message's W3C trace context from its user properties.
func traceOf(m *bus.Message) invoke.Trace {
	parent, _ := m.Property(invoke.TraceParentKey)
	state, _ := m.Property(invoke.TraceStateKey)
	return invoke.ParseTrace(parent, state)
}

// traceProperties carries trace context on as user properties.
func traceProperties(t invoke.Trace) []bus.UserProperty {
	if !t.Valid() {
		return nil
	}
	ps := []bus.UserProperty{{Key: invoke.TraceParentKey, Value: t.Parent}}
	if t.State != "" {
		ps = append(ps, bus.UserProperty{Key: invoke.TraceStateKey, Value: t.State})
	}
	return ps
}

func (t *msgTrigger) publishOutput(m *bus.Message, resp invoke.Response) {
	if t.cfg.output == "" {
		return
	}
	out := &bus.Message{Topic: t.cfg.output, Payload: resp.Payload, QoS: m.QoS, ContentType: resp.ContentType,
		UserProperties: append([]bus.UserProperty{{Key: "edgekit-topic", Value: m.Topic}}, traceProperties(traceOf(m))...)}
	if err := t.bus.Publish(context.WithoutCancel(t.ctx), out); err != nil {
		t.log.Error("message trigger: publishing the result", "output", t.cfg.output, "err", err)
	}
}

// deadLetter publishes m to the dead-letter topic with why.
func (t *msgTrigger) deadLetter(m *bus.Message, why error, typ string, attempts int) {
	dl := &bus.Message{Topic: t.cfg.deadLetter, Payload: m.Payload, QoS: max(m.QoS, bus.AtLeastOnce), ContentType: m.ContentType,
		UserProperties: append([]bus.UserProperty{
			{Key: "edgekit-error", Value: why.Error()}, {Key: "edgekit-error-type", Value: typ},
			{Key: "edgekit-topic", Value: m.Topic}, {Key: "edgekit-attempts", Value: strconv.Itoa(attempts)},
		}, m.UserProperties...)}
	t.log.Warn("message trigger: dead-lettered", "topic", m.Topic, "dead_letter", t.cfg.deadLetter, "attempts", attempts, "err", why)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := t.bus.Publish(ctx, dl); err != nil {
		t.log.Error("message trigger: publishing to the dead-letter topic failed; the message is lost", "topic", m.Topic, "dead_letter", t.cfg.deadLetter, "err", err)
	}
}

// Stop takes the trigger's subscription off the bus and hands on every
// message it had taken: each message the subscription or a lane still
// holds gets its invocation (a trigger replaced by another loses none of
// them: the new one only sees what comes after it subscribed); a message
// waiting for a retry is dead-lettered at once. When ctx ends first, what
// is left is dead-lettered rather than run. Stop returns once no
// invocation of the trigger runs. A bus whose subscriptions do not
// implement bus.Drainer discards what they buffered.
func (t *msgTrigger) Stop(ctx context.Context) error {
	if t.sub == nil {
		return nil
	}
	first := false
	t.stopOnce.Do(func() { first = true; close(t.stopping) })
	if !first {
		return nil
	}
	// Past ctx's end, handle dead-letters instead of invoking.
	cut := context.AfterFunc(ctx, t.cancel)
	defer cut()
	var err error
	if d, ok := t.sub.(bus.Drainer); ok {
		err = d.Drain(context.WithoutCancel(ctx))
	} else {
		err = t.sub.Unsubscribe(ctx)
	}
	t.closeLanes()
	t.cancel()
	done := make(chan struct{})
	go func() {
		t.gate.Lock() // every message being handled is done
		close(done)
		t.gate.Unlock()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("message trigger %s: waiting for invocations in flight: %w", t.cfg.name, ctx.Err()))
	}
	return err
}
