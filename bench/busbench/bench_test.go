package busbench

import (
	"testing"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// targets starts a Mosquitto for the benchmark and returns every target on
// it, the baseline (bare paho) first.
func targets(b *testing.B) []Target {
	brk := brokertest.Start(b, &broker.Options{DisablePersistence: true})
	u := brk.URL().String()
	return []Target{Paho(u), MQTTBus(u, b.TempDir()), Bridged(u, b.TempDir()), OneClient(u, b.TempDir()), Membus()}
}

// BenchmarkLatency: publish→deliver, one message at a time, 100 bytes.
// Reports p50-µs and p99-µs.
func BenchmarkLatency(b *testing.B) {
	for _, t := range targets(b) {
		for _, qos := range []byte{0, 1} {
			b.Run(t.Name+"/qos"+string('0'+qos), func(b *testing.B) {
				p50, p99, err := Latency(t, qos, max(b.N, 100))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(p50.Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(p99.Nanoseconds())/1e3, "p99-µs")
			})
		}
	}
}

// BenchmarkThroughput: one publisher as fast as it can, 100 bytes.
// Reports msg/s.
func BenchmarkThroughput(b *testing.B) {
	for _, t := range targets(b) {
		for _, qos := range []byte{0, 1} {
			b.Run(t.Name+"/qos"+string('0'+qos), func(b *testing.B) {
				rate, delivered, err := Throughput(t, qos, max(b.N, 1000))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(rate, "msg/s")
				b.ReportMetric(delivered*100, "%delivered")
			})
		}
	}
}

// BenchmarkMembusDeliveries is the membus target on its own: QoS 0
// deliveries per second to one subscriber (target ≥ 1,000,000).
func BenchmarkMembusDeliveries(b *testing.B) {
	rate, delivered, err := Throughput(Membus(), 0, max(b.N, 100_000))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate, "msg/s")
	b.ReportMetric(delivered*100, "%delivered")
}
