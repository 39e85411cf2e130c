package benchutil

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3}
	if got := Median(d); got != 3 {
		t.Errorf("median %v, want 3", got)
	}
	if got := Percentile(d, 99); got != 5 {
		t.Errorf("p99 %v, want 5", got)
	}
	if got := Percentile(d, 0); got != 1 {
		t.Errorf("p0 %v, want 1", got)
	}
	if d[0] != 5 {
		t.Error("Percentile sorted its argument")
	}
	if got := Median(nil); got != 0 {
		t.Errorf("median of none %v", got)
	}
}

func TestPairedRatioAndExtra(t *testing.T) {
	p := Paired{Floors: [Rounds]time.Duration{10, 10, 10, 10, 10}, Paths: [Rounds]time.Duration{15, 100, 12, 20, 14}}
	if r := p.Ratio(); r != 1.5 {
		t.Errorf("ratio %v, want the median round's 1.5", r)
	}
	if e := p.Extra(); e != 5 {
		t.Errorf("extra %v, want 5", e)
	}
}
