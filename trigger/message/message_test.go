package message_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// host deploys in-process functions for the test, closed at its end.
func host(t *testing.T, fns map[string]function.HandlerFunc) *function.Host {
	t.Helper()
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	for name, fn := range fns {
		_ = h.Register(name, fn)
		if err := h.Deploy(context.Background(), function.Spec{Name: name, Version: "1", Runtime: function.RuntimeGo, Handler: name, MaxInstances: 8}); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func newSet(t *testing.T, h *function.Host, b bus.Bus) *trigger.Set {
	t.Helper()
	set := trigger.NewSet(h, map[string]trigger.Factory{message.Type: message.Factory(b, nil)}, &trigger.Options{
		Known: func(fn string) bool { _, err := h.Status(fn); return err == nil },
	})
	t.Cleanup(func() { _ = set.Close(context.Background()) })
	return set
}

func put(t *testing.T, set *trigger.Set, name, fn, params string) {
	t.Helper()
	if err := set.Put(context.Background(), trigger.Config{Name: name, Type: message.Type, Function: fn, Params: json.RawMessage(params)}); err != nil {
		t.Fatal(err)
	}
}

// collect subscribes to filter and returns what arrives.
func collect(t *testing.T, b bus.Bus, filter string) func() []*bus.Message {
	t.Helper()
	var mu sync.Mutex
	var got []*bus.Message
	if _, err := b.Subscribe(context.Background(), filter, func(_ context.Context, m *bus.Message) {
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	}, nil); err != nil {
		t.Fatal(err)
	}
	return func() []*bus.Message {
		mu.Lock()
		defer mu.Unlock()
		return append([]*bus.Message(nil), got...)
	}
}

// TestMessageInvokes: a message reaches the function with its topic, user
// properties, content type and device; the result goes to the output topic.
func TestMessageInvokes(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var got atomic.Pointer[invoke.Request]
		h := host(t, map[string]function.HandlerFunc{"double": func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			got.Store(&req)
			var v struct{ Celsius float64 }
			if err := json.Unmarshal(req.Payload, &v); err != nil {
				return invoke.Response{}, err
			}
			return invoke.Response{Payload: fmt.Appendf(nil, `{"doubled":%g}`, 2*v.Celsius), ContentType: "application/json"}, nil
		}})
		set := newSet(t, h, b)
		out := collect(t, b, "results/#")
		put(t, set, "rule", "double", `{"filter": "devices/+/telemetry", "output": "results/doubled"}`)
		msg := &bus.Message{Topic: "devices/boiler-7/telemetry", Payload: []byte(`{"celsius": 21.5}`), QoS: bus.AtLeastOnce,
			ContentType: "application/json", UserProperties: []bus.UserProperty{{Key: "unit", Value: "C"}}}
		if err := b.Publish(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "the result", func() bool { return len(out()) == 1 })
		res := out()[0]
		if string(res.Payload) != `{"doubled":43}` || res.ContentType != "application/json" {
			t.Errorf("result %q (%s)", res.Payload, res.ContentType)
		}
		if v, _ := res.Property("edgekit-topic"); v != msg.Topic {
			t.Errorf("result's edgekit-topic %q", v)
		}
		req := got.Load()
		want := map[string]string{"type": "message", "trigger": "rule", "topic": msg.Topic, "qos": "1", "content_type": "application/json", "device": "boiler-7", "property.unit": "C"}
		for k, v := range want {
			if req.Source[k] != v {
				t.Errorf("source %s = %q, want %q (all: %v)", k, req.Source[k], v, req.Source)
			}
		}
	})
}

// TestNoMessageLost: of 300 QoS 1 messages, those the function accepts are
// handled (some after failing twice), and those it always refuses reach the
// dead-letter topic once each, after every retry, with the error. Every
// message is accounted for.
func TestNoMessageLost(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var mu sync.Mutex
		handled := map[string]int{}
		attempts := map[string]int{}
		h := host(t, map[string]function.HandlerFunc{"picky": func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			id := string(req.Payload)
			mu.Lock()
			defer mu.Unlock()
			attempts[id]++
			switch {
			case strings.HasPrefix(id, "bad"):
				return invoke.Response{}, errors.New("refused " + id)
			case strings.HasPrefix(id, "flaky") && attempts[id] <= 2:
				return invoke.Response{}, errors.New("not yet")
			}
			handled[id]++
			return invoke.Response{}, nil
		}})
		set := newSet(t, h, b)
		dead := collect(t, b, "dlq/picky")
		put(t, set, "picky", "picky", `{"filter": "in/#", "retries": 3, "backoff": "1ms", "dead_letter": "dlq/picky", "concurrency": 4}`)
		var ids []string
		for i := range 300 {
			id := []string{"good", "flaky", "bad"}[i%3] + "-" + strconv.Itoa(i)
			ids = append(ids, id)
			if err := b.Publish(context.Background(), &bus.Message{Topic: "in/" + strconv.Itoa(i%7), Payload: []byte(id), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, "every message handled or dead-lettered", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(handled)+len(dead()) >= 300
		})
		time.Sleep(100 * time.Millisecond) // nothing more arrives
		deadByID := map[string]*bus.Message{}
		for _, m := range dead() {
			if deadByID[string(m.Payload)] != nil {
				t.Errorf("%s dead-lettered twice", m.Payload)
			}
			deadByID[string(m.Payload)] = m
		}
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			switch {
			case strings.HasPrefix(id, "bad"):
				m := deadByID[id]
				if m == nil {
					t.Errorf("%s: neither handled nor dead-lettered", id)
					continue
				}
				errText, _ := m.Property("edgekit-error")
				n, _ := m.Property("edgekit-attempts")
				if !strings.Contains(errText, "refused "+id) || n != "4" || attempts[id] != 4 {
					t.Errorf("%s dead-lettered with error %q after %s attempts (%d invocations), want 4", id, errText, n, attempts[id])
				}
			case handled[id] != 1:
				t.Errorf("%s handled %d times", id, handled[id])
			case deadByID[id] != nil:
				t.Errorf("%s handled and dead-lettered", id)
			}
		}
	})
}

// TestOrderPerTopic: with concurrency 4, messages of one topic are handled
// in order, while topics run in parallel.
func TestOrderPerTopic(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var mu sync.Mutex
		last := map[string]int{}
		var running, peak atomic.Int32
		var count atomic.Int32
		h := host(t, map[string]function.HandlerFunc{"ordered": func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(time.Millisecond)
			topic := req.Source["topic"]
			seq, _ := strconv.Atoi(string(req.Payload))
			mu.Lock()
			if prev, ok := last[topic]; ok && seq != prev+1 {
				t.Errorf("%s: %d after %d", topic, seq, prev)
			}
			last[topic] = seq
			mu.Unlock()
			count.Add(1)
			return invoke.Response{}, nil
		}})
		set := newSet(t, h, b)
		put(t, set, "ordered", "ordered", `{"filter": "seq/+", "concurrency": 4}`)
		for i := range 400 {
			topic := "seq/" + strconv.Itoa(i%8)
			if err := b.Publish(context.Background(), &bus.Message{Topic: topic, Payload: []byte(strconv.Itoa(i / 8)), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, "400 invocations", func() bool { return count.Load() == 400 })
		if peak.Load() < 2 {
			t.Errorf("at most %d invocation at a time with concurrency 4", peak.Load())
		}
	})
}

// TestReplacedTriggerLosesNoBufferedMessage: a trigger whose function is
// busy holds messages in its subscription's buffer when it is replaced
// (new params: the new trigger subscribes, then the old one stops). Every
// one of them is still invoked: the new trigger sees only what comes after
// it subscribed. (Stopping used to discard the buffer.)
func TestReplacedTriggerLosesNoBufferedMessage(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		release := make(chan struct{})
		var once sync.Once
		started := make(chan struct{})
		var mu sync.Mutex
		seen := map[string]bool{}
		record := func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			once.Do(func() { close(started); <-release })
			mu.Lock()
			seen[string(req.Payload)] = true
			mu.Unlock()
			return invoke.Response{}, nil
		}
		h := host(t, map[string]function.HandlerFunc{"a": record})
		w := &watchedBus{Bus: b, leaving: make(chan struct{})}
		set := newSet(t, h, w)
		put(t, set, "busy", "a", `{"filter": "busy/#"}`)
		ctx := context.Background()
		const n = 50
		for i := range n {
			if err := b.Publish(ctx, &bus.Message{Topic: "busy/x", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatal(err)
			}
		}
		<-started
		replaced := make(chan error, 1)
		go func() {
			replaced <- set.Put(ctx, trigger.Config{Name: "busy", Type: message.Type, Function: "a", Params: json.RawMessage(`{"filter": "busy/#", "retries": 2}`)})
		}()
		<-w.leaving // the old trigger's subscription is leaving the bus
		close(release)
		if err := <-replaced; err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "every message published before the change invoked", func() bool { return allSeen(&mu, seen, n) })
	})
}

// allSeen reports whether seen holds the payloads 0 to n-1.
func allSeen(mu *sync.Mutex, seen map[string]bool, n int) bool {
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if !seen[strconv.Itoa(i)] {
			return false
		}
	}
	return true
}

// watchedBus passes everything to a real bus, and closes leaving when the
// first of its subscriptions starts to leave it: after an Unsubscribe has
// returned, or as a Drain begins (it returns only once the handler is
// done).
type watchedBus struct {
	bus.Bus
	leaving chan struct{}
	once    sync.Once
}

func (w *watchedBus) Subscribe(ctx context.Context, filter string, h bus.Handler, o *bus.SubscribeOptions) (bus.Subscription, error) {
	s, err := w.Bus.Subscribe(ctx, filter, h, o)
	if err != nil {
		return nil, err
	}
	return &watchedSub{Subscription: s, w: w}, nil
}

type watchedSub struct {
	bus.Subscription
	w *watchedBus
}

func (s *watchedSub) Unsubscribe(ctx context.Context) error {
	err := s.Subscription.Unsubscribe(ctx)
	s.w.once.Do(func() { close(s.w.leaving) })
	return err
}

func (s *watchedSub) Drain(ctx context.Context) error {
	d, ok := s.Subscription.(bus.Drainer)
	if !ok {
		return s.Unsubscribe(ctx)
	}
	s.w.once.Do(func() { close(s.w.leaving) })
	return d.Drain(ctx)
}

// TestChangesUnderLoad: while messages flow, a trigger is rebound to
// another function, then given new parameters, then removed. No message is
// lost for the trigger while it stays, and none reaches a function after
// the trigger's removal.
func TestChangesUnderLoad(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var mu sync.Mutex
		seen := map[string]bool{}
		var afterRemove atomic.Bool
		var late atomic.Int32
		record := func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			if afterRemove.Load() {
				late.Add(1)
			}
			mu.Lock()
			seen[string(req.Payload)] = true
			mu.Unlock()
			return invoke.Response{}, nil
		}
		h := host(t, map[string]function.HandlerFunc{"a": record, "b": record})
		set := newSet(t, h, b)
		put(t, set, "live", "a", `{"filter": "load/#"}`)
		ctx := context.Background()
		const n = 3000
		published := make(chan struct{})
		go func() {
			defer close(published)
			for i := range n {
				if err := b.Publish(ctx, &bus.Message{Topic: "load/x", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		seenAtLeast := func(what string, k int) {
			t.Helper()
			testenv.Eventually(t, what, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) >= k
			})
		}
		// Each change is made while messages flow: after some have been
		// handled, before all are sent.
		seenAtLeast("messages handled before the rebind", 300)
		put(t, set, "live", "b", `{"filter": "load/#"}`) // rebind
		seenAtLeast("messages handled before the new params", 1000)
		put(t, set, "live", "b", `{"filter": "load/#", "concurrency": 2}`) // restart with new params
		<-published
		testenv.Eventually(t, "every message sent while the trigger stayed", func() bool { return allSeen(&mu, seen, n) })
		if err := set.Remove(ctx, "live"); err != nil {
			t.Fatal(err)
		}
		afterRemove.Store(true)
		// A subscription of the test's own sees the messages after the
		// removal; once it has the last, the removed trigger had its
		// chance to (wrongly) run them.
		marker := make(chan struct{})
		if _, err := b.Subscribe(ctx, "load/#", func(_ context.Context, m *bus.Message) {
			if string(m.Payload) == "after-49" {
				close(marker)
			}
		}, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			_ = b.Publish(ctx, &bus.Message{Topic: "load/x", Payload: []byte("after-" + strconv.Itoa(i)), QoS: bus.AtLeastOnce})
		}
		<-marker
		if late.Load() != 0 {
			t.Errorf("%d invocations after the trigger was removed", late.Load())
		}
	})
}

// TestOversizePayload: a message over max_payload is dead-lettered unread,
// saying why.
func TestOversizePayload(t *testing.T) {
	b := membus.New(nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	var calls atomic.Int32
	h := host(t, map[string]function.HandlerFunc{"f": func(context.Context, invoke.Request) (invoke.Response, error) {
		calls.Add(1)
		return invoke.Response{}, nil
	}})
	set := newSet(t, h, b)
	dead := collect(t, b, "edgekit/deadletter/small")
	put(t, set, "small", "f", `{"filter": "big", "max_payload": 10}`)
	_ = b.Publish(context.Background(), &bus.Message{Topic: "big", Payload: make([]byte, 11), QoS: bus.AtLeastOnce})
	testenv.Eventually(t, "the dead letter", func() bool { return len(dead()) == 1 })
	if typ, _ := dead()[0].Property("edgekit-error-type"); typ != "PayloadTooLarge" || calls.Load() != 0 {
		t.Errorf("dead letter type %q, %d calls", typ, calls.Load())
	}
}

// TestBadParams: each mistake is refused at configuration time, naming the
// field.
func TestBadParams(t *testing.T) {
	b := membus.New(nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	h := host(t, map[string]function.HandlerFunc{"f": func(context.Context, invoke.Request) (invoke.Response, error) { return invoke.Response{}, nil }})
	set := newSet(t, h, b)
	for params, field := range map[string]string{
		``:                                      "params.filter",
		`{"filter": "a/#/b"}`:                   "params.filter",
		`{"filter": "a", "qos": 3}`:             "params.qos",
		`{"filter": "a", "concurrency": -1}`:    "params.concurrency",
		`{"filter": "a", "concurrency": 1000}`:  "params.concurrency",
		`{"filter": "a", "retries": -1}`:        "params.retries",
		`{"filter": "a", "backoff": "soon"}`:    "params.backoff",
		`{"filter": "a", "dead_letter": "d/+"}`: "params.dead_letter",
		`{"filter": "a", "output": "o/#"}`:      "params.output",
		`{"filter": "a", "max_payload": -1}`:    "params.max_payload",
		`{"filter": "a", "topic": "a"}`:         `unknown field "topic"`,
	} {
		err := set.Put(context.Background(), trigger.Config{Name: "t", Type: message.Type, Function: "f", Params: json.RawMessage(params)})
		if !errors.Is(err, trigger.ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("params %s: %v, want ErrInvalidConfig naming %s", params, err, field)
		}
	}
	if len(set.List()) != 0 {
		t.Errorf("refused triggers were kept: %v", set.List())
	}
}

// TestStopDuringRetry: a message waiting for a retry when its trigger is
// removed is dead-lettered at once, not dropped.
func TestStopDuringRetry(t *testing.T) {
	b := membus.New(nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	var calls atomic.Int32
	h := host(t, map[string]function.HandlerFunc{"f": func(context.Context, invoke.Request) (invoke.Response, error) {
		calls.Add(1)
		return invoke.Response{}, errors.New("down")
	}})
	set := newSet(t, h, b)
	dead := collect(t, b, "edgekit/deadletter/slow-retry")
	put(t, set, "slow-retry", "f", `{"filter": "in", "retries": 5, "backoff": "1h"}`)
	_ = b.Publish(context.Background(), &bus.Message{Topic: "in", Payload: []byte("m"), QoS: bus.AtLeastOnce})
	testenv.Eventually(t, "the first attempt", func() bool { return calls.Load() == 1 })
	start := time.Now()
	if err := set.Remove(context.Background(), "slow-retry"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Remove took %v", d)
	}
	testenv.Eventually(t, "the dead letter", func() bool { return len(dead()) == 1 })
	if why, _ := dead()[0].Property("edgekit-error"); !strings.Contains(why, "stopped") || !strings.Contains(why, "down") {
		t.Errorf("dead letter says %q", why)
	}
}

// TestSharedGroup: two triggers in one $share group split the messages:
// each is handled once.
func TestSharedGroup(t *testing.T) {
	brokertest.Buses(t, func(t *testing.T, b bus.Bus) {
		var mu sync.Mutex
		count := map[string]int{}
		h := host(t, map[string]function.HandlerFunc{"f": func(_ context.Context, req invoke.Request) (invoke.Response, error) {
			mu.Lock()
			count[string(req.Payload)]++
			mu.Unlock()
			return invoke.Response{}, nil
		}})
		set := newSet(t, h, b)
		put(t, set, "member-1", "f", `{"filter": "$share/workers/jobs/#"}`)
		put(t, set, "member-2", "f", `{"filter": "$share/workers/jobs/#"}`)
		for i := range 100 {
			if err := b.Publish(context.Background(), &bus.Message{Topic: "jobs/" + strconv.Itoa(i%3), Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, "100 messages handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(count) == 100 })
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for id, n := range count {
			if n != 1 {
				t.Errorf("message %s handled %d times", id, n)
			}
		}
	})
}
