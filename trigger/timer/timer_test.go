package timer_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgekit/edgekit/function"
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
type recorder struct {
	mu      sync.Mutex
	events  []event
	sleep   time.Duration
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
	time.Sleep(r.sleep)
	return invoke.Response{}, nil
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// waitFor waits until the recorder has n events.
func (r *recorder) waitFor(t *testing.T, n int, within time.Duration) []event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if evs := r.snapshot(); len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events within %v, want %d", len(r.snapshot()), within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// setup gives a host with function "f" recording into rec, a scheduler and
// a Set; all are closed when the test ends.
func setup(t *testing.T, rec *recorder, stateDir string) (*function.Host, *timer.Scheduler, *trigger.Set) {
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
	sched, err := timer.NewScheduler(&timer.Options{StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	set := trigger.NewSet(h, map[string]trigger.Factory{timer.Type: sched.Factory()}, &trigger.Options{
		Known: func(fn string) bool { _, err := h.Status(fn); return err == nil },
	})
	t.Cleanup(func() {
		ctx := context.Background()
		_ = set.Close(ctx)
		_ = sched.Close(context.Background())
		_ = h.Close(ctx)
	})
	return h, sched, set
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
	_, _, set := setup(t, rec, "")
	put(t, set, "tick", `{"every": "50ms", "data": {"sensor": "boiler"}}`)
	evs := rec.waitFor(t, 4, 5*time.Second)
	for i, ev := range evs[:4] {
		if ev.Trigger != "tick" || string(ev.Data) != `{"sensor":"boiler"}` {
			t.Errorf("event %d: %+v", i, ev)
		}
		if late := ev.Fired.Sub(ev.Scheduled); late < -5*time.Millisecond || late > time.Second {
			t.Errorf("event %d fired %v after its scheduled time", i, late)
		}
		if i > 0 {
			if step := ev.Scheduled.Sub(evs[i-1].Scheduled); step != 50*time.Millisecond {
				t.Errorf("scheduled times %v apart, want 50ms", step)
			}
		}
	}
}

// TestOverlap: with "skip" a tick that comes while the previous run still
// runs is dropped; with "queue" one waits and runs right after.
func TestOverlap(t *testing.T) {
	for _, policy := range []string{"skip", "queue"} {
		t.Run(policy, func(t *testing.T) {
			rec := &recorder{sleep: 130 * time.Millisecond}
			_, _, set := setup(t, rec, "")
			put(t, set, "slow", `{"every": "50ms", "overlap": "`+policy+`"}`)
			evs := rec.waitFor(t, 3, 5*time.Second)
			if rec.overlap.Load() {
				t.Fatal("runs overlapped")
			}
			gap := evs[2].Fired.Sub(evs[1].Fired)
			switch policy {
			case "skip":
				// The next run starts on the first tick after the run
				// ends: skipped ticks leave gaps of whole intervals.
				if missedTicks := evs[2].Scheduled.Sub(evs[1].Scheduled) / (50 * time.Millisecond); missedTicks < 3 {
					t.Errorf("consecutive runs scheduled %d ticks apart, want ≥ 3 (ticks skipped)", missedTicks)
				}
			case "queue":
				// The queued tick runs as soon as the run before ends.
				if gap > 130*time.Millisecond+40*time.Millisecond {
					t.Errorf("queued run started %v after the previous one started, want right after it ended", gap)
				}
			}
		})
	}
}

// TestCron: a cron schedule with seconds and a time zone fires each second.
func TestCron(t *testing.T) {
	rec := &recorder{}
	_, _, set := setup(t, rec, "")
	put(t, set, "each-second", `{"cron": "* * * * * *", "timezone": "Europe/Berlin"}`)
	evs := rec.waitFor(t, 2, 5*time.Second)
	if evs[0].Scheduled.Nanosecond() != 0 || evs[1].Scheduled.Sub(evs[0].Scheduled) != time.Second {
		t.Errorf("cron ticks scheduled at %v and %v", evs[0].Scheduled, evs[1].Scheduled)
	}
}

// TestAt: a time point fires once; one in the past does not fire.
func TestAt(t *testing.T) {
	rec := &recorder{}
	_, _, set := setup(t, rec, "")
	at := time.Now().Add(300 * time.Millisecond).UTC().Truncate(time.Second).Add(time.Second)
	put(t, set, "once", `{"at": "`+at.Format(time.RFC3339)+`"}`)
	put(t, set, "past", `{"at": "2020-01-01T00:00:00Z"}`)
	evs := rec.waitFor(t, 1, 5*time.Second)
	if !evs[0].Scheduled.Equal(at) || evs[0].Trigger != "once" {
		t.Errorf("event %+v, want trigger once scheduled at %v", evs[0], at)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(rec.snapshot()); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
}

// TestMissedRunOnce: a tick missed while the gateway was down runs once at
// start with "missed": "run-once", and not with the default.
func TestMissedRunOnce(t *testing.T) {
	dir := t.TempDir()
	{
		rec := &recorder{}
		_, sched, set := setup(t, rec, dir)
		put(t, set, "regular", `{"every": "200ms", "missed": "run-once"}`)
		rec.waitFor(t, 1, 5*time.Second)
		_ = set.Close(context.Background())
		_ = sched.Close(context.Background())
	}
	time.Sleep(300 * time.Millisecond) // a tick passes while "down"
	for _, tc := range []struct {
		missed string
		want   bool
	}{{"run-once", true}, {"skip", false}} {
		rec := &recorder{}
		_, _, set := setup(t, rec, dir)
		put(t, set, "regular", `{"every": "200ms", "missed": "`+tc.missed+`"}`)
		time.Sleep(120 * time.Millisecond) // before the first regular tick
		evs := rec.snapshot()
		if got := len(evs) == 1 && evs[0].Missed; got != tc.want || len(evs) > 1 {
			t.Errorf("missed %q: events %+v, want a missed run at start: %v", tc.missed, evs, tc.want)
		}
	}
}

// TestBadParams: each mistake is refused at configuration time, naming the
// field, and what ran before keeps running.
func TestBadParams(t *testing.T) {
	rec := &recorder{}
	_, _, set := setup(t, rec, "")
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
	n := len(rec.snapshot())
	rec.waitFor(t, n+2, 5*time.Second) // the good trigger still fires
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
	sched, err := timer.NewScheduler(nil)
	if err != nil {
		t.Fatal(err)
	}
	set := trigger.NewSet(h, map[string]trigger.Factory{timer.Type: sched.Factory()}, nil)
	t.Cleanup(func() { _ = set.Close(context.Background()); _ = sched.Close(context.Background()) })
	put(t, set, "probe", `{"every": "20ms", "event": {"device": "self-test", "temperature": 20}}`)
	select {
	case req := <-got:
		if string(req.Payload) != `{"device": "self-test", "temperature": 20}` || req.Source["trigger"] != "probe" || req.Source["scheduled"] == "" {
			t.Errorf("payload %s, source %v", req.Payload, req.Source)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the timer did not fire")
	}
}
