package trigger_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/brokertest"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/mqttcall"
	"github.com/edgekit/edgekit/trigger/timer"
)

// hostWith deploys one in-process function "f" running fn.
func hostWith(b *testing.B, fn function.HandlerFunc) *function.Host {
	b.Helper()
	h, err := function.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	_ = h.Register("f", fn)
	if err := h.Deploy(context.Background(), function.Spec{Name: "f", Version: "1", Runtime: function.RuntimeGo, Handler: "f", MaxInstances: 8, Mode: function.Continuous, MinInstances: 1}); err != nil {
		b.Fatal(err)
	}
	return h
}

// quantiles reports p50, p99 and max of samples in microseconds.
func quantiles(b *testing.B, prefix string, samples []time.Duration) {
	slices.Sort(samples)
	n := len(samples)
	if n == 0 {
		b.Fatalf("%s: no samples", prefix)
	}
	b.ReportMetric(float64(samples[n/2].Microseconds()), prefix+"p50-µs")
	b.ReportMetric(float64(samples[n*99/100].Microseconds()), prefix+"p99-µs")
	b.ReportMetric(float64(samples[n-1].Microseconds()), prefix+"max-µs")
}

// BenchmarkTimerLateness: how late a 100 ms interval trigger fires while
// 1,000 other timer triggers are registered, against a time.Ticker of the
// same interval in the same run (the baseline). It runs for
// EDGEKIT_TIMER_BENCH seconds (default 30; target p99 ≤ 2 ms), whatever
// b.N. Reports p50, p99 and max lateness in µs.
func BenchmarkTimerLateness(b *testing.B) {
	seconds := 30
	if s, err := strconv.Atoi(os.Getenv("EDGEKIT_TIMER_BENCH")); err == nil && s > 0 {
		seconds = s
	}
	var mu sync.Mutex
	var late []time.Duration
	h := hostWith(b, func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		scheduled, err := time.Parse(time.RFC3339Nano, req.Source["scheduled"])
		if err == nil && req.Source["trigger"] == "measured" {
			mu.Lock()
			late = append(late, time.Since(scheduled))
			mu.Unlock()
		}
		return invoke.Response{}, nil
	})
	sched, err := timer.NewScheduler(nil)
	if err != nil {
		b.Fatal(err)
	}
	set := trigger.NewSet(h, map[string]trigger.Factory{timer.Type: sched.Factory()}, nil)
	defer func() { _ = set.Close(context.Background()); _ = sched.Close(context.Background()) }()
	for i := range 1000 {
		if err := set.Put(context.Background(), trigger.Config{Name: "idle-" + strconv.Itoa(i), Type: timer.Type, Function: "f", Params: json.RawMessage(`{"every": "1h"}`)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	if err := set.Put(context.Background(), trigger.Config{Name: "measured", Type: timer.Type, Function: "f", Params: json.RawMessage(`{"every": "100ms"}`)}); err != nil {
		b.Fatal(err)
	}
	var base []time.Duration
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	end := time.After(time.Duration(seconds) * time.Second)
loop:
	for k := 1; ; k++ {
		select {
		case <-tick.C:
			base = append(base, time.Since(start.Add(time.Duration(k)*100*time.Millisecond)))
		case <-end:
			break loop
		}
	}
	tick.Stop()
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	quantiles(b, "trigger-", late)
	quantiles(b, "ticker-", base)
}

// BenchmarkMessageLatency: a QoS 1 message published by an MQTT client to
// the local Mosquitto, until the function runs ("trigger"), against the
// same message until a plain subscription's handler on the same bus runs
// ("bus", the baseline; target trigger ≤ 1.3× bus). Reports p50 and p99
// in µs.
func BenchmarkMessageLatency(b *testing.B) {
	brk := brokertest.Start(b, nil)
	pub := brokertest.Connect(b, brk, mqttbus.Options{})
	gw := brokertest.Connect(b, brk, mqttbus.Options{})
	arrived := make(chan time.Time, 1)
	var armed atomic.Bool
	note := func() {
		if armed.CompareAndSwap(true, false) {
			arrived <- time.Now()
		}
	}
	h := hostWith(b, func(context.Context, invoke.Request) (invoke.Response, error) { note(); return invoke.Response{}, nil })
	set := trigger.NewSet(h, map[string]trigger.Factory{message.Type: message.Factory(gw, nil)}, nil)
	defer set.Close(context.Background())
	measure := func(b *testing.B, topic string) {
		samples := make([]time.Duration, 0, b.N)
		payload := []byte(`{"celsius":21.5}`)
		for i := range max(b.N, 200) + 20 {
			armed.Store(true)
			start := time.Now()
			if err := pub.Publish(context.Background(), &bus.Message{Topic: topic, Payload: payload, QoS: bus.AtLeastOnce}); err != nil {
				b.Fatal(err)
			}
			at := <-arrived
			if i >= 20 { // warm-up
				samples = append(samples, at.Sub(start))
			}
		}
		quantiles(b, "", samples)
	}
	b.Run("bus", func(b *testing.B) {
		sub, err := gw.Subscribe(context.Background(), "bench/bus", func(context.Context, *bus.Message) { note() }, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe(context.Background())
		measure(b, "bench/bus")
	})
	b.Run("trigger", func(b *testing.B) {
		if err := set.Put(context.Background(), trigger.Config{Name: "bench", Type: message.Type, Function: "f", Params: json.RawMessage(`{"filter": "bench/trigger"}`)}); err != nil {
			b.Fatal(err)
		}
		measure(b, "bench/trigger")
	})
}

// BenchmarkMessageThroughput: QoS 1 messages per second from the
// in-process bus into an in-process function, one at a time and with
// concurrency 4 over 8 topics.
func BenchmarkMessageThroughput(b *testing.B) {
	for _, concurrency := range []int{1, 4} {
		b.Run("concurrency-"+strconv.Itoa(concurrency), func(b *testing.B) {
			mb := membus.New(nil)
			defer mb.Close(context.Background())
			var done atomic.Int64
			h := hostWith(b, func(context.Context, invoke.Request) (invoke.Response, error) {
				done.Add(1)
				return invoke.Response{}, nil
			})
			set := trigger.NewSet(h, map[string]trigger.Factory{message.Type: message.Factory(mb, nil)}, nil)
			defer set.Close(context.Background())
			params := `{"filter": "tp/+", "concurrency": ` + strconv.Itoa(concurrency) + `}`
			if err := set.Put(context.Background(), trigger.Config{Name: "tp", Type: message.Type, Function: "f", Params: json.RawMessage(params)}); err != nil {
				b.Fatal(err)
			}
			n := max(b.N, 10000)
			payload := []byte(`{"celsius":21.5}`)
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				if err := mb.Publish(context.Background(), &bus.Message{Topic: "tp/" + strconv.Itoa(i%8), Payload: payload, QoS: bus.AtLeastOnce}); err != nil {
					b.Fatal(err)
				}
			}
			for done.Load() < int64(n) {
				time.Sleep(100 * time.Microsecond)
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkRequestResponse: an MQTT v5 request to a function through the
// local Mosquitto (trigger/mqttcall; "call"), against a plain responder
// that publishes the payload back on the response topic ("echo", the
// baseline), both on the gateway's mqttbus client. Reports p50 and p99 in
// µs.
func BenchmarkRequestResponse(b *testing.B) {
	brk := brokertest.Start(b, nil)
	client := brokertest.Connect(b, brk, mqttbus.Options{})
	gw := brokertest.Connect(b, brk, mqttbus.Options{})
	h := hostWith(b, func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		return invoke.Response{Payload: req.Payload}, nil
	})
	srv, err := mqttcall.Serve(context.Background(), gw, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close(context.Background())
	echo, err := gw.Subscribe(context.Background(), "echo/request", func(ctx context.Context, m *bus.Message) {
		_ = gw.Publish(ctx, &bus.Message{Topic: m.ResponseTopic, Payload: m.Payload, QoS: bus.AtLeastOnce, CorrelationData: m.CorrelationData})
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer echo.Unsubscribe(context.Background())
	replies := make(chan struct{}, 1)
	rsub, err := client.Subscribe(context.Background(), "bench/replies", func(context.Context, *bus.Message) { replies <- struct{}{} }, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer rsub.Unsubscribe(context.Background())
	measure := func(b *testing.B, topic string) {
		samples := make([]time.Duration, 0, b.N)
		for i := range max(b.N, 200) + 20 {
			start := time.Now()
			err := client.Publish(context.Background(), &bus.Message{Topic: topic, Payload: []byte(`{"celsius":21.5}`), QoS: bus.AtLeastOnce,
				ResponseTopic: "bench/replies", CorrelationData: []byte(strconv.Itoa(i))})
			if err != nil {
				b.Fatal(err)
			}
			<-replies
			if i >= 20 {
				samples = append(samples, time.Since(start))
			}
		}
		quantiles(b, "", samples)
	}
	b.Run("echo", func(b *testing.B) { measure(b, "echo/request") })
	b.Run("call", func(b *testing.B) { measure(b, "functions/f/invoke") })
}
