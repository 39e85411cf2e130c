package fncall_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

// BenchmarkPublish: a message published to an in-process subscriber on
// membus, per message, from Go inside the gateway (in-process: the
// baseline, the same message a function's publish makes) and from a
// function in each runtime through the gateway API (one invocation
// publishing b.N messages, each call answered before the next;
// go/8-in-flight: eight goroutines of the function publishing at once,
// QoS 0; …/no-wait: without waiting for each answer, and one flush). QoS
// 1: membus drops nothing. Target for the native protocol: ≤ 2× the
// baseline.
func BenchmarkPublish(b *testing.B) {
	rts := append([]runtime{{name: "in-process"}}, runtimes(b)...)
	inFlight := rts[1]
	inFlight.name = "go/8-in-flight"
	rts = append(rts, inFlight)
	for _, rt := range rts[1:4] {
		rt.name += "/no-wait"
		rts = append(rts, rt)
	}
	for _, rt := range rts {
		b.Run(rt.name, func(b *testing.B) {
			bs := membus.New(nil)
			b.Cleanup(func() { _ = bs.Close(context.Background()) })
			var got atomic.Int64
			all := make(chan struct{})
			want := int64(b.N)
			if rt.name == inFlight.name {
				want = int64(8 * ((b.N + 7) / 8)) // b.N rounded up to eight goroutines' shares
			}
			if _, err := bs.Subscribe(context.Background(), "outputs/bench/x", func(context.Context, *bus.Message) {
				if got.Add(1) == want {
					close(all)
				}
			}, &bus.SubscribeOptions{QoS: bus.AtLeastOnce}); err != nil {
				b.Fatal(err)
			}
			if rt.runtime == "" {
				// The message a function's publish puts on the bus.
				ctx := context.Background()
				props := []bus.UserProperty{{Key: "from", Value: "native"}, {Key: "edgekit-function", Value: "bench"}}
				b.ResetTimer()
				for i := range b.N {
					if err := bs.Publish(ctx, &bus.Message{Topic: "outputs/bench/x", Payload: []byte(strconv.Itoa(i)), QoS: bus.AtLeastOnce, UserProperties: props}); err != nil {
						b.Fatal(err)
					}
				}
				<-all
				return
			}
			g := newGateway(b, bs)
			g.rt = rt
			g.deploySpec(b, "bench", function.Permissions{}, "", time.Minute)
			g.call(b, "bench", `{"call":"publish","topic":"outputs/bench/warm"}`)
			b.ResetTimer()
			switch {
			case rt.name == inFlight.name:
				if _, e := g.call(b, "bench", `{"call":"concurrent","topic":"outputs/bench/x","repeat":`+strconv.Itoa((b.N+7)/8)+`}`); e != nil {
					b.Fatal(e)
				}
			case strings.HasSuffix(rt.name, "/no-wait"):
				if _, e := g.call(b, "bench", `{"call":"publish","topic":"outputs/bench/x","qos":1,"noWait":true,"repeat":`+strconv.Itoa(b.N)+`}`); e != nil {
					b.Fatal(e)
				}
			default:
				if _, e := g.call(b, "bench", `{"call":"publish","topic":"outputs/bench/x","qos":1,"repeat":`+strconv.Itoa(b.N)+`}`); e != nil {
					b.Fatal(e)
				}
			}
			<-all
		})
	}
}

// BenchmarkDeviceGet: one property read of a simulated device, from Go
// inside the gateway (the device manager's Get: the baseline) and from a
// function in each runtime (one invocation reading b.N times). Target for
// the native protocol: ≤ 2× the baseline.
func BenchmarkDeviceGet(b *testing.B) {
	for _, rt := range append([]runtime{{name: "in-process"}}, runtimes(b)...) {
		b.Run(rt.name, func(b *testing.B) {
			bs := membus.New(nil)
			b.Cleanup(func() { _ = bs.Close(context.Background()) })
			g := newGateway(b, bs)
			if rt.runtime == "" {
				ctx := context.Background()
				b.ResetTimer()
				for range b.N {
					if _, err := g.devices.Get(ctx, "boiler-1", []string{"setpoint"}); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			g.rt = rt
			g.deploySpec(b, "bench", function.Permissions{Devices: []string{"boiler-1"}}, "", time.Minute)
			if _, err := g.host.Invoke(context.Background(), "bench", invoke.Request{Payload: []byte(`{"call":"get","device":"boiler-1","ids":["setpoint"]}`)}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			if _, e := g.call(b, "bench", `{"call":"get","device":"boiler-1","ids":["setpoint"],"repeat":`+strconv.Itoa(b.N)+`}`); e != nil {
				b.Fatal(e)
			}
		})
	}
}
