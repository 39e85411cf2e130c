package webconsole

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/fleet"
)

// progress is a deployment's rollout as its page shows it: counts per
// wave and in all, the targets that failed, and a chart over time.
type progress struct {
	D        fleet.Deployment
	Total    int
	Counts   counts
	Percent  int // of the instances, finished
	Waves    []waveView
	Failures []fleet.Target // the first maxFailures failed ones
	More     int            // failed ones not listed
	Chart    chart
	At       time.Time
}

// counts sorts targets three ways: succeeded; failed (failed, timed out,
// or rolled back after a failure of its own, which has a code); pending
// (not final yet). The rest (rolled back by an abort, superseded,
// cancelled) are Stopped.
type counts struct {
	Succeeded, Failed, Pending, Stopped int
}

func (c *counts) add(category string) {
	switch category {
	case "succeeded":
		c.Succeeded++
	case "failed":
		c.Failed++
	case "pending":
		c.Pending++
	default:
		c.Stopped++
	}
}

func category(t fleet.Target) string {
	switch t.State {
	case fleet.TargetSucceeded:
		return "succeeded"
	case fleet.TargetFailed, fleet.TargetTimedOut:
		return "failed"
	case fleet.TargetRolledBack:
		if t.Code != "" {
			return "failed"
		}
		return "stopped"
	case fleet.TargetSuperseded, fleet.TargetCancelled:
		return "stopped"
	}
	return "pending"
}

// waveView is one wave's line.
type waveView struct {
	N      int // 1-based
	Size   int
	Counts counts
	State  string // passed, in progress, paused, stopped, waiting
}

const maxFailures = 20

func newProgress(d fleet.Deployment, ts []fleet.Target, now time.Time) *progress {
	p := &progress{D: d, Total: len(ts), At: now}
	p.Waves = make([]waveView, len(d.Waves))
	for i, n := range d.Waves {
		p.Waves[i] = waveView{N: i + 1, Size: n, State: waveState(d, i)}
	}
	var failed []fleet.Target
	var finished []finish
	for _, t := range ts {
		cat := category(t)
		p.Counts.add(cat)
		if t.Wave >= 0 && t.Wave < len(p.Waves) {
			p.Waves[t.Wave].Counts.add(cat)
		}
		switch cat {
		case "failed":
			failed = append(failed, t)
			finished = append(finished, finish{t.Updated, false})
		case "succeeded":
			finished = append(finished, finish{t.Updated, true})
		}
	}
	slices.SortFunc(failed, func(a, b fleet.Target) int { return a.Updated.Compare(b.Updated) })
	if len(failed) > maxFailures {
		p.More = len(failed) - maxFailures
		failed = failed[:maxFailures]
	}
	p.Failures = failed
	if p.Total > 0 {
		p.Percent = (p.Total - p.Counts.Pending) * 100 / p.Total
	}
	p.Chart = newChart(d, len(ts), finished, now)
	return p
}

func waveState(d fleet.Deployment, i int) string {
	switch {
	case i < d.Wave || d.State == fleet.DeploymentSucceeded:
		return "passed"
	case i > d.Wave:
		if d.State == fleet.DeploymentRunning || d.State == fleet.DeploymentPaused {
			return "waiting"
		}
		return "not started"
	}
	switch d.State {
	case fleet.DeploymentRunning:
		return "in progress"
	case fleet.DeploymentPaused:
		return "paused"
	}
	return "stopped"
}

// chart is succeeded, failed and pending over the rollout's time, as
// SVG polylines in a 600×200 box.
type chart struct {
	Succeeded, Failed, Pending string // polyline points
	Start, End                 time.Time
	Max                        int
	Summary                    string // what the chart shows, in words
}

const (
	chartW, chartH = 600.0, 200.0
	chartPoints    = 120
)

// finish is when a target succeeded or failed.
type finish struct {
	at        time.Time
	succeeded bool
}

// newChart draws the counts of total targets over time: a target counts
// as succeeded or failed from its last update on (the time it reached
// its final state: evs), pending before.
func newChart(d fleet.Deployment, total int, evs []finish, now time.Time) chart {
	slices.SortFunc(evs, func(a, b finish) int { return a.at.Compare(b.at) })
	ch := chart{Start: d.Created, End: now, Max: total}
	if d.State != fleet.DeploymentRunning && d.State != fleet.DeploymentPaused && !d.Updated.IsZero() {
		ch.End = d.Updated
	}
	if len(evs) > 0 && evs[len(evs)-1].at.After(ch.End) {
		ch.End = evs[len(evs)-1].at
	}
	span := ch.End.Sub(ch.Start)
	if span <= 0 {
		span = time.Second
	}
	var s, f, p strings.Builder
	succ, fail, j := 0, 0, 0
	y := func(n int) float64 {
		if ch.Max == 0 {
			return chartH
		}
		return chartH - float64(n)*chartH/float64(ch.Max)
	}
	for i := 0; i <= chartPoints; i++ {
		at := ch.Start.Add(span * time.Duration(i) / chartPoints)
		for j < len(evs) && !evs[j].at.After(at) {
			if evs[j].succeeded {
				succ++
			} else {
				fail++
			}
			j++
		}
		x := float64(i) * chartW / chartPoints
		fmt.Fprintf(&s, "%.1f,%.1f ", x, y(succ))
		fmt.Fprintf(&f, "%.1f,%.1f ", x, y(fail))
		fmt.Fprintf(&p, "%.1f,%.1f ", x, y(total-succ-fail))
	}
	ch.Succeeded, ch.Failed, ch.Pending = s.String(), f.String(), p.String()
	ch.Summary = fmt.Sprintf("Over %s: %d succeeded, %d failed, %d not finished, of %d instances.", span.Round(time.Second), succ, fail, total-succ-fail, total)
	return ch
}

// diffLine is one line of a diff: kept (' '), removed ('-') or added
// ('+').
type diffLine struct {
	Op   string
	Text string
}

// maxDiffLines bounds the texts diffLines compares (its table is their
// product).
const maxDiffLines = 2000

// diffLines is the line diff of a and b (a longest common subsequence).
func diffLines(a, b string) []diffLine {
	x, y := splitLines(a), splitLines(b)
	if len(x) > maxDiffLines || len(y) > maxDiffLines {
		return []diffLine{{Op: "!", Text: fmt.Sprintf("the configurations have %d and %d lines: too long to compare here", len(x), len(y))}}
	}
	// lcs[i][j]: the longest common subsequence of x[i:] and y[j:].
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []diffLine
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out = append(out, diffLine{" ", x[i]})
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, diffLine{"-", x[i]})
			i++
		default:
			out = append(out, diffLine{"+", y[j]})
			j++
		}
	}
	return out
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}
