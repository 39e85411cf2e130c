package trigger_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/testenv"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/timer"
)

// setup is a host with functions "a" (answers at once) and "slow" (waits
// for release), a Set of timer and message triggers on membus, and the
// statuses its OnChange saw.
type setup struct {
	set     *trigger.Set
	bus     *membus.Bus
	release chan struct{}
	calls   chan string // the function each invocation reached

	mu      sync.Mutex
	changes []trigger.Status
}

func newSetup(t *testing.T) *setup {
	t.Helper()
	ctx := context.Background()
	st := &setup{bus: membus.New(nil), release: make(chan struct{}), calls: make(chan string, 100)}
	t.Cleanup(func() { _ = st.bus.Close(ctx) })
	host, err := function.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Close(ctx) })
	for _, name := range []string{"a", "b", "slow"} {
		_ = host.Register(name, function.HandlerFunc(func(ctx context.Context, _ invoke.Request) (invoke.Response, error) {
			st.calls <- name
			if name == "slow" {
				select {
				case <-st.release:
				case <-ctx.Done():
				}
			}
			return invoke.Response{}, nil
		}))
		if err := host.Deploy(ctx, function.Spec{Name: name, Version: "1", Runtime: function.RuntimeGo, Handler: name}); err != nil {
			t.Fatal(err)
		}
	}
	sched, err := timer.NewScheduler(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sched.Close(ctx) })
	closedBus := membus.New(nil)
	_ = closedBus.Close(ctx)
	st.set = trigger.NewSet(host, map[string]trigger.Factory{
		timer.Type:   sched.Factory(),
		message.Type: message.Factory(st.bus, nil),
		"dead-bus":   message.Factory(closedBus, nil), // every start fails
	}, &trigger.Options{
		Known: func(f string) bool { return f == "a" || f == "b" || f == "slow" },
		OnChange: func(s trigger.Status) {
			st.mu.Lock()
			defer st.mu.Unlock()
			st.changes = append(st.changes, s)
		},
	})
	t.Cleanup(func() { _ = st.set.Close(ctx) })
	return st
}

func msg(name, fn, filter string) trigger.Config {
	return trigger.Config{Name: name, Type: message.Type, Function: fn, Params: json.RawMessage(`{"filter": "` + filter + `"}`)}
}

func phases(s []trigger.Status) map[string]string {
	out := map[string]string{}
	for _, x := range s {
		out[x.Config.Name] = string(x.Phase) + " " + x.Config.Function
	}
	return out
}

// TestApply: Apply makes a whole set the desired one (new ones start,
// changed ones are replaced or rebound, missing ones stop, each reported
// through OnChange); a wrong config anywhere changes nothing; a trigger
// that cannot start is failed with the reason while the rest apply.
func TestApply(t *testing.T) {
	st := newSetup(t)
	ctx := context.Background()
	tick := trigger.Config{Name: "tick", Type: timer.Type, Function: "a", Params: json.RawMessage(`{"every": "1h"}`)}
	if err := st.set.Apply(ctx, []trigger.Config{tick, msg("m", "a", "in/m")}); err != nil {
		t.Fatal(err)
	}
	if got := phases(st.set.Status()); got["tick"] != "running a" || got["m"] != "running a" || len(got) != 2 {
		t.Errorf("after the first Apply: %v", got)
	}
	if err := st.bus.Publish(ctx, &bus.Message{Topic: "in/m", QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	if f := <-st.calls; f != "a" {
		t.Errorf("m fired %s", f)
	}

	for _, tc := range []struct {
		cfgs []trigger.Config
		want error
		says string
	}{
		{[]trigger.Config{tick, {Name: "x", Type: "sundial", Function: "a"}}, trigger.ErrUnknownType, "sundial"},
		{[]trigger.Config{tick, msg("x", "nope", "in/x")}, trigger.ErrUnknownFunction, "nope"},
		{[]trigger.Config{tick, msg("tick", "a", "in/x")}, trigger.ErrInvalidConfig, "twice"},
		{[]trigger.Config{{Name: "bad/name", Type: timer.Type, Function: "a"}}, trigger.ErrInvalidConfig, "name"},
	} {
		if err := st.set.Apply(ctx, tc.cfgs); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Apply %v: %v, want %v naming %q", tc.cfgs, err, tc.want, tc.says)
		}
	}
	if got := phases(st.set.Status()); got["tick"] != "running a" || got["m"] != "running a" || len(got) != 2 {
		t.Errorf("refused Applys changed the set: %v", got)
	}
	// Check finds the same faults, bad parameters too, and accepts
	// functions not deployed yet.
	if err := st.set.Check([]trigger.Config{msg("later", "not-yet", "in/l"), tick}); err != nil {
		t.Errorf("Check of good configs: %v", err)
	}
	badTimer := trigger.Config{Name: "t2", Type: timer.Type, Function: "a", Params: json.RawMessage(`{"every": "often"}`)}
	if err := st.set.Check([]trigger.Config{tick, badTimer}); !errors.Is(err, trigger.ErrInvalidConfig) || !strings.Contains(err.Error(), "params.every") {
		t.Errorf("Check of a bad timer: %v", err)
	}
	if err := st.set.Check([]trigger.Config{tick, tick}); !errors.Is(err, trigger.ErrInvalidConfig) {
		t.Errorf("Check of a name twice: %v", err)
	}

	// m goes; tick is rebound to b; n starts; dead cannot start.
	tick.Function = "b"
	dead := trigger.Config{Name: "dead", Type: "dead-bus", Function: "a", Params: json.RawMessage(`{"filter": "in/d"}`)}
	err := st.set.Apply(ctx, []trigger.Config{tick, msg("n", "b", "in/n"), dead})
	if err == nil || !strings.Contains(err.Error(), "trigger dead: starting") {
		t.Errorf("Apply with a trigger that cannot start: %v", err)
	}
	got := phases(st.set.Status())
	if want := map[string]string{"tick": "running b", "n": "running b", "dead": "failed a"}; !mapsEqual(got, want) {
		t.Errorf("after the second Apply: %v, want %v", got, want)
	}
	for _, s := range st.set.Status() {
		if s.Config.Name == "dead" && !strings.Contains(s.Error, "closed") {
			t.Errorf("dead's status says %q, want the bus's refusal", s.Error)
		}
	}
	if names := configNames(st.set.List()); !slices.Equal(names, []string{"n", "tick"}) {
		t.Errorf("List: %v, want the running ones", names)
	}
	st.mu.Lock()
	var removed []string
	for _, c := range st.changes {
		if c.Phase == trigger.PhaseRemoved {
			removed = append(removed, c.Config.Name)
		}
	}
	st.mu.Unlock()
	if !slices.Equal(removed, []string{"m"}) {
		t.Errorf("OnChange saw removals of %v, want [m]", removed)
	}
	if err := st.bus.Publish(ctx, &bus.Message{Topic: "in/m", QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	if err := st.bus.Publish(ctx, &bus.Message{Topic: "in/n", QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	if f := <-st.calls; f != "b" {
		t.Errorf("after the change, %s was invoked, want n's b (m is gone)", f)
	}

	if err := st.set.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if s := st.set.Status(); len(s) != 0 {
		t.Errorf("after Apply(nil): %v", phases(s))
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func configNames(cs []trigger.Config) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// TestChangeWaitsForNoOther: while one trigger's replacement waits for its
// old trigger's invocation in flight, List, Status and changes to other
// triggers go on; Close waits for the change under way.
func TestChangeWaitsForNoOther(t *testing.T) {
	st := newSetup(t)
	ctx := context.Background()
	if err := st.set.Put(ctx, msg("busy", "slow", "in/busy")); err != nil {
		t.Fatal(err)
	}
	if err := st.bus.Publish(ctx, &bus.Message{Topic: "in/busy", QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	<-st.calls // the old trigger's invocation is in flight
	replaced := make(chan error, 1)
	go func() { replaced <- st.set.Put(ctx, msg("busy", "slow", "in/busy2")) }()
	testenv.Eventually(t, "the replacement started", func() bool {
		for _, s := range st.set.Status() {
			if s.Config.Name == "busy" && strings.Contains(string(s.Config.Params), "busy2") {
				return true
			}
		}
		return false
	})
	select {
	case err := <-replaced:
		t.Fatalf("the replacement returned (%v) before the old trigger's invocation ended", err)
	default:
	}
	if err := st.set.Put(ctx, msg("other", "a", "in/other")); err != nil {
		t.Errorf("a change to another trigger: %v", err)
	}
	_ = st.set.List()
	close(st.release)
	if err := <-replaced; err != nil {
		t.Errorf("the replacement: %v", err)
	}
	if err := st.set.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.set.Put(ctx, msg("late", "a", "in/late")); !errors.Is(err, trigger.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if err := st.set.Apply(ctx, nil); !errors.Is(err, trigger.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
}

// TestTraceCarried: W3C trace context in a message's user properties
// reaches the function a message trigger invokes and goes on with its
// output; a malformed traceparent goes nowhere.
func TestTraceCarried(t *testing.T) {
	st := newSetup(t)
	ctx := context.Background()
	out := make(chan *bus.Message, 2)
	if _, err := st.bus.Subscribe(ctx, "out/t", func(_ context.Context, m *bus.Message) { out <- m }, nil); err != nil {
		t.Fatal(err)
	}
	cfg := msg("traced", "a", "in/t")
	cfg.Params = json.RawMessage(`{"filter": "in/t", "output": "out/t"}`)
	if err := st.set.Put(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, parent := range []string{tp, "not-a-traceparent"} {
		if err := st.bus.Publish(ctx, &bus.Message{Topic: "in/t", QoS: bus.AtLeastOnce,
			UserProperties: []bus.UserProperty{{Key: "traceparent", Value: parent}, {Key: "tracestate", Value: "a=b"}}}); err != nil {
			t.Fatal(err)
		}
		<-st.calls
		m := <-out
		got, _ := m.Property("traceparent")
		state, _ := m.Property("tracestate")
		if want := map[bool]string{true: tp, false: ""}[parent == tp]; got != want || (want != "" && state != "a=b") || (want == "" && state != "") {
			t.Errorf("published with %q: the output carries traceparent %q tracestate %q", parent, got, state)
		}
	}
}
