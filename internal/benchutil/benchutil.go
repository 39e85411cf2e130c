// Package benchutil is what the benchmarks share: timing a call many times
// and reporting medians and percentiles, which hold up on the shared,
// noisy machines the figures are taken on better than means do.
package benchutil

import (
	"slices"
	"testing"
	"time"
)

// ReportLatency calls call 50 times to warm up, then max(b.N, minRuns)
// times timed, and reports the p50 and p99 in µs (p50-µs, p99-µs). An
// error from call fails the benchmark.
func ReportLatency(b *testing.B, minRuns int, call func() error) {
	for range 50 {
		if err := call(); err != nil {
			b.Fatal(err)
		}
	}
	n := max(b.N, minRuns)
	samples := make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		start := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(micros(Percentile(samples, 50)), "p50-µs")
	b.ReportMetric(micros(Percentile(samples, 99)), "p99-µs")
}

// Percentile returns the p-th percentile (0–100) of d, leaving d as it
// is; 0 for none.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*p/100)]
}

// Median is the 50th percentile of d.
func Median(d []time.Duration) time.Duration { return Percentile(d, 50) }

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
