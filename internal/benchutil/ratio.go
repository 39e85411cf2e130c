package benchutil

import (
	"testing"
	"time"
)

// Pair times a path and the floor it stands on, interleaved call by call so
// that both see the same machine: rounds of floor then path, 50 of each to
// warm up, then max(b.N, minRuns) timed. It reports their p50s in µs
// (floor-p50-µs, p50-µs) and returns them. An error fails the benchmark.
func Pair(b *testing.B, minRuns int, floor, path func() error) (floorP50, pathP50 time.Duration) {
	for range 50 {
		if err := floor(); err != nil {
			b.Fatalf("floor: %v", err)
		}
		if err := path(); err != nil {
			b.Fatal(err)
		}
	}
	n := max(b.N, minRuns)
	fs, ps := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
	b.ResetTimer()
	for range n {
		t0 := time.Now()
		if err := floor(); err != nil {
			b.Fatalf("floor: %v", err)
		}
		t1 := time.Now()
		if err := path(); err != nil {
			b.Fatal(err)
		}
		fs, ps = append(fs, t1.Sub(t0)), append(ps, time.Since(t1))
	}
	b.StopTimer()
	floorP50, pathP50 = Median(fs), Median(ps)
	b.ReportMetric(micros(floorP50), "floor-p50-µs")
	b.ReportMetric(micros(pathP50), "p50-µs")
	return floorP50, pathP50
}

// Regression is how much worse than its recorded figure a checked ratio
// may get before CheckRatio fails the benchmark.
const Regression = 1.2

// CheckRatio reports got under unit and fails the benchmark, loudly, when
// it is more than Regression times recorded: the figure docs/PERFORMANCE.md
// gives for this path in this machine mode. A ratio, measured against a
// floor in the same run, holds across machines of a kind far better than a
// time does.
func CheckRatio(b *testing.B, unit string, got, recorded float64) {
	b.Helper()
	b.ReportMetric(got, unit)
	if limit := recorded * Regression; got > limit {
		b.Errorf("REGRESSION: %s is %.3g, recorded %.3g: more than %.0f%% worse (limit %.3g)", unit, got, recorded, (Regression-1)*100, limit)
	}
}
