package benchutil

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Rounds is how many parts Pair splits its timed calls into: the ratio it
// gives is the median of the parts', so that a stretch of the run in
// which the machine changed mode moves it less.
const Rounds = 5

// Paired is what Pair measured: the p50 of the floor and of the path over
// all the timed calls, and in each of the Rounds parts.
type Paired struct {
	Floor, Path   time.Duration
	Floors, Paths [Rounds]time.Duration
}

// Ratio is the median over the rounds of the path's p50 over the floor's.
func (p Paired) Ratio() float64 {
	var r [Rounds]float64
	for i := range r {
		r[i] = float64(p.Paths[i]) / float64(p.Floors[i])
	}
	slices.Sort(r[:])
	return r[Rounds/2]
}

// String gives each round's p50s, floor/path in µs, for a failure's log.
func (p Paired) String() string {
	var b strings.Builder
	b.WriteString("rounds' p50 floor/path µs:")
	for i := range Rounds {
		fmt.Fprintf(&b, " %.1f/%.1f", micros(p.Floors[i]), micros(p.Paths[i]))
	}
	return b.String()
}

// Extra is the median over the rounds of the path's p50 less the floor's.
func (p Paired) Extra() time.Duration {
	var d [Rounds]time.Duration
	for i := range d {
		d[i] = p.Paths[i] - p.Floors[i]
	}
	return Median(d[:])
}

// Pair times a path and the floor it stands on, interleaved call by call so
// that both see the same machine: floor then path, 50 of each to warm up,
// then max(b.N, minRuns) of each timed (at least Rounds). It reports their
// p50s in µs (floor-p50-µs, p50-µs). An error fails the benchmark.
func Pair(b *testing.B, minRuns int, floor, path func() error) Paired {
	for range 50 {
		if err := floor(); err != nil {
			b.Fatalf("floor: %v", err)
		}
		if err := path(); err != nil {
			b.Fatal(err)
		}
	}
	n := max(b.N, minRuns, Rounds)
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
	p := Paired{Floor: Median(fs), Path: Median(ps)}
	for i := range Rounds {
		lo, hi := i*n/Rounds, (i+1)*n/Rounds
		p.Floors[i], p.Paths[i] = Median(fs[lo:hi]), Median(ps[lo:hi])
	}
	b.ReportMetric(micros(p.Floor), "floor-p50-µs")
	b.ReportMetric(micros(p.Path), "p50-µs")
	return p
}

// Regression is how much worse than its recorded figure a checked ratio
// may get before CheckRatio fails the benchmark.
const Regression = 1.2

// CheckRatio reports got under unit and fails the benchmark, loudly, when
// it is more than Regression times recorded: the figure docs/PERFORMANCE.md
// gives for this path in this machine mode. A ratio, measured against a
// floor in the same run, holds across machines of a kind far better than a
// time does. It reports whether got is within the limit.
func CheckRatio(b *testing.B, unit string, got, recorded float64) bool {
	b.Helper()
	b.ReportMetric(got, unit)
	if limit := recorded * Regression; got > limit {
		b.Errorf("REGRESSION: %s is %.3g, recorded %.3g: more than %.0f%% worse (limit %.3g)", unit, got, recorded, (Regression-1)*100, limit)
		return false
	}
	return true
}
