package function

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// durationBounds are the upper bounds, in seconds, of the invocation
// duration histogram (Histogram.Bounds gives a copy).
var durationBounds = [...]float64{0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts durations into DurationBuckets (plus +Inf) without
// locks or allocations.
type histogram struct {
	counts [len(durationBounds) + 1]atomic.Uint64
	sumNS  atomic.Int64
	n      atomic.Uint64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(durationBounds) && s > durationBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
	h.n.Add(1)
}

// Histogram is a snapshot of invocation durations.
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds, from 0.5 ms to
	// 30 s; Counts has one more entry, for durations above the last bound.
	// The counts are per bucket, not cumulative.
	Bounds []float64
	Counts []uint64
	Sum    time.Duration
	Count  uint64
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: slices.Clone(durationBounds[:]), Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sumNS.Load()), Count: h.n.Load()}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
	}
	return out
}

// procStats reads a process's CPU time and resident memory from /proc.
func procStats(pid int) (cpu time.Duration, rss int64) {
	if pid <= 0 {
		return 0, 0
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// Fields after the command name (which may hold spaces): utime
		// and stime are the 12th and 13th, in clock ticks (100 a second
		// on Linux).
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rss = pages * int64(os.Getpagesize())
		}
	}
	return cpu, rss
}
