package trigger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

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
