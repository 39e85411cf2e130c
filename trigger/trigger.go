package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgekit/edgekit/invoke"
)

// Sentinel errors, wrapped with the trigger's name and the field concerned.
var (
	// ErrInvalidConfig: a trigger's configuration is wrong; the error names
	// the field.
	ErrInvalidConfig = errors.New("invalid trigger config")
	// ErrUnknownType: no factory for the trigger's type.
	ErrUnknownType = errors.New("unknown trigger type")
	// ErrUnknownFunction: the trigger names a function that is not
	// deployed (checked when the Set has Options.Known).
	ErrUnknownFunction = errors.New("unknown function")
	// ErrNotFound: no trigger of that name.
	ErrNotFound = errors.New("trigger not found")
	// ErrClosed: the Set is closed.
	ErrClosed = errors.New("trigger set closed")
)

// Config is one trigger as deployments carry it: serialisable, with the
// type's own parameters left as JSON for its factory to check.
type Config struct {
	// Name identifies the trigger in its Set: letters, digits, '.', '_'
	// and '-', at most 128.
	Name string `json:"name"`
	// Type picks the factory: "timer", "message", ...
	Type string `json:"type"`
	// Function is the name of the function the trigger invokes.
	Function string `json:"function"`
	// Params are the type's parameters (see its package).
	Params json.RawMessage `json:"params,omitempty"`
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Check validates the fields every trigger has.
func (c Config) Check() error {
	switch {
	case !validName.MatchString(c.Name):
		return fmt.Errorf("trigger %q: %w: name: want letters, digits, '.', '_' or '-', at most 128", c.Name, ErrInvalidConfig)
	case c.Type == "":
		return fmt.Errorf("trigger %s: %w: type is empty", c.Name, ErrInvalidConfig)
	case c.Function == "":
		return fmt.Errorf("trigger %s: %w: function is empty", c.Name, ErrInvalidConfig)
	}
	return nil
}

// Fire invokes the function a trigger is bound to.
type Fire func(ctx context.Context, req invoke.Request) (invoke.Response, error)

// Trigger is one running trigger. A Set starts and stops it.
type Trigger interface {
	// Start begins firing: fire invokes the bound function. ctx bounds the
	// start itself.
	Start(ctx context.Context, fire Fire) error
	// Stop ends firing. No invocation starts after it returns, and it
	// waits for those in flight (or ctx). It is safe to call twice.
	Stop(ctx context.Context) error
}

// Factory makes a trigger from its config; it checks the parameters and
// names the field that is wrong (wrapping ErrInvalidConfig).
type Factory func(c Config) (Trigger, error)

// Options configure a Set. The zero value is usable.
type Options struct {
	// Known reports whether a function is deployed; when set, a trigger
	// for an unknown function is refused (ErrUnknownFunction).
	Known func(function string) bool
	// Logger receives the Set's records; nil discards.
	Logger *slog.Logger
}

// Set is the live set of triggers, each bound to a function by name.
// Triggers can be added, changed and removed while the others run. Its
// methods are safe for concurrent use.
type Set struct {
	inv   invoke.Invoker
	types map[string]Factory
	opts  Options

	mu      sync.Mutex // serialises changes
	closed  bool
	running map[string]*entry
}

type entry struct {
	cfg      Config
	trig     Trigger
	function atomic.Pointer[string]
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
	return &Set{inv: inv, types: maps.Clone(types), opts: o, running: make(map[string]*entry)}
}

// Put adds the trigger, or changes the one of the same name. A config that
// is wrong is refused with an error naming the field, and what ran before
// keeps running. A change of Function only rebinds the running trigger
// (nothing is missed); any other change starts the new trigger before the
// old one stops, so an event in between may fire both (at least once) but
// none is lost.
func (s *Set) Put(ctx context.Context, c Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	factory, ok := s.types[c.Type]
	if !ok {
		return fmt.Errorf("trigger %s: %w %q (have %v)", c.Name, ErrUnknownType, c.Type, slices.Sorted(maps.Keys(s.types)))
	}
	if s.opts.Known != nil && !s.opts.Known(c.Function) {
		return fmt.Errorf("trigger %s: function: %w %q", c.Name, ErrUnknownFunction, c.Function)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("trigger %s: %w", c.Name, ErrClosed)
	}
	old := s.running[c.Name]
	if old != nil && old.cfg.Type == c.Type && jsonEqual(old.cfg.Params, c.Params) {
		old.function.Store(&c.Function)
		old.cfg = c
		return nil
	}
	t, err := factory(c)
	if err != nil {
		return err
	}
	e := &entry{cfg: c, trig: t}
	e.function.Store(&c.Function)
	if err := t.Start(ctx, s.fire(e)); err != nil {
		_ = t.Stop(ctx)
		return fmt.Errorf("trigger %s: starting: %w", c.Name, err)
	}
	s.running[c.Name] = e
	if old != nil {
		if err := old.trig.Stop(ctx); err != nil {
			s.opts.Logger.Warn("trigger: stopping the replaced trigger", "trigger", c.Name, "err", err)
		}
	}
	s.opts.Logger.Info("trigger started", "trigger", c.Name, "type", c.Type, "function", c.Function)
	return nil
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
// nothing more.
func (s *Set) Remove(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.running[name]
	if !ok {
		return fmt.Errorf("trigger %s: %w", name, ErrNotFound)
	}
	delete(s.running, name)
	if err := e.trig.Stop(ctx); err != nil {
		return fmt.Errorf("trigger %s: stopping: %w", name, err)
	}
	s.opts.Logger.Info("trigger removed", "trigger", name)
	return nil
}

// List returns the running triggers' configs, by name.
func (s *Set) List() []Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Config, 0, len(s.running))
	for _, name := range slices.Sorted(maps.Keys(s.running)) {
		out = append(out, s.running[name].cfg)
	}
	return out
}

// Close stops every trigger. It is safe to call twice.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for name, e := range s.running {
		if err := e.trig.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("trigger %s: stopping: %w", name, err))
		}
		delete(s.running, name)
	}
	return errors.Join(errs...)
}

// DecodeParams decodes c.Params into v, refusing unknown fields; missing
// names the field a factory needs first. For factories.
func DecodeParams(c Config, v any, missing string) error {
	if len(bytes.TrimSpace(c.Params)) == 0 {
		return InvalidParam(c, missing, "missing")
	}
	dec := json.NewDecoder(bytes.NewReader(c.Params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("trigger %s: %w: params: %v", c.Name, ErrInvalidConfig, err)
	}
	return nil
}

// InvalidParam is the error for a wrong parameter: it wraps
// ErrInvalidConfig and names the trigger and the field.
func InvalidParam(c Config, field, format string, args ...any) error {
	return fmt.Errorf("trigger %s: %w: params.%s: %s", c.Name, ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}
