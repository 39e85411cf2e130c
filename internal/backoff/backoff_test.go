package backoff

import (
	"testing"
	"time"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	p := Policy{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond, Jitter: 0.1}
	for attempt, base := range []time.Duration{10, 20, 40, 80, 80, 80} {
		base *= time.Millisecond
		d := p.Delay(attempt)
		if d < base*9/10 || d > base*11/10 {
			t.Errorf("Delay(%d) = %v, want %v ±10%%", attempt, d, base)
		}
	}
	if d := p.Delay(1 << 30); d > 88*time.Millisecond {
		t.Errorf("huge attempt: %v", d)
	}
	if d := (Policy{}).Delay(0); d < 80*time.Millisecond || d > 120*time.Millisecond {
		t.Errorf("zero policy first delay %v", d)
	}
}
