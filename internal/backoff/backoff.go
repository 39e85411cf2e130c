// Package backoff computes capped exponential retry delays with jitter, for
// every part of edgekit that restarts or reconnects something.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: Min, then doubling up to Max, each delay
// randomised by ±Jitter (a fraction, 0 to 1). The zero value means 100 ms to
// 30 s with 20% jitter.
type Policy struct {
	Min, Max time.Duration
	Jitter   float64
}

// Delay returns the wait before retry number attempt (0 is the first retry).
func (p Policy) Delay(attempt int) time.Duration {
	lo, hi, j := p.Min, p.Max, p.Jitter
	if lo <= 0 {
		lo = 100 * time.Millisecond
	}
	if hi <= 0 {
		hi = 30 * time.Second
	}
	if hi < lo {
		hi = lo
	}
	if j <= 0 || j > 1 {
		j = 0.2
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	f := 1 + j*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}
