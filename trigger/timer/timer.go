// Package timer is the time trigger: a function runs at a fixed interval
// ("every": "1m"), on a cron schedule with seconds and a time zone, or once
// at a time point (RFC 3339). Schedules run on github.com/go-co-op/gocron/v2;
// one Scheduler serves all of a gateway's timer triggers.
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
	s    gocron.Scheduler
	opts Options
	once sync.Once
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
	s, err := gocron.NewScheduler(gocron.WithClock(o.Clock))
	if err != nil {
		return nil, fmt.Errorf("timer: %w", err)
	}
	s.Start()
	return &Scheduler{s: s, opts: o}, nil
}

// Close stops the scheduler; stop the triggers first (trigger.Set.Close).
// It waits for the runs in flight until ctx ends, then returns, saying so
// (the runs go on to their end). It is safe to call twice.
func (s *Scheduler) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		done := make(chan error, 1)
		go func() { done <- s.s.Shutdown() }()
		select {
		case err = <-done:
		case <-ctx.Done():
			err = fmt.Errorf("timer: close: waiting for the scheduler to stop: %w", ctx.Err())
		}
	})
	return err
}

// Factory makes timer triggers on s, for trigger.NewSet.
func (s *Scheduler) Factory() trigger.Factory {
	return func(c trigger.Config) (trigger.Trigger, error) { return s.newTrigger(c) }
}

// schedule is a checked Params: when ticks come.
type schedule struct {
	def       gocron.JobDefinition
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
		sc.def = gocron.DurationJob(d)
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
		sc.def = gocron.CronJob(expr, true)
		sc.next = cr.Next
	default:
		at, err := time.Parse(time.RFC3339, p.At)
		if err != nil {
			return p, sc, trigger.InvalidParam(c, "at", "%q: want an RFC 3339 time such as 2026-12-01T08:00:00Z", p.At)
		}
		sc.def = gocron.OneTimeJob(gocron.OneTimeJobStartDateTime(at))
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
	job    gocron.Job

	mu      sync.Mutex
	next    time.Time // the tick expected next
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
	if t.p.At != "" && !t.sc.next(now).After(now) {
		return nil // the time point has passed: nothing to schedule
	}
	job, err := t.s.s.NewJob(t.sc.def, gocron.NewTask(t.tick), gocron.WithName(t.name))
	if err != nil {
		t.cancel()
		return fmt.Errorf("timer: scheduling %s: %w", t.name, err)
	}
	t.job = job
	if next, err := job.NextRun(); err == nil {
		t.next = next
	} else {
		t.next = t.sc.next(now)
	}
	return nil
}

// tick is the gocron task: one scheduled time has come.
func (t *timerTrigger) tick() {
	t.mu.Lock()
	defer t.mu.Unlock()
	scheduled := t.next
	if now := t.s.opts.Clock.Now(); scheduled.IsZero() || scheduled.After(now.Add(time.Second)) {
		scheduled = now // the schedule moved under us
	}
	t.next = t.sc.next(scheduled)
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
	go func() {
		defer t.wg.Done()
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
	job := t.job
	t.mu.Unlock()
	if job != nil {
		if err := t.s.s.RemoveJob(job.ID()); err != nil && !errors.Is(err, gocron.ErrJobNotFound) {
			t.s.opts.Logger.Warn("timer: removing the job", "trigger", t.name, "err", err)
		}
	}
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
