// Package busbench measures the message bus: publish→deliver latency and
// throughput of membus, of mqttbus on Mosquitto, of a bare paho.golang
// client on the same Mosquitto (the baseline), and of the bridge. The same
// scenarios back the `go test -bench` benchmarks in this package and the
// harness in cmd/busbench, which interleaves rounds and prints medians and
// ratios against the baseline measured in the same run (docs/PERFORMANCE.md).
package busbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
)

// PayloadSize is the message size of every scenario.
const PayloadSize = 100

// Pair is a connected publisher and subscriber on one topic.
type Pair struct {
	Publish func(ctx context.Context, payload []byte) error
	Close   func()
}

// Target is one system under test. Open connects a publisher and a
// subscriber on topic at qos; onMsg is called for each delivery.
type Target struct {
	Name string
	Open func(topic string, qos byte, onMsg func()) (*Pair, error)
}

var errTimeout = errors.New("no message was delivered")

// Latency publishes n messages one at a time, each after the previous was
// delivered, and returns the publish→deliver latencies' p50 and p99.
func Latency(t Target, qos byte, n int) (p50, p99 time.Duration, err error) {
	got := make(chan struct{}, 1)
	p, err := t.Open(fmt.Sprintf("bench/latency/%s/%d", t.Name, time.Now().UnixNano()), qos, func() {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	ctx := context.Background()
	payload := make([]byte, PayloadSize)
	samples := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := p.Publish(ctx, payload); err != nil {
			return 0, 0, err
		}
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			return 0, 0, fmt.Errorf("%s: a message was not delivered within 10 s", t.Name)
		}
		samples = append(samples, time.Since(start))
	}
	slices.Sort(samples)
	return samples[len(samples)/2], samples[len(samples)*99/100], nil
}

// Throughput publishes n messages as fast as one publisher can and returns
// deliveries per second, timed from the first publish to the last
// delivery, and the fraction of messages delivered (QoS 0 may lose some when
// a side cannot keep up; that is part of what is measured).
func Throughput(t Target, qos byte, n int) (rate, delivered float64, err error) {
	var count, last atomic.Int64
	p, err := t.Open(fmt.Sprintf("bench/throughput/%s/%d", t.Name, time.Now().UnixNano()), qos, func() {
		count.Add(1)
		last.Store(time.Now().UnixNano())
	})
	if err != nil {
		return 0, 0, err
	}
	defer p.Close()
	ctx := context.Background()
	payload := make([]byte, PayloadSize)
	start := time.Now()
	for range n {
		if err := p.Publish(ctx, payload); err != nil {
			return 0, 0, err
		}
	}
	// Wait for every delivery, or for deliveries to stop for 500 ms.
	deadline := time.Now().Add(60 * time.Second)
	for seen := int64(-1); count.Load() < int64(n); {
		time.Sleep(500 * time.Millisecond)
		c := count.Load()
		if c == seen || time.Now().After(deadline) {
			break
		}
		seen = c
	}
	c := count.Load()
	if c == 0 {
		return 0, 0, fmt.Errorf("%s: %w", t.Name, errTimeout)
	}
	elapsed := time.Duration(last.Load() - start.UnixNano())
	return float64(c) / elapsed.Seconds(), float64(c) / float64(n), nil
}

// subBuffer is large so that the benchmarks measure the bus, not drops.
const subBuffer = 1 << 16

func subscribe(b bus.Bus, topic string, qos byte, onMsg func()) error {
	_, err := b.Subscribe(context.Background(), topic, func(context.Context, *bus.Message) { onMsg() },
		&bus.SubscribeOptions{QoS: bus.QoS(qos), Buffer: subBuffer})
	return err
}

func publisher(b bus.Bus, topic string, qos byte) func(context.Context, []byte) error {
	return func(ctx context.Context, payload []byte) error {
		return b.Publish(ctx, &bus.Message{Topic: topic, Payload: payload, QoS: bus.QoS(qos)})
	}
}

// Membus is the in-process bus.
func Membus() Target {
	return Target{Name: "membus", Open: func(topic string, qos byte, onMsg func()) (*Pair, error) {
		b := membus.New(nil)
		if err := subscribe(b, topic, qos, onMsg); err != nil {
			return nil, err
		}
		return &Pair{Publish: publisher(b, topic, qos), Close: func() { _ = b.Close(context.Background()) }}, nil
	}}
}

// MQTTBus is mqttbus on the broker at brokerURL, one client publishing and
// one subscribing. queueDir holds the publisher's outbound queue.
func MQTTBus(brokerURL, queueDir string) Target {
	return Target{Name: "mqttbus", Open: func(topic string, qos byte, onMsg func()) (*Pair, error) {
		sub, pub, err := dialPair(brokerURL, queueDir, topic, qos, onMsg)
		if err != nil {
			return nil, err
		}
		return &Pair{Publish: publisher(pub, topic, qos), Close: func() {
			_ = pub.Close(context.Background())
			_ = sub.Close(context.Background())
		}}, nil
	}}
}

// OneClient is one mqttbus client that publishes and subscribes on the
// same connection, as a function answering requests does: the broker's
// delivery and its acknowledgement of the publish share the connection.
func OneClient(brokerURL, queueDir string) Target {
	return Target{Name: "one-client", Open: func(topic string, qos byte, onMsg func()) (*Pair, error) {
		c, err := dialBus(brokerURL, queueDir)
		if err != nil {
			return nil, err
		}
		if err := subscribe(c, topic, qos, onMsg); err != nil {
			_ = c.Close(context.Background())
			return nil, err
		}
		return &Pair{Publish: publisher(c, topic, qos), Close: func() { _ = c.Close(context.Background()) }}, nil
	}}
}

// Bridged publishes on an in-process bus that a bridge forwards to the
// broker at brokerURL through mqttbus; the subscriber is an mqttbus client
// of the broker. Compare it with MQTTBus for what the bridge adds.
func Bridged(brokerURL, queueDir string) Target {
	return Target{Name: "bridged", Open: func(topic string, qos byte, onMsg func()) (*Pair, error) {
		sub, up, err := dialPair(brokerURL, queueDir, topic, qos, onMsg)
		if err != nil {
			return nil, err
		}
		ctx := context.Background()
		local := membus.New(nil)
		br, err := bridge.New(ctx, local, up, &bridge.Options{Out: []bridge.Route{{Filter: topic, QoS: bus.QoS(qos)}}, Buffer: subBuffer})
		if err != nil {
			_ = errors.Join(local.Close(ctx), up.Close(ctx), sub.Close(ctx))
			return nil, err
		}
		return &Pair{Publish: publisher(local, topic, qos), Close: func() {
			_ = errors.Join(br.Close(ctx), local.Close(ctx), up.Close(ctx), sub.Close(ctx))
		}}, nil
	}}
}

// dialPair connects a subscriber on topic and a publisher with its queue
// in queueDir.
func dialPair(brokerURL, queueDir, topic string, qos byte, onMsg func()) (sub, pub *mqttbus.Client, err error) {
	sub, err = dialBus(brokerURL, "")
	if err != nil {
		return nil, nil, err
	}
	if err := subscribe(sub, topic, qos, onMsg); err != nil {
		_ = sub.Close(context.Background())
		return nil, nil, err
	}
	pub, err = dialBus(brokerURL, queueDir)
	if err != nil {
		_ = sub.Close(context.Background())
		return nil, nil, err
	}
	return sub, pub, nil
}

func dialBus(brokerURL, queueDir string) (*mqttbus.Client, error) {
	c, err := mqttbus.New(&mqttbus.Options{Brokers: []string{brokerURL}, QueueDir: queueDir, CleanStart: true, SessionExpiry: -1})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnection(ctx); err != nil {
		_ = c.Close(context.Background())
		return nil, err
	}
	return c, nil
}

// Paho is the baseline: two bare paho.golang clients (no autopaho, no
// queue) on the broker at brokerURL.
func Paho(brokerURL string) Target {
	return Target{Name: "paho", Open: func(topic string, qos byte, onMsg func()) (*Pair, error) {
		ctx := context.Background()
		sub, err := dialPaho(ctx, brokerURL, func(paho.PublishReceived) (bool, error) { onMsg(); return true, nil })
		if err != nil {
			return nil, err
		}
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}}); err != nil {
			return nil, err
		}
		pub, err := dialPaho(ctx, brokerURL, nil)
		if err != nil {
			return nil, err
		}
		return &Pair{
			Publish: func(ctx context.Context, payload []byte) error {
				_, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
				return err
			},
			Close: func() {
				_ = pub.Disconnect(&paho.Disconnect{})
				_ = sub.Disconnect(&paho.Disconnect{})
			},
		}, nil
	}}
}

func dialPaho(ctx context.Context, brokerURL string, onMsg func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onMsg != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onMsg}
	}
	c := paho.NewClient(cfg)
	if _, err := c.Connect(ctx, &paho.Connect{KeepAlive: 30, CleanStart: true, ClientID: fmt.Sprintf("paho-bench-%d", time.Now().UnixNano())}); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}
