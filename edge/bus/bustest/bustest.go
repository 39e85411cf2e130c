// Package bustest is the conformance suite for bus.Bus implementations. Every
// bus in edgekit runs it (membus in-process, mqttbus on a real Mosquitto), and
// so should a vendor's own implementation:
//
//	func TestConformance(t *testing.T) {
//		bustest.Run(t, bustest.Harness{New: func(t *testing.T) bus.Bus { ... }})
//	}
//
// A backend declares what it supports in Capabilities; the suite runs every
// test that applies and logs, without skipping, the ones a declared lack rules
// out.
package bustest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
)

// Harness connects the suite to a backend.
type Harness struct {
	// New returns a new client of the message network under test. All
	// clients returned during one Run share that network. The suite closes
	// each client it gets.
	New func(t *testing.T) bus.Bus
	// Capabilities declares what the backend supports.
	Capabilities Capabilities
	// StopBroker stops the broker gracefully and StartBroker starts it
	// again on the same address; both are required with
	// Capabilities.BrokerRestart.
	StopBroker, StartBroker func(t *testing.T)
}

// Capabilities declares the optional behaviour of a backend.
type Capabilities struct {
	// BrokerRestart: the network runs on a broker that can be stopped and
	// started; clients reconnect, resubscribe, and deliver the QoS 1
	// messages published while it was down.
	BrokerRestart bool
	// MaxPayload is the payload limit configured on the clients New
	// returns; 0 means none was configured and the limit test does not
	// apply.
	MaxPayload int
}

// Timeout bounds every wait of the suite.
const Timeout = 15 * time.Second

// Run runs the whole suite as subtests of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("bustest: Harness.New is nil")
	}
	if h.Capabilities.BrokerRestart && (h.StopBroker == nil || h.StartBroker == nil) {
		t.Fatal("bustest: BrokerRestart declared without StopBroker and StartBroker")
	}
	s := &suite{h: h}
	t.Run("InvalidTopics", s.invalidTopics)
	t.Run("InvalidFilters", s.invalidFilters)
	t.Run("Filters", s.filters)
	t.Run("DollarTopics", s.dollarTopics)
	t.Run("SharedSubscription", s.shared)
	t.Run("QoS1InOrder", s.qos1InOrder)
	t.Run("SlowSubscriberLosesNoQoS1", s.slowSubscriber)
	t.Run("NoLocal", s.noLocal)
	t.Run("Retained", s.retained)
	t.Run("Properties", s.properties)
	t.Run("RequestResponse", s.requestResponse)
	t.Run("Unsubscribe", s.unsubscribe)
	t.Run("Drain", s.drain)
	t.Run("HandlerPanic", s.handlerPanic)
	t.Run("Close", s.close)
	t.Run("PayloadLimit", func(t *testing.T) {
		if h.Capabilities.MaxPayload <= 0 {
			t.Log("not applicable: Capabilities.MaxPayload is 0")
			return
		}
		s.payloadLimit(t)
	})
	t.Run("BrokerRestart", func(t *testing.T) {
		if !h.Capabilities.BrokerRestart {
			t.Log("not applicable: the backend declares no BrokerRestart")
			return
		}
		s.brokerRestart(t)
	})
}

type suite struct{ h Harness }

func (s *suite) client(t *testing.T) bus.Bus {
	t.Helper()
	b := s.h.New(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Timeout)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// prefix returns a topic prefix no other test uses, so tests on a shared
// broker do not see each other's messages.
func prefix(t *testing.T) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return "bustest/" + name + "/" + hex.EncodeToString(r[:])
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

// Collector records the messages a handler receives. It is exported so that
// backend tests can reuse it.
type Collector struct {
	mu   sync.Mutex
	msgs []*bus.Message
	more chan struct{}
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector { return &Collector{more: make(chan struct{}, 1)} }

// Handle is a bus.Handler that records msg.
func (c *Collector) Handle(_ context.Context, msg *bus.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, msg)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// Messages returns a copy of what was received so far.
func (c *Collector) Messages() []*bus.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// WaitFor waits until done returns true for the messages received so far,
// or fails t once Timeout passes with no new message (or 8×Timeout in
// all).
func (c *Collector) WaitFor(t testing.TB, what string, done func([]*bus.Message) bool) []*bus.Message {
	t.Helper()
	// The wait ends when Timeout passes with no message coming, not at a
	// fixed time: a machine under load delivers a long stream slowly, and
	// the stream is not stuck while it moves. A stream that moves and
	// never satisfies done ends at 8×Timeout.
	stalled := time.NewTimer(Timeout)
	defer stalled.Stop()
	limit := time.NewTimer(8 * Timeout)
	defer limit.Stop()
	seen := -1
	for {
		msgs := c.Messages()
		if done(msgs) {
			return msgs
		}
		if len(msgs) != seen {
			seen = len(msgs)
			stalled.Reset(Timeout)
		}
		select {
		case <-c.more:
		case <-time.After(50 * time.Millisecond):
		case <-stalled.C:
			t.Fatalf("no message in %v while waiting for %s; got %d messages: %s; sequence check: %v", Timeout, what, len(msgs), topics(msgs), CheckSequence(msgs, len(msgs)))
		case <-limit.C:
			t.Fatalf("timed out after %v waiting for %s; got %d messages: %s; sequence check: %v", 8*Timeout, what, len(msgs), topics(msgs), CheckSequence(msgs, len(msgs)))
		}
	}
}

// WaitCount waits for at least n messages.
func (c *Collector) WaitCount(t testing.TB, n int) []*bus.Message {
	t.Helper()
	return c.WaitFor(t, fmt.Sprintf("%d messages", n), func(m []*bus.Message) bool { return len(m) >= n })
}

// WaitTopic waits for a message on topic and returns everything received
// up to and including it.
func (c *Collector) WaitTopic(t testing.TB, topic string) []*bus.Message {
	t.Helper()
	msgs := c.WaitFor(t, "a message on "+topic, func(m []*bus.Message) bool {
		return slices.ContainsFunc(m, func(x *bus.Message) bool { return x.Topic == topic })
	})
	i := slices.IndexFunc(msgs, func(x *bus.Message) bool { return x.Topic == topic })
	return msgs[:i+1]
}

func topics(msgs []*bus.Message) string {
	var out []string
	for i, m := range msgs {
		if i == 20 {
			out = append(out, "...")
			break
		}
		out = append(out, m.Topic)
	}
	return "[" + strings.Join(out, " ") + "]"
}

func (s *suite) subscribe(t *testing.T, b bus.Bus, filter string, opts *bus.SubscribeOptions) *Collector {
	t.Helper()
	c := NewCollector()
	if _, err := b.Subscribe(ctxT(t), filter, c.Handle, opts); err != nil {
		t.Fatalf("Subscribe(%q): %v", filter, err)
	}
	return c
}

func publish(t *testing.T, b bus.Bus, m *bus.Message) {
	t.Helper()
	if err := b.Publish(ctxT(t), m); err != nil {
		t.Fatalf("Publish(%q): %v", m.Topic, err)
	}
}

func (s *suite) invalidTopics(t *testing.T) {
	b := s.client(t)
	for _, topic := range []string{"", "a/+", "a/#", "#", "+", "a/b+", "a\x00b", string([]byte{0xff, 0xfe}), strings.Repeat("a", bus.MaxTopicLength+1)} {
		err := b.Publish(ctxT(t), &bus.Message{Topic: topic, Payload: []byte("x")})
		if !errors.Is(err, bus.ErrInvalidTopic) {
			t.Errorf("Publish(%q): got %v, want ErrInvalidTopic", clip(topic), err)
		}
	}
	err := b.Publish(ctxT(t), &bus.Message{Topic: "ok", QoS: 3})
	if !errors.Is(err, bus.ErrInvalidQoS) {
		t.Errorf("Publish with QoS 3: got %v, want ErrInvalidQoS", err)
	}
	err = b.Publish(ctxT(t), &bus.Message{Topic: "ok", ResponseTopic: "r/+"})
	if !errors.Is(err, bus.ErrInvalidTopic) || !strings.Contains(err.Error(), "response topic") {
		t.Errorf("Publish with wildcard response topic: got %v, want ErrInvalidTopic naming the response topic", err)
	}
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

func (s *suite) invalidFilters(t *testing.T) {
	b := s.client(t)
	noop := func(context.Context, *bus.Message) {}
	for _, f := range []string{"", "a/#/b", "a#", "a/b#", "a+/b", "+a", "a\x00", "$share/", "$share/g", "$share//a", "$share/g+/a", "$share/g/"} {
		_, err := b.Subscribe(ctxT(t), f, noop, nil)
		if !errors.Is(err, bus.ErrInvalidFilter) {
			t.Errorf("Subscribe(%q): got %v, want ErrInvalidFilter", f, err)
		}
	}
}

func (s *suite) filters(t *testing.T) {
	p := prefix(t)
	sub, pub := s.client(t), s.client(t)
	cases := []struct {
		filter string
		want   []string // suffixes after p
	}{
		{p + "/a/b", []string{"/a/b"}},
		{p + "/a/+", []string{"/a/b", "/a/c"}},
		{p + "/+/b", []string{"/a/b", "/x/b"}},
		{p + "/a/#", []string{"/a", "/a/b", "/a/c", "/a/b/c"}},
		{p + "/+/+/c", []string{"/a/b/c"}},
		{p + "/#", []string{"/a", "/a/b", "/a/c", "/x/b", "/a/b/c", "/end"}},
		{p + "/a/+/#", []string{"/a/b", "/a/c", "/a/b/c"}},
	}
	cols := make([]*Collector, len(cases))
	for i, c := range cases {
		cols[i] = s.subscribe(t, sub, c.filter, nil)
	}
	for _, suffix := range []string{"/a", "/a/b", "/a/c", "/x/b", "/a/b/c", "/end"} {
		publish(t, pub, &bus.Message{Topic: p + suffix, Payload: []byte(suffix), QoS: bus.AtLeastOnce})
	}
	for i, c := range cases {
		cols[i].WaitCount(t, len(c.want))
	}
	time.Sleep(100 * time.Millisecond) // let any wrong extra delivery arrive
	for i, c := range cases {
		var got []string
		for _, m := range cols[i].Messages() {
			got = append(got, strings.TrimPrefix(m.Topic, p))
		}
		slices.Sort(got)
		want := slices.Clone(c.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("filter %q: got %v, want %v", c.filter, got, want)
		}
	}
}

func (s *suite) dollarTopics(t *testing.T) {
	p := prefix(t)
	id := p[strings.LastIndexByte(p, '/')+1:]
	sub, pub := s.client(t), s.client(t)
	all := s.subscribe(t, sub, "#", nil)
	plus := s.subscribe(t, sub, "+/"+id+"/t", nil)
	dollar := s.subscribe(t, sub, "$edgekit/"+id+"/#", nil)
	publish(t, pub, &bus.Message{Topic: "$edgekit/" + id + "/t", QoS: bus.AtLeastOnce})
	publish(t, pub, &bus.Message{Topic: "plain/" + id + "/t", QoS: bus.AtLeastOnce})
	dollar.WaitTopic(t, "$edgekit/"+id+"/t")
	for name, c := range map[string]*Collector{"#": all, "+/" + id + "/t": plus} {
		got := c.WaitTopic(t, "plain/"+id+"/t")
		for _, m := range got {
			if strings.HasPrefix(m.Topic, "$") {
				t.Errorf("filter %q matched $-topic %q", name, m.Topic)
			}
		}
	}
}

func (s *suite) shared(t *testing.T) {
	p := prefix(t)
	a, b, pub := s.client(t), s.client(t), s.client(t)
	filter := "$share/workers/" + p + "/jobs/+"
	ca := s.subscribe(t, a, filter, nil)
	cb := s.subscribe(t, b, filter, nil)
	plain := s.subscribe(t, pub, p+"/jobs/+", nil)
	const n = 40
	for i := range n {
		publish(t, pub, &bus.Message{Topic: p + "/jobs/" + strconv.Itoa(i), QoS: bus.AtLeastOnce})
	}
	plain.WaitCount(t, n)
	ca.WaitFor(t, "all jobs shared out", func([]*bus.Message) bool {
		return len(ca.Messages())+len(cb.Messages()) >= n
	})
	time.Sleep(100 * time.Millisecond)
	seen := map[string]int{}
	for _, m := range append(ca.Messages(), cb.Messages()...) {
		seen[m.Topic]++
	}
	if len(seen) != n {
		t.Errorf("group received %d distinct jobs, want %d", len(seen), n)
	}
	for topic, k := range seen {
		if k != 1 {
			t.Errorf("job %s delivered %d times to the group, want once", topic, k)
		}
	}
	if len(ca.Messages()) == 0 || len(cb.Messages()) == 0 {
		t.Errorf("one member got everything: a=%d b=%d", len(ca.Messages()), len(cb.Messages()))
	}
}

func (s *suite) qos1InOrder(t *testing.T) {
	p := prefix(t)
	sub, pub := s.client(t), s.client(t)
	c := s.subscribe(t, sub, p, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 16})
	const n = 2000
	for i := range n {
		publish(t, pub, &bus.Message{Topic: p, Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce})
	}
	msgs := c.WaitCount(t, n)
	if err := CheckSequence(msgs, n); err != nil {
		t.Error(err)
	}
	for _, m := range msgs {
		if m.QoS != bus.AtLeastOnce {
			t.Fatalf("delivered at %v, want qos1", m.QoS)
		}
	}
}

func (s *suite) slowSubscriber(t *testing.T) {
	p := prefix(t)
	sub, pub := s.client(t), s.client(t)
	c := NewCollector()
	_, err := sub.Subscribe(ctxT(t), p, func(ctx context.Context, m *bus.Message) {
		time.Sleep(200 * time.Microsecond)
		c.Handle(ctx, m)
	}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		publish(t, pub, &bus.Message{Topic: p, Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce})
	}
	if err := CheckSequence(c.WaitCount(t, n), n); err != nil {
		t.Error(err)
	}
}

func (s *suite) noLocal(t *testing.T) {
	p := prefix(t)
	a, b := s.client(t), s.client(t)
	c := s.subscribe(t, a, p+"/#", &bus.SubscribeOptions{QoS: bus.AtLeastOnce, NoLocal: true})
	publish(t, a, &bus.Message{Topic: p + "/own", QoS: bus.AtLeastOnce})
	publish(t, b, &bus.Message{Topic: p + "/other", QoS: bus.AtLeastOnce})
	if got := c.WaitTopic(t, p+"/other"); len(got) != 1 {
		t.Errorf("NoLocal subscription got %s, want only the other client's message", describe(got))
	}
	_, err := a.Subscribe(ctxT(t), "$share/g/"+p, func(context.Context, *bus.Message) {}, &bus.SubscribeOptions{NoLocal: true})
	if !errors.Is(err, bus.ErrInvalidFilter) {
		t.Errorf("NoLocal on a shared subscription: %v, want ErrInvalidFilter", err)
	}
}

// CheckSequence checks that payloads are the decimal numbers 0..n-1, each
// arriving only after the one before it: duplicates are allowed, gaps and
// reordering are not.
func CheckSequence(msgs []*bus.Message, n int) error {
	next := 0
	for i, m := range msgs {
		v, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			return fmt.Errorf("message %d: payload %q is not a number", i, m.Payload)
		}
		switch {
		case v == next:
			next++
		case v < next: // duplicate
		default:
			return fmt.Errorf("message %d: got %d before %d arrived", i, v, next)
		}
	}
	if next != n {
		return fmt.Errorf("got numbers up to %d, want %d", next, n)
	}
	return nil
}

func (s *suite) retained(t *testing.T) {
	p := prefix(t)
	pub := s.client(t)
	publish(t, pub, &bus.Message{Topic: p + "/state", Payload: []byte("v1"), QoS: bus.AtLeastOnce, Retain: true})
	publish(t, pub, &bus.Message{Topic: p + "/state", Payload: []byte("v2"), QoS: bus.AtLeastOnce, Retain: true, ContentType: "text/plain"})

	sub := s.client(t)
	c := s.subscribe(t, sub, p+"/#", nil)
	publish(t, pub, &bus.Message{Topic: p + "/marker", QoS: bus.AtLeastOnce})
	got := c.WaitTopic(t, p+"/marker")
	if len(got) != 2 || string(got[0].Payload) != "v2" || !got[0].Retain || got[0].ContentType != "text/plain" {
		t.Fatalf("new subscriber got %s, want the retained v2 (Retain set, content type kept) before the marker", describe(got))
	}
	if got[1].Retain {
		t.Errorf("live message delivered with Retain set")
	}

	// An empty retained payload clears the topic.
	publish(t, pub, &bus.Message{Topic: p + "/state", QoS: bus.AtLeastOnce, Retain: true})
	c2 := s.subscribe(t, s.client(t), p+"/#", nil)
	publish(t, pub, &bus.Message{Topic: p + "/marker", QoS: bus.AtLeastOnce})
	if got := c2.WaitTopic(t, p+"/marker"); len(got) != 1 {
		t.Errorf("after clearing, a new subscriber got %s, want only the marker", describe(got))
	}

	// Retain As Published keeps the flag on live messages.
	c3 := s.subscribe(t, s.client(t), p+"/live", &bus.SubscribeOptions{QoS: bus.AtLeastOnce, RetainAsPublished: true})
	publish(t, pub, &bus.Message{Topic: p + "/live", Payload: []byte("x"), QoS: bus.AtLeastOnce, Retain: true})
	if got := c3.WaitCount(t, 1); !got[0].Retain {
		t.Errorf("RetainAsPublished: live retained message arrived with Retain cleared")
	}
	publish(t, pub, &bus.Message{Topic: p + "/live", QoS: bus.AtLeastOnce, Retain: true})
}

func describe(msgs []*bus.Message) string {
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%s=%q(retain=%v)", m.Topic, m.Payload, m.Retain))
	}
	return "[" + strings.Join(out, " ") + "]"
}

func (s *suite) properties(t *testing.T) {
	p := prefix(t)
	sub, pub := s.client(t), s.client(t)
	c := s.subscribe(t, sub, p, nil)
	want := &bus.Message{
		Topic:           p,
		Payload:         []byte{0, 1, 2, 255},
		QoS:             bus.AtLeastOnce,
		UserProperties:  []bus.UserProperty{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "unicode", Value: "température"}},
		ContentType:     "application/octet-stream",
		ResponseTopic:   p + "/reply",
		CorrelationData: []byte("corr-1"),
		MessageExpiry:   time.Hour,
	}
	publish(t, pub, want)
	got := c.WaitCount(t, 1)[0]
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("payload %v, want %v", got.Payload, want.Payload)
	}
	if !slices.Equal(got.UserProperties, want.UserProperties) {
		t.Errorf("user properties %v, want %v (order and repeats kept)", got.UserProperties, want.UserProperties)
	}
	if got.ContentType != want.ContentType || got.ResponseTopic != want.ResponseTopic || !bytes.Equal(got.CorrelationData, want.CorrelationData) {
		t.Errorf("got content type %q, response topic %q, correlation %q; want %q, %q, %q",
			got.ContentType, got.ResponseTopic, got.CorrelationData, want.ContentType, want.ResponseTopic, want.CorrelationData)
	}
	if got.MessageExpiry <= 0 || got.MessageExpiry > time.Hour {
		t.Errorf("message expiry %v, want in (0, 1h]", got.MessageExpiry)
	}
	if v, ok := got.Property("unicode"); !ok || v != "température" {
		t.Errorf("Property(unicode) = %q, %v", v, ok)
	}
}

func (s *suite) requestResponse(t *testing.T) {
	p := prefix(t)
	server, client := s.client(t), s.client(t)
	_, err := server.Subscribe(ctxT(t), p+"/req", func(ctx context.Context, m *bus.Message) {
		_ = server.Publish(ctx, &bus.Message{
			Topic: m.ResponseTopic, Payload: append([]byte("re:"), m.Payload...),
			QoS: bus.AtLeastOnce, CorrelationData: m.CorrelationData,
		})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies := s.subscribe(t, client, p+"/resp", nil)
	for i := range 3 {
		publish(t, client, &bus.Message{Topic: p + "/req", Payload: []byte{'0' + byte(i)}, QoS: bus.AtLeastOnce,
			ResponseTopic: p + "/resp", CorrelationData: []byte{byte(i)}})
	}
	got := replies.WaitCount(t, 3)
	for _, m := range got {
		if len(m.CorrelationData) != 1 || string(m.Payload) != "re:"+string('0'+rune(m.CorrelationData[0])) {
			t.Errorf("reply %q with correlation %v does not match its request", m.Payload, m.CorrelationData)
		}
	}
}

func (s *suite) unsubscribe(t *testing.T) {
	p := prefix(t)
	b, pub := s.client(t), s.client(t)
	gone := NewCollector()
	sub, err := b.Subscribe(ctxT(t), p+"/x", gone.Handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Filter() != p+"/x" {
		t.Errorf("Filter() = %q", sub.Filter())
	}
	stays := s.subscribe(t, b, p+"/#", nil)
	publish(t, pub, &bus.Message{Topic: p + "/x", Payload: []byte("before"), QoS: bus.AtLeastOnce})
	gone.WaitCount(t, 1)
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Errorf("second Unsubscribe: %v", err)
	}
	publish(t, pub, &bus.Message{Topic: p + "/x", Payload: []byte("after"), QoS: bus.AtLeastOnce})
	publish(t, pub, &bus.Message{Topic: p + "/end", QoS: bus.AtLeastOnce})
	stays.WaitTopic(t, p+"/end")
	time.Sleep(50 * time.Millisecond)
	if n := len(gone.Messages()); n != 1 {
		t.Errorf("removed subscription got %d messages, want 1", n)
	}

	// A handler may unsubscribe itself.
	var self bus.Subscription
	ready := make(chan struct{})
	calls := NewCollector()
	self, err = b.Subscribe(ctxT(t), p+"/self", func(ctx context.Context, m *bus.Message) {
		<-ready
		calls.Handle(ctx, m)
		_ = self.Unsubscribe(ctx)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	publish(t, pub, &bus.Message{Topic: p + "/self", QoS: bus.AtLeastOnce})
	calls.WaitCount(t, 1)
}

// drain: a subscription that implements bus.Drainer hands every message
// it had buffered to its handler before Drain returns, and none after.
func (s *suite) drain(t *testing.T) {
	p := prefix(t)
	b, pub := s.client(t), s.client(t)
	release := make(chan struct{})
	got := NewCollector()
	sub, err := b.Subscribe(ctxT(t), p+"/d", func(ctx context.Context, m *bus.Message) {
		<-release
		got.Handle(ctx, m)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := sub.(bus.Drainer)
	if !ok {
		t.Log("subscriptions do not implement bus.Drainer: a consumer replaced by another may lose what its subscription had buffered")
		close(release)
		return
	}
	// A second subscription on the client, subscribed after the first:
	// once it has every message, so has the first's buffer.
	sibling := s.subscribe(t, b, p+"/d", nil)
	const n = 20
	for i := range n {
		publish(t, pub, &bus.Message{Topic: p + "/d", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce})
	}
	sibling.WaitCount(t, n)
	drained := make(chan error, 1)
	go func() { drained <- d.Drain(ctxT(t)) }()
	close(release)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if err := CheckSequence(got.Messages(), n); err != nil || len(got.Messages()) != n {
		t.Fatalf("Drain returned with %d of the %d buffered messages handled: %v", len(got.Messages()), n, err)
	}
	publish(t, pub, &bus.Message{Topic: p + "/d", Payload: []byte("after"), QoS: bus.AtLeastOnce})
	sibling.WaitCount(t, n+1)
	if len(got.Messages()) != n {
		t.Errorf("a drained subscription got a message published after Drain")
	}
}

func (s *suite) handlerPanic(t *testing.T) {
	p := prefix(t)
	b := s.client(t)
	c := NewCollector()
	_, err := b.Subscribe(ctxT(t), p, func(ctx context.Context, m *bus.Message) {
		if string(m.Payload) == "boom" {
			panic("handler failure under test")
		}
		c.Handle(ctx, m)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, &bus.Message{Topic: p, Payload: []byte("boom"), QoS: bus.AtLeastOnce})
	publish(t, b, &bus.Message{Topic: p, Payload: []byte("after"), QoS: bus.AtLeastOnce})
	if got := c.WaitCount(t, 1); string(got[0].Payload) != "after" {
		t.Errorf("got %q after a panic, want %q", got[0].Payload, "after")
	}
}

func (s *suite) close(t *testing.T) {
	p := prefix(t)
	b := s.h.New(t)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	other := s.client(t)
	running := make(chan struct{})
	release := make(chan struct{})
	finished := make(chan struct{})
	_, err := b.Subscribe(ctxT(t), p, func(ctx context.Context, m *bus.Message) {
		close(running)
		<-release
		close(finished)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A handler that unsubscribed itself still belongs to the client:
	// Close waits for it too.
	var self bus.Subscription
	ready, leaving, left := make(chan struct{}), make(chan struct{}), make(chan struct{})
	self, err = b.Subscribe(ctxT(t), p+"/leave", func(ctx context.Context, m *bus.Message) {
		<-ready
		if err := self.Unsubscribe(ctx); err != nil {
			t.Errorf("Unsubscribe from the handler: %v", err)
		}
		close(leaving)
		<-release
		close(left)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	publish(t, other, &bus.Message{Topic: p + "/leave", QoS: bus.AtLeastOnce})
	<-leaving
	publish(t, other, &bus.Message{Topic: p, QoS: bus.AtLeastOnce})
	<-running
	closed := make(chan error, 1)
	go func() { closed <- b.Close(ctxT(t)) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a handler was running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-finished:
	default:
		t.Fatal("Close returned before the running handler finished")
	}
	select {
	case <-left:
	default:
		t.Fatal("Close returned before the handler that had unsubscribed itself")
	}
	if err := b.Close(ctxT(t)); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := b.Publish(ctxT(t), &bus.Message{Topic: p}); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(ctxT(t), p, func(context.Context, *bus.Message) {}, nil); !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	// Other clients are unaffected.
	c := s.subscribe(t, other, p, nil)
	publish(t, other, &bus.Message{Topic: p, QoS: bus.AtLeastOnce})
	c.WaitCount(t, 1)
}

func (s *suite) payloadLimit(t *testing.T) {
	p := prefix(t)
	b := s.client(t)
	c := s.subscribe(t, b, p, nil)
	max := s.h.Capabilities.MaxPayload
	err := b.Publish(ctxT(t), &bus.Message{Topic: p, Payload: make([]byte, max+1), QoS: bus.AtLeastOnce})
	if !errors.Is(err, bus.ErrPayloadTooLarge) || !strings.Contains(err.Error(), strconv.Itoa(max)) {
		t.Errorf("oversize publish: got %v, want ErrPayloadTooLarge naming the limit %d", err, max)
	}
	publish(t, b, &bus.Message{Topic: p, Payload: make([]byte, max), QoS: bus.AtLeastOnce})
	if got := c.WaitCount(t, 1); len(got[0].Payload) != max {
		t.Errorf("got %d bytes, want %d", len(got[0].Payload), max)
	}
}

func (s *suite) brokerRestart(t *testing.T) {
	p := prefix(t)
	sub, pub := s.client(t), s.client(t)
	c := s.subscribe(t, sub, p, &bus.SubscribeOptions{QoS: bus.AtLeastOnce})
	const before, during, after = 50, 100, 50
	n := 0
	send := func(k int) {
		for range k {
			publish(t, pub, &bus.Message{Topic: p, Payload: []byte(strconv.Itoa(n)), QoS: bus.AtLeastOnce})
			n++
		}
	}
	send(before)
	c.WaitCount(t, before)
	s.h.StopBroker(t)
	send(during) // queued while the broker is down
	s.h.StartBroker(t)
	send(after)
	msgs := c.WaitFor(t, "every number", func(m []*bus.Message) bool { return CheckSequence(m, n) == nil })
	if err := CheckSequence(msgs, n); err != nil {
		t.Error(err)
	}
}
