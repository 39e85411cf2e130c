package mqttbus_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	b := brokertest.Start(t, &broker.Options{AutosaveInterval: time.Second})
	ctx := context.Background()
	bustest.Run(t, bustest.Harness{
		New: func(t *testing.T) bus.Bus {
			return brokertest.Connect(t, b, mqttbus.Options{MaxPayload: 4096})
		},
		Capabilities: bustest.Capabilities{BrokerRestart: true, MaxPayload: 4096},
		StopBroker: func(t *testing.T) {
			if err := b.Stop(ctx); err != nil {
				t.Fatal(err)
			}
		},
		StartBroker: func(t *testing.T) {
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestWrongCredentials(t *testing.T) {
	b := brokertest.Start(t, &broker.Options{Users: []broker.User{{Name: "gw", Password: "right"}}})
	c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{b.URL().String()}, Username: "gw", Password: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.AwaitConnection(ctx)
	if !errors.Is(err, mqttbus.ErrUnauthorized) || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("AwaitConnection with a wrong password: %v, want ErrUnauthorized naming the reason", err)
	}
	brokertest.Connect(t, b, mqttbus.Options{Username: "gw", Password: "right"})
}

func TestBadOptions(t *testing.T) {
	for name, o := range map[string]*mqttbus.Options{
		"nil":        nil,
		"no brokers": {},
		"bad url":    {Brokers: []string{"127.0.0.1:1883"}},
		"bad scheme": {Brokers: []string{"http://127.0.0.1:1883"}},
	} {
		if c, err := mqttbus.New(o); err == nil {
			c.Close(context.Background())
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}

// A full queue refuses with ErrQueueFull and keeps what it had accepted.
func TestQueueFullWhileOffline(t *testing.T) {
	b := brokertest.Start(t, nil)
	dir := t.TempDir()
	sub := brokertest.Connect(t, b, mqttbus.Options{ClientID: "sub-full"})
	got := bustest.NewCollector()
	if _, err := sub.Subscribe(context.Background(), "full/#", got.Handle, nil); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{QueueDir: dir, QueueMaxMessages: 5})
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitDisconnected(t, pub)
	for i := range 5 {
		if err := pub.Publish(context.Background(), &bus.Message{Topic: "full/t", Payload: []byte{'0' + byte(i)}, QoS: 1}); err != nil {
			t.Fatalf("publish %d while offline: %v", i, err)
		}
	}
	err := pub.Publish(context.Background(), &bus.Message{Topic: "full/t", Payload: []byte("x"), QoS: 1})
	if !errors.Is(err, bus.ErrQueueFull) || !strings.Contains(err.Error(), "bound 5") {
		t.Fatalf("6th publish: %v, want ErrQueueFull naming the bound", err)
	}
	if err := pub.Publish(context.Background(), &bus.Message{Topic: "full/t", QoS: 0}); !errors.Is(err, bus.ErrNotConnected) {
		t.Fatalf("QoS 0 while offline: %v, want ErrNotConnected", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := bustest.CheckSequence(got.WaitCount(t, 5), 5); err != nil {
		t.Error(err)
	}
}

func waitDisconnected(t *testing.T, c *mqttbus.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("client still connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Subscribe works while the broker is down, and the subscription is made
// when the link comes up.
func TestSubscribeOffline(t *testing.T) {
	b := brokertest.Start(t, nil)
	c := brokertest.Connect(t, b, mqttbus.Options{CleanStart: true, SessionExpiry: -1})
	_ = b.Stop(context.Background())
	waitDisconnected(t, c)
	got := bustest.NewCollector()
	if _, err := c.Subscribe(context.Background(), "offline/t", got.Handle, nil); err != nil {
		t.Fatalf("Subscribe while offline: %v", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{})
	deadline := time.Now().Add(10 * time.Second)
	for len(got.Messages()) == 0 && time.Now().Before(deadline) {
		_ = pub.Publish(ctx, &bus.Message{Topic: "offline/t", QoS: 1})
		time.Sleep(50 * time.Millisecond)
	}
	if len(got.Messages()) == 0 {
		t.Fatal("subscription made offline never received")
	}
}

func TestACLRefusalIsReported(t *testing.T) {
	b := brokertest.Start(t, &broker.Options{
		Users: []broker.User{{Name: "dev", Password: "p"}},
		ACL:   []broker.ACLRule{{User: "dev", Access: broker.ReadWrite, Topic: "allowed/#"}},
	})
	c := brokertest.Connect(t, b, mqttbus.Options{Username: "dev", Password: "p"})
	ctx := context.Background()
	// Mosquitto grants subscriptions outside the ACL and filters at
	// delivery, so only the publish is refused.
	err := c.Publish(ctx, &bus.Message{Topic: "secret/x", QoS: 1})
	if !errors.Is(err, bus.ErrRejected) || !strings.Contains(err.Error(), "0x87") {
		t.Errorf("publish outside the ACL: %v, want ErrRejected with reason 0x87", err)
	}
	// The refused message does not block the queue.
	got := bustest.NewCollector()
	if _, err := c.Subscribe(ctx, "allowed/#", got.Handle, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, &bus.Message{Topic: "allowed/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	got.WaitCount(t, 1)
}

// A handler whose subscription buffer is full publishes at QoS 1 on the
// same client: the acknowledgement still arrives (paho keeps reading while
// the routing of received messages waits), so nothing deadlocks.
func TestHandlerPublishesWhileItsBufferIsFull(t *testing.T) {
	b := brokertest.Start(t, nil)
	ctx := context.Background()
	c := brokertest.Connect(t, b, mqttbus.Options{})
	replies := bustest.NewCollector()
	if _, err := c.Subscribe(ctx, "rr/reply", replies.Handle, nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Subscribe(ctx, "rr/req", func(ctx context.Context, m *bus.Message) {
		time.Sleep(time.Millisecond) // slower than the publisher
		if err := c.Publish(ctx, &bus.Message{Topic: "rr/reply", Payload: m.Payload, QoS: bus.AtLeastOnce}); err != nil {
			t.Errorf("publish from the handler: %v", err)
		}
	}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce, Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{})
	const n = 300
	for i := range n {
		if err := pub.Publish(ctx, &bus.Message{Topic: "rr/req", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
	}
	if err := bustest.CheckSequence(replies.WaitCount(t, n), n); err != nil {
		t.Error(err)
	}
}

// Two clients on one queue directory would corrupt it: the second is
// refused with an error that says why.
func TestQueueDirInUse(t *testing.T) {
	dir := t.TempDir()
	a, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:1"}, QueueDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b, err := mqttbus.New(&mqttbus.Options{Brokers: []string{"mqtt://127.0.0.1:1"}, QueueDir: dir})
	if err == nil {
		b.Close(context.Background())
		t.Fatal("a second client opened a queue directory in use")
	}
	if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not say the directory is in use", err)
	}
}

// TestAckAfterHandler: a QoS 1 message is acknowledged to the broker only
// once its handler has returned. A client that goes away while the handler
// still runs gets the message again in its next session; one whose handler
// returned does not.
func TestAckAfterHandler(t *testing.T) {
	brk := brokertest.Start(t, nil)
	pub := brokertest.Connect(t, brk, mqttbus.Options{})
	publish := func(payload string) {
		t.Helper()
		if err := pub.Publish(context.Background(), &bus.Message{Topic: "ack/t", Payload: []byte(payload), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan string, 10)
	hold := make(chan struct{})
	first := ackSession(t, brk, sendAcksEvery, got, hold, false)
	publish("m1")
	receive(t, got, "m1")
	// Gone while the handler still runs: no acknowledgement.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_ = first.Close(ctx)
	cancel()
	close(hold)

	released := make(chan struct{})
	close(released)
	second := ackSession(t, brk, sendAcksEvery, got, released, true)
	receive(t, got, "m1") // sent again
	publish("m2")
	receive(t, got, "m2")
	// Both handlers have returned: Close sends both acknowledgements.
	if err := second.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	third := ackSession(t, brk, sendAcksEvery, got, released, true)
	defer third.Close(context.Background())
	// The broker sends a resumed session's unacknowledged messages before
	// new ones: m3 first means m1 and m2 were not sent again.
	publish("m3")
	receive(t, got, "m3")
}

// sendAcksEvery is paho's acknowledgement interval as New sets it.
const sendAcksEvery = 2 * time.Millisecond

// TestCloseSendsDueAcks: a message whose handler has returned is not sent
// again after Close, though paho's acknowledgement ticker had not come
// round when Close was called (here it comes every 250 ms; before Close
// waited for it, this failed every time).
func TestCloseSendsDueAcks(t *testing.T) {
	brk := brokertest.Start(t, nil)
	pub := brokertest.Connect(t, brk, mqttbus.Options{})
	got := make(chan string, 10)
	released := make(chan struct{})
	close(released)
	first := ackSession(t, brk, 250*time.Millisecond, got, released, false)
	for _, p := range []string{"m1", "m2"} {
		if err := pub.Publish(context.Background(), &bus.Message{Topic: "ack/t", Payload: []byte(p), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
		receive(t, got, p)
	}
	testenv.Eventually(t, "both handlers returned", func() bool { return mqttbus.OwedAcks(first) == 2 })
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := ackSession(t, brk, 250*time.Millisecond, got, released, true)
	defer second.Close(context.Background())
	if err := pub.Publish(context.Background(), &bus.Message{Topic: "ack/t", Payload: []byte("m3"), QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	receive(t, got, "m3")
}

// ackSession connects client "ack-test" with a session the broker keeps,
// acknowledging every ackInterval, subscribed to ack/t with a handler
// that sends what it got and waits for release. A session to resume is
// subscribed before the connection is up (so what the broker sends again
// is routed here); a new one after, with the SUBACK awaited.
func ackSession(t *testing.T, brk *broker.Broker, ackInterval time.Duration, got chan<- string, release <-chan struct{}, resume bool) *mqttbus.Client {
	t.Helper()
	c, err := mqttbus.NewWithAckInterval(&mqttbus.Options{Brokers: []string{brk.URL().String()}, ClientID: "ack-test", QueueDir: t.TempDir(),
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond}, ackInterval)
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func() {
		if _, err := c.Subscribe(context.Background(), "ack/t", func(_ context.Context, m *bus.Message) {
			got <- string(m.Payload)
			<-release
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if resume {
		subscribe()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	if !resume {
		subscribe()
	}
	return c
}

func receive(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case p := <-got:
		if p != want {
			t.Fatalf("received %q, want %q", p, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%q not received", want)
	}
}

// TestMaxPacketSize: a client takes no packet over its MaxPacketSize; the
// broker, told so in CONNECT, does not send it, and what comes after
// still arrives.
func TestMaxPacketSize(t *testing.T) {
	b := brokertest.Start(t, nil)
	small := brokertest.Connect(t, b, mqttbus.Options{MaxPacketSize: 1024})
	got := bustest.NewCollector()
	if _, err := small.Subscribe(context.Background(), "size/#", got.Handle, nil); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, mqttbus.Options{})
	for _, m := range []*bus.Message{
		{Topic: "size/big", Payload: make([]byte, 2000), QoS: bus.AtLeastOnce},
		{Topic: "size/small", Payload: []byte("fits"), QoS: bus.AtLeastOnce},
	} {
		if err := pub.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	msgs := got.WaitTopic(t, "size/small")
	for _, m := range msgs {
		if m.Topic == "size/big" {
			t.Fatalf("a %d-byte message reached a client with MaxPacketSize 1024", len(m.Payload))
		}
	}
}

// TestCloseWithAcksHeldBack: MQTT sends acknowledgements in the order
// the messages came, so a handled message's acknowledgement waits behind
// one whose handler is still running. Close waits for such an
// acknowledgement only a moment (the broker sends the message again in
// the next session) and goes on to disconnect; it used to wait for it
// until its context ended.
func TestCloseWithAcksHeldBack(t *testing.T) {
	brk := brokertest.Start(t, nil)
	pub := brokertest.Connect(t, brk, mqttbus.Options{})
	c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{brk.URL().String()}, ClientID: "held-back", QueueDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		t.Fatal(err)
	}
	release, first, second := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if _, err := c.Subscribe(ctx, "held/a", func(context.Context, *bus.Message) { close(first); <-release }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, "held/b", func(context.Context, *bus.Message) { close(second) }, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"held/a", "held/b"} {
		if err := pub.Publish(ctx, &bus.Message{Topic: topic, Payload: []byte("x"), QoS: bus.AtLeastOnce}); err != nil {
			t.Fatal(err)
		}
	}
	<-first
	<-second
	testenv.Eventually(t, "held/b's handler returned", func() bool { return mqttbus.OwedAcks(c) == 1 })
	closed := make(chan error, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		closed <- c.Close(cctx)
	}()
	// Close disconnects, then waits for held/a's handler.
	testenv.Eventually(t, "Close disconnecting with an acknowledgement held back", func() bool { return !c.Connected() })
	close(release)
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
