package timer_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/timer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type event struct {
	Trigger   string          `json:"trigger"`
	Scheduled time.Time       `json:"scheduled"`
	Fired     time.Time       `json:"fired"`
	Missed    bool            `json:"missed"`
	Data      json.RawMessage `json:"data"`
}

// recorder is an in-process function that records the events it gets.
// With hold set, its first run waits until hold is closed.
type recorder struct {
	mu      sync.Mutex
	events  []event
	hold    chan struct{}
	once    sync.Once
	running atomic.Int32
	overlap atomic.Bool
}

func (r *recorder) handle(ctx context.Context, req invoke.Request) (invoke.Response, error) {
	if r.running.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.running.Add(-1)
	var ev event
	if err := json.Unmarshal(req.Payload, &ev); err != nil {
		return invoke.Response{}, err
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	if r.hold != nil {
		r.once.Do(func() { <-r.hold })
	}
	return invoke.Response{}, nil
}

// release lets the held run go on, if it still holds.
func (r *recorder) release() {
	select {
	case <-r.hold:
	default:
		close(r.hold)
	}
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// waitFor waits until the recorder has n events.
func (r *recorder) waitFor(t *testing.T, n int) []event {
	t.Helper()
	testenv.Eventually(t, strconv.Itoa(n)+" events", func() bool { return len(r.snapshot()) >= n })
	return r.snapshot()
}

// t0 is where the tests' fake clocks start.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// env is a host with function "f" recording into rec, a scheduler on a
// fake clock and a Set; all are closed when the test ends.
type env struct {
	clock *clockwork.FakeClock
	sched *timer.Scheduler
	set   *trigger.Set
	logs  *testenv.Buffer
}

func setup(t *testing.T, rec *recorder, stateDir string, clock *clockwork.FakeClock) *env {
	t.Helper()
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = h.Register("rec", function.HandlerFunc(rec.handle))
	spec := function.Spec{Name: "f", Version: "1", Runtime: function.RuntimeGo, Handler: "rec", MaxInstances: 4, Timeout: function.Duration(10 * time.Second)}
	if err := h.Deploy(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if clock == nil {
		clock = clockwork.NewFakeClockAt(t0)
	}
	logs := &testenv.Buffer{}
	sched, err := timer.NewScheduler(&timer.Options{StateDir: stateDir, Clock: clock, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	set := trigger.NewSet(h, map[string]trigger.Factory{timer.Type: sched.Factory()}, &trigger.Options{
		Known: func(fn string) bool { _, err := h.Status(fn); return err == nil },
	})
	t.Cleanup(func() {
		ctx := context.Background()
		_ = set.Close(ctx)
		_ = sched.Close(ctx)
		_ = h.Close(ctx)
	})
	return &env{clock: clock, sched: sched, set: set, logs: logs}
}

// advance moves the clock on by d once the scheduler has armed its timer.
func (e *env) advance(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the scheduler armed no timer: %v", err)
	}
	e.clock.Advance(d)
}

// ran waits until rec has n events and their runs are over, so that the
// next tick cannot find the last run still finishing (and be skipped):
// a function's return is recorded a little before its run ends.
func (e *env) ran(t *testing.T, rec *recorder, n int) []event {
	t.Helper()
	evs := rec.waitFor(t, n)
	e.idle(t)
	return evs
}

// idle waits until no run is in flight.
func (e *env) idle(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, "no run in flight", func() bool { return timer.Runs(e.sched) == 0 })
}

// skipped waits until n ticks were logged as skipped.
func (e *env) skipped(t *testing.T, n int) {
	t.Helper()
	testenv.Eventually(t, strconv.Itoa(n)+" ticks skipped", func() bool { return strings.Count(e.logs.String(), "tick skipped") >= n })
}

func put(t *testing.T, set *trigger.Set, name, params string) {
	t.Helper()
	if err := set.Put(context.Background(), trigger.Config{Name: name, Type: timer.Type, Function: "f", Params: json.RawMessage(params)}); err != nil {
		t.Fatal(err)
	}
}

// TestInterval: an interval trigger fires on its grid; each event names
// the trigger, its scheduled time, the time it fired, and the data.
func TestInterval(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	put(t, e.set, "tick", `{"every": "50ms", "data": {"sensor": "boiler"}}`)
	for i := 1; i <= 4; i++ {
		e.advance(t, 50*time.Millisecond)
		evs := e.ran(t, rec, i)
		ev := evs[i-1]
		if want := t0.Add(time.Duration(i) * 50 * time.Millisecond); !ev.Scheduled.Equal(want) || !ev.Fired.Equal(want) {
			t.Errorf("event %d scheduled %v, fired %v; want both %v", i, ev.Scheduled, ev.Fired, want)
		}
		if ev.Trigger != "tick" || string(ev.Data) != `{"sensor":"boiler"}` {
			t.Errorf("event %d: %+v", i, ev)
		}
	}
}

// TestOneRunPerTick: each scheduled time runs once, however quickly the
// runs end (gocron's scheduler, used until now, fired a job again at the
// same instant when a run ended before it was rescheduled); and ticks the
// clock has passed without firing (a machine asleep, a clock set forward)
// are skipped, the schedule going on from the new time.
func TestOneRunPerTick(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	put(t, e.set, "fast", `{"every": "50ms"}`)
	for i := 1; i <= 20; i++ {
		e.advance(t, 50*time.Millisecond)
		e.ran(t, rec, i)
	}
	e.advance(t, 500*time.Millisecond) // ten ticks pass at once: one runs
	evs := e.ran(t, rec, 21)
	if got, want := evs[20].Scheduled, t0.Add(time.Second+50*time.Millisecond); !got.Equal(want) {
		t.Errorf("the run after the jump was scheduled at %v, want %v (the first tick passed)", got, want)
	}
	e.advance(t, 50*time.Millisecond)
	evs = e.ran(t, rec, 22)
	if got, want := evs[21].Scheduled, t0.Add(1550*time.Millisecond); !got.Equal(want) {
		t.Errorf("the next run was scheduled at %v, want %v (50ms after the jump)", got, want)
	}
	if n := len(rec.snapshot()); n != 22 {
		t.Errorf("%d events, want 22: one per tick", n)
	}
	for i, ev := range evs {
		if i > 0 && !ev.Scheduled.After(evs[i-1].Scheduled) {
			t.Errorf("event %d scheduled at %v, not after the one before (%v)", i, ev.Scheduled, evs[i-1].Scheduled)
		}
	}
}

// TestClosedScheduler: a trigger started on a closed scheduler is refused.
func TestClosedScheduler(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	if err := e.sched.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := e.set.Put(context.Background(), trigger.Config{Name: "late", Type: timer.Type, Function: "f", Params: json.RawMessage(`{"every": "1s"}`)})
	if !errors.Is(err, timer.ErrClosed) {
		t.Errorf("a trigger on a closed scheduler: %v, want ErrClosed", err)
	}
	if err := e.sched.Close(context.Background()); err != nil {
		t.Errorf("the second Close: %v", err)
	}
}

// TestOverlap: with "skip" a tick that comes while the previous run still
// runs is dropped; with "queue" one waits and runs right after.
func TestOverlap(t *testing.T) {
	t.Run("skip", func(t *testing.T) {
		rec := &recorder{hold: make(chan struct{})}
		e := setup(t, rec, "", nil)
		t.Cleanup(rec.release) // a failing test ends instead of waiting on the held run
		put(t, e.set, "slow", `{"every": "50ms", "overlap": "skip"}`)
		e.advance(t, 50*time.Millisecond) // the first run starts and holds
		rec.waitFor(t, 1)
		for range 3 {
			e.advance(t, 50*time.Millisecond)
		}
		e.skipped(t, 3)
		rec.release()
		e.idle(t) // the first run ended
		e.advance(t, 50*time.Millisecond)
		evs := rec.waitFor(t, 2)
		if got := evs[1].Scheduled.Sub(evs[0].Scheduled); got != 200*time.Millisecond {
			t.Errorf("the run after the held one was scheduled %v after it, want 200ms (3 ticks skipped)", got)
		}
		if rec.overlap.Load() {
			t.Error("runs overlapped")
		}
	})
	t.Run("queue", func(t *testing.T) {
		rec := &recorder{hold: make(chan struct{})}
		e := setup(t, rec, "", nil)
		t.Cleanup(rec.release) // a failing test ends instead of waiting on the held run
		put(t, e.set, "slow", `{"every": "50ms", "overlap": "queue"}`)
		e.advance(t, 50*time.Millisecond) // the first run starts and holds
		rec.waitFor(t, 1)
		e.advance(t, 50*time.Millisecond) // queued
		e.advance(t, 50*time.Millisecond) // one is queued already: skipped
		e.skipped(t, 1)
		rec.release()
		// The queued tick runs once the held run ends, with no tick more.
		evs := rec.waitFor(t, 2)
		if !evs[1].Scheduled.Equal(t0.Add(100*time.Millisecond)) || !evs[1].Fired.Equal(t0.Add(150*time.Millisecond)) {
			t.Errorf("queued run scheduled %v, fired %v; want the second tick, run when the first run ended", evs[1].Scheduled, evs[1].Fired)
		}
		if rec.overlap.Load() {
			t.Error("runs overlapped")
		}
	})
}

// TestCron: a cron schedule with seconds and a time zone fires each second.
func TestCron(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	put(t, e.set, "each-second", `{"cron": "* * * * * *", "timezone": "Europe/Berlin"}`)
	e.advance(t, time.Second)
	e.ran(t, rec, 1)
	e.advance(t, time.Second)
	evs := rec.waitFor(t, 2)
	if !evs[0].Scheduled.Equal(t0.Add(time.Second)) || evs[1].Scheduled.Sub(evs[0].Scheduled) != time.Second {
		t.Errorf("cron ticks scheduled at %v and %v", evs[0].Scheduled, evs[1].Scheduled)
	}
}

// TestAt: a time point fires once; one in the past does not fire.
func TestAt(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	at := t0.Add(time.Second)
	put(t, e.set, "once", `{"at": "`+at.Format(time.RFC3339)+`"}`)
	put(t, e.set, "past", `{"at": "2020-01-01T00:00:00Z"}`)
	e.advance(t, time.Second)
	evs := rec.waitFor(t, 1)
	if !evs[0].Scheduled.Equal(at) || evs[0].Trigger != "once" {
		t.Errorf("event %+v, want trigger once scheduled at %v", evs[0], at)
	}
	e.clock.Advance(time.Hour) // nothing is armed any more
	if n := len(rec.snapshot()); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

// TestMissedRunOnce: a tick missed while the gateway was down runs once at
// start with "missed": "run-once", and not with the default.
func TestMissedRunOnce(t *testing.T) {
	dir := t.TempDir()
	clock := clockwork.NewFakeClockAt(t0)
	{
		rec := &recorder{}
		e := setup(t, rec, dir, clock)
		put(t, e.set, "regular", `{"every": "200ms", "missed": "run-once"}`)
		e.advance(t, 200*time.Millisecond) // runs at t0+200ms, which is kept
		rec.waitFor(t, 1)
		_ = e.set.Close(context.Background())
		_ = e.sched.Close(context.Background())
	}
	clock.Advance(300 * time.Millisecond) // the tick at t0+400ms passes while "down"
	for _, tc := range []struct {
		missed string
		want   bool
	}{{"run-once", true}, {"skip", false}} {
		t.Run(tc.missed, func(t *testing.T) {
			rec := &recorder{}
			e := setup(t, rec, dir, clock)
			put(t, e.set, "regular", `{"every": "200ms", "missed": "`+tc.missed+`"}`)
			n := 1
			if tc.want {
				// The missed run starts with the trigger.
				if evs := e.ran(t, rec, 1); !evs[0].Missed {
					t.Errorf("first event %+v, want the missed run", evs[0])
				}
				n = 2
			}
			e.advance(t, 200*time.Millisecond) // the first regular tick
			evs := rec.waitFor(t, n)
			if len(evs) != n || evs[n-1].Missed {
				t.Errorf("events %+v: want %d, the last a regular tick", evs, n)
			}
		})
	}
}

// TestBadParams: each mistake is refused at configuration time, naming the
// field, and what ran before keeps running.
func TestBadParams(t *testing.T) {
	rec := &recorder{}
	e := setup(t, rec, "", nil)
	set := e.set
	put(t, set, "good", `{"every": "50ms"}`)
	for params, field := range map[string]string{
		``:                                       "params.every",
		`{"every": "1x"}`:                        "params.every",
		`{"every": "-5s"}`:                       "params.every",
		`{"every": "1s", "cron": "* * * * * *"}`: "params.every",
		`{"cron": "61 * * * * *"}`:               "params.cron",
		`{"cron": "* * * * * *", "timezone": "Mars/Olympus"}`: "params.timezone",
		`{"every": "1s", "timezone": "UTC"}`:                  "params.timezone",
		`{"at": "tomorrow"}`:                                  "params.at",
		`{"every": "1s", "overlap": "both"}`:                  "params.overlap",
		`{"every": "1s", "missed": "all"}`:                    "params.missed",
		`{"every": "1s", "data": 1, "event": 2}`:              "params.event",
		`{"evry": "1s"}`:                                      `unknown field "evry"`,
	} {
		err := set.Put(context.Background(), trigger.Config{Name: "good", Type: timer.Type, Function: "f", Params: json.RawMessage(params)})
		if !errors.Is(err, trigger.ErrInvalidConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("params %s: %v, want ErrInvalidConfig naming %s", params, err, field)
		}
	}
	if err := set.Put(context.Background(), trigger.Config{Name: "other", Type: timer.Type, Function: "nope", Params: json.RawMessage(`{"every":"1s"}`)}); !errors.Is(err, trigger.ErrUnknownFunction) {
		t.Errorf("unknown function: %v", err)
	}
	if err := set.Put(context.Background(), trigger.Config{Name: "other", Type: "sundial", Function: "f"}); !errors.Is(err, trigger.ErrUnknownType) {
		t.Errorf("unknown type: %v", err)
	}
	if err := set.Put(context.Background(), trigger.Config{Name: "a/b", Type: timer.Type, Function: "f"}); !errors.Is(err, trigger.ErrInvalidConfig) {
		t.Errorf("bad name: %v", err)
	}
	for i := 1; i <= 2; i++ { // the good trigger still fires
		e.advance(t, 50*time.Millisecond)
		e.ran(t, rec, i)
	}
	if cfgs := set.List(); len(cfgs) != 1 || string(cfgs[0].Params) != `{"every": "50ms"}` {
		t.Errorf("triggers after the refused changes: %+v", cfgs)
	}
}

// TestEventParam: "event" is sent as the payload itself; the Source still
// says which trigger fired and when.
func TestEventParam(t *testing.T) {
	got := make(chan invoke.Request, 1)
	h, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	_ = h.Register("f", function.HandlerFunc(func(_ context.Context, req invoke.Request) (invoke.Response, error) {
		select {
		case got <- req:
		default:
		}
		return invoke.Response{}, nil
	}))
	if err := h.Deploy(context.Background(), function.Spec{Name: "f", Version: "1", Runtime: function.RuntimeGo, Handler: "f"}); err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClockAt(t0)
	sched, err := timer.NewScheduler(&timer.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	set := trigger.NewSet(h, map[string]trigger.Factory{timer.Type: sched.Factory()}, nil)
	t.Cleanup(func() { _ = set.Close(context.Background()); _ = sched.Close(context.Background()) })
	put(t, set, "probe", `{"every": "20ms", "event": {"device": "self-test", "temperature": 20}}`)
	(&env{clock: clock}).advance(t, 20*time.Millisecond)
	select {
	case req := <-got:
		if string(req.Payload) != `{"device": "self-test", "temperature": 20}` || req.Source["trigger"] != "probe" || req.Source["scheduled"] == "" {
			t.Errorf("payload %s, source %v", req.Payload, req.Source)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not fire")
	}
}
