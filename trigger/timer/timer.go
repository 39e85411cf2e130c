// Package timer is the time trigger: a function runs at a fixed interval
// ("every": "1m"), on a cron schedule with seconds and a time zone, or once
// at a time point (RFC 3339). Cron expressions are read and followed by
// github.com/go-co-op/gocron/v2's parser; each trigger keeps one timer on the
// Scheduler's clock, armed for its next tick, so an event names the exact time
// it was scheduled for. One Scheduler serves all of a gateway's timer triggers.
//
// A tick the clock has passed without it firing (the machine slept, the clock
// was set forward) is skipped, not made up; a clock set back starts the
// schedule again from the new time.
//
// Params (trigger.Config.Params), exactly one of every, cron and at:
//
//	{"every": "30s"}
//	{"cron": "0 */5 * * * *", "timezone": "Europe/Berlin"}
//	{"at": "2026-12-01T08:00:00Z"}
//
// and optionally "overlap": "skip" (default: a tick while the previous run
// still runs is skipped) or "queue" (one tick waits and runs after it);
// "missed": "skip" (default) or "run-once" (at start, if a tick was missed
// while the gateway was down, run once at once; the last run time is kept
// in the Scheduler's state directory); "data": any JSON, passed along in
// the event; "event": any JSON, sent as the event itself instead.
//
// The event (the invocation's payload) is JSON:
//
//	{"trigger": "name", "scheduled": "<RFC 3339>", "fired": "<RFC 3339>", "missed": true, "data": ...}
//
// unless "event" replaces it; the invocation's Source has type "timer",
// trigger, scheduled and fired either way.
package timer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"

	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/internal/safefile"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
)

// Type is the trigger type this package makes.
const Type = "timer"

// ErrClosed is returned for a trigger started on a closed Scheduler.
var ErrClosed = errors.New("the timer scheduler is closed")

// Params are a timer trigger's parameters (see the package doc).
type Params struct {
	Every    string          `json:"every,omitempty"`
	Cron     string          `json:"cron,omitempty"`
	TimeZone string          `json:"timezone,omitempty"`
	At       string          `json:"at,omitempty"`
	Overlap  string          `json:"overlap,omitempty"`
	Missed   string          `json:"missed,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	Event    json.RawMessage `json:"event,omitempty"`
}

// Options configure a Scheduler. The zero value is usable.
type Options struct {
	// StateDir keeps each trigger's last run time, for "missed":
	// "run-once" across restarts; empty keeps nothing.
	StateDir string
	// Logger receives the scheduler's records; nil discards.
	Logger *slog.Logger
	// Clock is the time the schedules follow; nil is the real clock. Tests
	// pass a fake one (clockwork.NewFakeClock) and move it on.
	Clock clockwork.Clock
}

// Scheduler runs timer triggers.
type Scheduler struct {
	opts Options
	stop chan struct{} // closed by Close: the timers stop
	runs atomic.Int64  // runs in flight, over all triggers

	mu    sync.Mutex     // orders track against Close
	loops sync.WaitGroup // the triggers' timers
}

// NewScheduler starts a scheduler; Close stops it.
func NewScheduler(opts *Options) (*Scheduler, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.StateDir != "" {
		if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
			return nil, fmt.Errorf("timer: state directory: %w", err)
		}
	}
	return &Scheduler{opts: o, stop: make(chan struct{})}, nil
}

// Close stops every trigger's timer; stop the triggers first
// (trigger.Set.Close), which waits for their runs in flight. Triggers
// started after Close do not tick. It returns by ctx's deadline and is safe
// to call twice.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.mu.Unlock()
	if err := drain.Wait(ctx, &s.loops, func() {}); err != nil {
		return fmt.Errorf("timer: close: %w", err)
	}
	return nil
}

// track counts one more trigger's timer, unless s is closed.
func (s *Scheduler) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return false
	default:
		s.loops.Add(1)
		return true
	}
}

// Factory makes timer triggers on s, for trigger.NewSet.
func (s *Scheduler) Factory() trigger.Factory {
	return func(c trigger.Config) (trigger.Trigger, error) { return s.newTrigger(c) }
}

// schedule is a checked Params: when ticks come.
type schedule struct {
	next      func(after time.Time) time.Time // the first tick after a time; zero: none
	queue     bool                            // overlap "queue"
	runMissed bool
}

// parse checks c's params.
func parse(c trigger.Config) (Params, schedule, error) {
	var p Params
	if err := trigger.DecodeParams(c, &p, "every"); err != nil {
		return p, schedule{}, err
	}
	var sc schedule
	set := 0
	for _, v := range []string{p.Every, p.Cron, p.At} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return p, sc, trigger.InvalidParam(c, "every", "want exactly one of every, cron and at (have %d)", set)
	}
	switch p.Overlap {
	case "", "skip":
	case "queue":
		sc.queue = true
	default:
		return p, sc, trigger.InvalidParam(c, "overlap", "%q: want skip or queue", p.Overlap)
	}
	switch p.Missed {
	case "", "skip":
	case "run-once":
		sc.runMissed = true
	default:
		return p, sc, trigger.InvalidParam(c, "missed", "%q: want skip or run-once", p.Missed)
	}
	if p.TimeZone != "" && p.Cron == "" {
		return p, sc, trigger.InvalidParam(c, "timezone", "only for cron")
	}
	switch {
	case p.Every != "":
		d, err := time.ParseDuration(p.Every)
		if err != nil || d < time.Millisecond {
			return p, sc, trigger.InvalidParam(c, "every", "%q: want a duration of at least 1ms, such as 30s or 5m", p.Every)
		}
		sc.next = func(after time.Time) time.Time { return after.Add(d) }
	case p.Cron != "":
		loc := time.Local
		if p.TimeZone != "" {
			var err error
			if loc, err = time.LoadLocation(p.TimeZone); err != nil {
				return p, sc, trigger.InvalidParam(c, "timezone", "%q: %v", p.TimeZone, err)
			}
		}
		expr := "CRON_TZ=" + loc.String() + " " + p.Cron
		cr := gocron.NewDefaultCron(true)
		if err := cr.IsValid(expr, loc, time.Now()); err != nil {
			return p, sc, trigger.InvalidParam(c, "cron", "%q: %v", p.Cron, err)
		}
		sc.next = cr.Next
	default:
		at, err := time.Parse(time.RFC3339, p.At)
		if err != nil {
			return p, sc, trigger.InvalidParam(c, "at", "%q: want an RFC 3339 time such as 2026-12-01T08:00:00Z", p.At)
		}
		sc.next = func(after time.Time) time.Time {
			if after.Before(at) {
				return at
			}
			return time.Time{}
		}
	}
	if p.Data != nil && p.Event != nil {
		return p, sc, trigger.InvalidParam(c, "event", "either data or event, not both")
	}
	return p, sc, nil
}

// timerTrigger is one timer trigger.
type timerTrigger struct {
	s      *Scheduler
	name   string
	p      Params
	sc     schedule
	fire   trigger.Fire
	ctx    context.Context // invocations; cancelled when a Stop gives up
	cancel context.CancelFunc
	quit   chan struct{} // closed by Stop: the timer stops

	mu      sync.Mutex
	running bool
	pending bool      // a queued tick (overlap "queue")
	pendAt  time.Time // its scheduled time
	stopped bool
	wg      sync.WaitGroup
}

func (s *Scheduler) newTrigger(c trigger.Config) (trigger.Trigger, error) {
	p, sc, err := parse(c)
	if err != nil {
		return nil, err
	}
	return &timerTrigger{s: s, name: c.Name, p: p, sc: sc}, nil
}

func (t *timerTrigger) Start(ctx context.Context, fire trigger.Fire) error {
	if !t.s.track() {
		return fmt.Errorf("timer: starting %s: %w", t.name, ErrClosed)
	}
	t.fire = fire
	t.ctx, t.cancel = context.WithCancel(context.Background())
	now := t.s.opts.Clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sc.runMissed {
		if last, ok := t.lastRun(); ok {
			if missed := t.sc.next(last); !missed.IsZero() && missed.Before(now) {
				t.startRun(missed, true)
			}
		}
	}
	next := t.sc.next(now)
	if next.IsZero() {
		t.s.loops.Done()
		return nil // the time point has passed: nothing to schedule
	}
	t.quit = make(chan struct{})
	t.wg.Add(1)
	go t.follow(next)
	return nil
}

// follow arms the trigger's timer for each tick in turn, from next, until
// the trigger stops or the scheduler closes.
func (t *timerTrigger) follow(next time.Time) {
	defer t.s.loops.Done()
	defer t.wg.Done()
	clock := t.s.opts.Clock
	for !next.IsZero() {
		tm := clock.NewTimer(next.Sub(clock.Now()))
		select {
		case <-tm.Chan():
		case <-t.quit:
			tm.Stop()
			return
		case <-t.s.stop:
			tm.Stop()
			return
		}
		t.tick(next)
		next = t.after(next)
	}
}

// after is the tick to wait for once the one scheduled at prev has fired.
func (t *timerTrigger) after(prev time.Time) time.Time {
	now := t.s.opts.Clock.Now()
	if now.Before(prev) {
		return t.sc.next(now) // the clock was set back
	}
	next := t.sc.next(prev)
	if !next.IsZero() && next.Before(now) {
		return t.sc.next(now) // ticks the clock has passed are skipped
	}
	return next
}

// tick starts the run for one scheduled time, or queues or skips it.
func (t *timerTrigger) tick(scheduled time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.stopped:
	case !t.running:
		t.startRun(scheduled, false)
	case t.sc.queue && !t.pending:
		t.pending, t.pendAt = true, scheduled
	default:
		t.s.opts.Logger.Warn("timer: tick skipped, the previous run still runs", "trigger", t.name, "scheduled", scheduled)
	}
}

// startRun starts a run on its own goroutine; t.mu is held.
func (t *timerTrigger) startRun(scheduled time.Time, missed bool) {
	t.running = true
	t.wg.Add(1)
	t.s.runs.Add(1)
	go func() {
		defer t.wg.Done()
		defer t.s.runs.Add(-1)
		for {
			t.run(scheduled, missed)
			t.mu.Lock()
			if !t.pending || t.stopped {
				t.pending, t.running = false, false
				t.mu.Unlock()
				return
			}
			scheduled, missed, t.pending = t.pendAt, false, false
			t.mu.Unlock()
		}
	}()
}

type event struct {
	Trigger   string          `json:"trigger"`
	Scheduled time.Time       `json:"scheduled"`
	Fired     time.Time       `json:"fired"`
	Missed    bool            `json:"missed,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

func (t *timerTrigger) run(scheduled time.Time, missed bool) {
	fired := t.s.opts.Clock.Now()
	payload := []byte(t.p.Event)
	if payload == nil {
		payload, _ = json.Marshal(event{Trigger: t.name, Scheduled: scheduled, Fired: fired, Missed: missed, Data: t.p.Data})
	}
	t.saveLastRun(scheduled)
	src := map[string]string{"type": Type, "trigger": t.name, "scheduled": scheduled.Format(time.RFC3339Nano), "fired": fired.Format(time.RFC3339Nano)}
	_, err := t.fire(t.ctx, invoke.Request{Payload: payload, Source: src})
	if err != nil {
		t.s.opts.Logger.Warn("timer: invocation failed", "trigger", t.name, "scheduled", scheduled, "err", err)
	}
}

func (t *timerTrigger) Stop(ctx context.Context) error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return nil
	}
	t.stopped = true
	if t.quit != nil {
		close(t.quit)
	}
	t.mu.Unlock()
	if t.cancel == nil {
		return nil // never started
	}
	defer t.cancel()
	if err := drain.Wait(ctx, &t.wg, t.cancel); err != nil {
		return fmt.Errorf("timer %s: waiting for the run in flight: %w", t.name, err)
	}
	return nil
}

// state is what a trigger keeps across restarts.
type state struct {
	LastRun time.Time `json:"last_run"`
}

func (t *timerTrigger) statePath() string {
	if t.s.opts.StateDir == "" {
		return ""
	}
	return filepath.Join(t.s.opts.StateDir, t.name+".json")
}

func (t *timerTrigger) lastRun() (time.Time, bool) {
	path := t.statePath()
	if path == "" {
		return time.Time{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, false
	}
	var st state
	if json.Unmarshal(b, &st) != nil || st.LastRun.IsZero() {
		return time.Time{}, false
	}
	return st.LastRun, true
}

// saveLastRun records a run's scheduled time, atomically.
func (t *timerTrigger) saveLastRun(at time.Time) {
	path := t.statePath()
	if path == "" {
		return
	}
	b, _ := json.Marshal(state{LastRun: at})
	if err := safefile.Write(path, b, 0o600); err != nil {
		t.s.opts.Logger.Warn("timer: saving the last run", "trigger", t.name, "err", err)
	}
}
