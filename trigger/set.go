package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/invoke"
)

// Options configure a Set. The zero value is usable.
type Options struct {
	// Known reports whether a function is deployed; when set, a trigger
	// for an unknown function is refused (ErrUnknownFunction).
	Known func(function string) bool
	// OnChange, when set, receives a trigger's status each time its phase,
	// config or error changes, and once with PhaseRemoved when it goes
	// (for the gateway to publish). Calls for one trigger come in order;
	// it must not block.
	OnChange func(Status)
	// Logger receives the Set's records; nil discards.
	Logger *slog.Logger
}

// Phase is where a trigger is in its life.
type Phase string

// Phases.
const (
	PhaseRunning Phase = "running" // firing
	// PhaseFailed: the trigger could not start, and nothing runs under its
	// name (Status.Error says why).
	PhaseFailed  Phase = "failed"
	PhaseRemoved Phase = "removed" // only in OnChange: the trigger is gone
)

// Status is one trigger's state.
type Status struct {
	Config Config // the config running, or the one that failed
	Phase  Phase
	// Error says why the last change of the trigger failed: with
	// PhaseFailed nothing runs; with PhaseRunning the config before the
	// change runs on.
	Error string
	Since time.Time // when Phase began
}

// Set is the live set of triggers, each bound to a function by name.
// Triggers can be added, changed and removed while the others run: Apply
// makes a whole set the desired one, Put and Remove change one. Changes to
// one name come one at a time; those to different names, List and Status
// never wait for each other. Its methods are safe for concurrent use.
type Set struct {
	inv   invoke.Invoker
	types map[string]Factory
	opts  Options
	names nameLocks  // one change at a time per trigger name
	apply sync.Mutex // one Apply at a time

	mu      sync.Mutex // guards what follows, never held across a Start or Stop
	closed  bool
	changes sync.WaitGroup // changes under way; Close waits for them
	entries map[string]*entry
}

// entry is one trigger name's state: trig is nil when its start failed.
type entry struct {
	cfg      Config
	trig     Trigger
	function atomic.Pointer[string]
	status   Status
}

// NewSet returns an empty Set that invokes through inv and makes triggers
// with types (by Config.Type).
func NewSet(inv invoke.Invoker, types map[string]Factory, opts *Options) *Set {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Set{inv: inv, types: maps.Clone(types), opts: o, names: nameLocks{m: map[string]*nameLock{}}, entries: make(map[string]*entry)}
}

// factory checks c's fields and returns the factory for its type.
func (s *Set) factory(c Config) (Factory, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	factory, ok := s.types[c.Type]
	if !ok {
		return nil, fmt.Errorf("trigger %s: %w %q (have %v)", c.Name, ErrUnknownType, c.Type, slices.Sorted(maps.Keys(s.types)))
	}
	return factory, nil
}

// check validates c against what every trigger needs and the Set knows:
// its fields, a factory for its type, a deployed function.
func (s *Set) check(c Config) (Factory, error) {
	factory, err := s.factory(c)
	if err != nil {
		return nil, err
	}
	if s.opts.Known != nil && !s.opts.Known(c.Function) {
		return nil, fmt.Errorf("trigger %s: function: %w %q", c.Name, ErrUnknownFunction, c.Function)
	}
	return factory, nil
}

// Check checks cfgs as Apply would, without starting or changing
// anything: every field, a factory for each type, each type's parameters
// (the factory makes the trigger, which is then let go unstarted), and no
// name twice. It does not ask Options.Known, so functions not yet deployed
// may be named: a deployment checks its triggers before it deploys their
// functions.
func (s *Set) Check(cfgs []Config) error {
	seen := make(map[string]bool, len(cfgs))
	for _, c := range cfgs {
		factory, err := s.factory(c)
		if err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("trigger %s: %w: the name appears twice", c.Name, ErrInvalidConfig)
		}
		seen[c.Name] = true
		t, err := factory(c)
		if err != nil {
			return err
		}
		_ = t.Stop(context.Background()) // never started: nothing to wait for
	}
	return nil
}

// Apply makes cfgs the desired set: new triggers start, changed ones are
// replaced (as Put), those left out stop. Every config is checked first: a
// wrong one (a bad field, an unknown type or function, a name twice) is
// refused, naming it, and nothing changes. A trigger that then fails to
// start is PhaseFailed with the reason, the others are applied, and the
// errors are returned joined. It returns when every change is done.
func (s *Set) Apply(ctx context.Context, cfgs []Config) error {
	seen := make(map[string]bool, len(cfgs))
	factories := make([]Factory, len(cfgs))
	for i, c := range cfgs {
		f, err := s.check(c)
		if err != nil {
			return err
		}
		if seen[c.Name] {
			return fmt.Errorf("trigger %s: %w: the name appears twice", c.Name, ErrInvalidConfig)
		}
		seen[c.Name] = true
		factories[i] = f
	}
	s.apply.Lock()
	defer s.apply.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("trigger: apply: %w", ErrClosed)
	}
	var gone []string
	for name := range s.entries {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	s.mu.Unlock()
	// Each change runs on its own: a stop waiting for invocations in
	// flight holds up no other trigger.
	errs := make([]error, len(cfgs)+len(gone))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Go(func() { errs[i] = s.put(ctx, c, factories[i]) })
	}
	for i, name := range gone {
		wg.Go(func() {
			if err := s.Remove(ctx, name); !errors.Is(err, ErrNotFound) {
				errs[len(cfgs)+i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Put adds the trigger, or changes the one of the same name. A config that
// is wrong is refused with an error naming the field, and what ran before
// keeps running. A change of Function only rebinds the running trigger
// (nothing is missed); any other change starts the new trigger before the
// old one stops, so an event in between may fire both (at least once) but
// none is lost.
func (s *Set) Put(ctx context.Context, c Config) error {
	factory, err := s.check(c)
	if err != nil {
		return err
	}
	return s.put(ctx, c, factory)
}

// begin starts a change of name: it waits for the name's previous change
// and counts this one for Close. end finishes it.
func (s *Set) begin(ctx context.Context, name string) (end func(), err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("trigger %s: %w", name, ErrClosed)
	}
	s.changes.Add(1)
	s.mu.Unlock()
	if err := s.names.lock(ctx, name); err != nil {
		s.changes.Done()
		return nil, fmt.Errorf("trigger %s: waiting for its previous change: %w", name, err)
	}
	return func() {
		s.names.unlock(name)
		s.changes.Done()
	}, nil
}

func (s *Set) put(ctx context.Context, c Config, factory Factory) error {
	end, err := s.begin(ctx, c.Name)
	if err != nil {
		return err
	}
	defer end()
	s.mu.Lock()
	old := s.entries[c.Name]
	if old != nil && old.trig != nil && old.cfg.Type == c.Type && jsonEqual(old.cfg.Params, c.Params) {
		old.function.Store(&c.Function)
		old.cfg = c
		st := s.setLocked(old, PhaseRunning, "")
		s.mu.Unlock()
		s.changed(st)
		return nil
	}
	s.mu.Unlock()

	t, err := factory(c)
	if err == nil {
		e := &entry{cfg: c, trig: t}
		e.function.Store(&c.Function)
		if err = t.Start(ctx, s.fire(e)); err != nil {
			_ = t.Stop(ctx)
			err = fmt.Errorf("trigger %s: starting: %w", c.Name, err)
		} else {
			s.mu.Lock()
			e.status = Status{Config: c, Phase: PhaseRunning, Since: time.Now()}
			s.entries[c.Name] = e
			st := e.status
			s.mu.Unlock()
			s.changed(st)
			if old != nil && old.trig != nil {
				if err := old.trig.Stop(ctx); err != nil {
					s.opts.Logger.Warn("trigger: stopping the replaced trigger", "trigger", c.Name, "err", err)
				}
			}
			s.opts.Logger.Info("trigger started", "trigger", c.Name, "type", c.Type, "function", c.Function)
			return nil
		}
	}
	// The change failed: the old trigger, if any, runs on.
	s.opts.Logger.Warn("trigger: change refused", "trigger", c.Name, "err", err)
	s.mu.Lock()
	var st Status
	if old != nil && old.trig != nil {
		st = s.setLocked(old, PhaseRunning, err.Error())
	} else {
		e := &entry{cfg: c}
		s.entries[c.Name] = e
		st = s.setLocked(e, PhaseFailed, err.Error())
	}
	s.mu.Unlock()
	s.changed(st)
	return err
}

// setLocked records e's phase and error and returns its status; s.mu is
// held.
func (s *Set) setLocked(e *entry, p Phase, why string) Status {
	if e.status.Phase != p {
		e.status.Since = time.Now()
	}
	e.status.Config, e.status.Phase, e.status.Error = e.cfg, p, why
	return e.status
}

// changed tells OnChange; it is called with the name's change lock held,
// so calls for one trigger come in order.
func (s *Set) changed(st Status) {
	if s.opts.OnChange != nil {
		s.opts.OnChange(st)
	}
}

func (s *Set) fire(e *entry) Fire {
	return func(ctx context.Context, req invoke.Request) (invoke.Response, error) {
		return s.inv.Invoke(ctx, *e.function.Load(), req)
	}
}

// jsonEqual compares two parameter documents by meaning, not bytes.
func jsonEqual(a, b json.RawMessage) bool {
	var va, vb any
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return string(ja) == string(jb)
}

// Remove stops the named trigger; once it returns, the trigger invokes
// nothing more. A trigger whose start failed is forgotten.
func (s *Set) Remove(ctx context.Context, name string) error {
	end, err := s.begin(ctx, name)
	if err != nil {
		return err
	}
	defer end()
	s.mu.Lock()
	e, ok := s.entries[name]
	delete(s.entries, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("trigger %s: %w", name, ErrNotFound)
	}
	var stopErr error
	if e.trig != nil {
		stopErr = e.trig.Stop(ctx)
	}
	s.changed(Status{Config: e.cfg, Phase: PhaseRemoved, Since: time.Now()})
	if stopErr != nil {
		return fmt.Errorf("trigger %s: stopping: %w", name, stopErr)
	}
	s.opts.Logger.Info("trigger removed", "trigger", name)
	return nil
}

// List returns the running triggers' configs, by name.
func (s *Set) List() []Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Config, 0, len(s.entries))
	for _, name := range slices.Sorted(maps.Keys(s.entries)) {
		if e := s.entries[name]; e.trig != nil {
			out = append(out, e.cfg)
		}
	}
	return out
}

// Status returns every trigger's state, the failed ones included, by name.
func (s *Set) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Status, 0, len(s.entries))
	for _, name := range slices.Sorted(maps.Keys(s.entries)) {
		out = append(out, s.entries[name].status)
	}
	return out
}

// Close stops every trigger, after the changes under way (each bounded by
// ctx). It is safe to call twice.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	var errs []error
	if err := drain.Wait(ctx, &s.changes, func() {}); err != nil {
		errs = append(errs, fmt.Errorf("trigger: close: changes under way: %w", err))
	}
	s.mu.Lock()
	entries := s.entries
	s.entries = make(map[string]*entry)
	s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		if t := entries[name].trig; t != nil {
			if err := t.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("trigger %s: stopping: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// nameLocks serialises changes per name; a waiter gives up when its
// context ends.
type nameLocks struct {
	mu sync.Mutex
	m  map[string]*nameLock
}

type nameLock struct {
	held chan struct{} // capacity 1: full while held
	refs int           // holders and waiters
}

func (l *nameLocks) lock(ctx context.Context, name string) error {
	l.mu.Lock()
	n := l.m[name]
	if n == nil {
		n = &nameLock{held: make(chan struct{}, 1)}
		l.m[name] = n
	}
	n.refs++
	l.mu.Unlock()
	select {
	case n.held <- struct{}{}:
		return nil
	case <-ctx.Done():
		l.release(name, n)
		return ctx.Err()
	}
}

func (l *nameLocks) unlock(name string) {
	l.mu.Lock()
	n := l.m[name]
	l.mu.Unlock()
	<-n.held
	l.release(name, n)
}

func (l *nameLocks) release(name string, n *nameLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.refs--; n.refs == 0 {
		delete(l.m, name)
	}
}
