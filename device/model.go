package device

import (
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidModel: a thing model is malformed; the error names the path.
var ErrInvalidModel = errors.New("invalid thing model")

// ErrInvalidValue: a value does not fit its data type; the error names the
// path ("properties.temperature: 130 above max 120").
var ErrInvalidValue = errors.New("invalid value")

// Model is a thing model: what a kind of device has (properties), can do
// (services) and tells (events). Build one in Go or load it from TSL JSON
// (ParseTSL); Check validates it.
type Model struct {
	Properties []Property
	Services   []Service
	Events     []Event
}

// Access says whether a property can be written.
type Access string

// Accesses.
const (
	ReadOnly  Access = "r"
	ReadWrite Access = "rw"
)

// Property is one value a device has.
type Property struct {
	Identifier string
	Name       string
	Access     Access
	Type       DataType
}

// CallType says whether a service answers at once or later.
type CallType string

// Call types.
const (
	Sync  CallType = "sync"
	Async CallType = "async"
)

// Service is one thing a device can do.
type Service struct {
	Identifier string
	Name       string
	Call       CallType
	Input      []Param
	Output     []Param
}

// EventLevel classifies an event.
type EventLevel string

// Event levels.
const (
	Info  EventLevel = "info"
	Alert EventLevel = "alert"
	Error EventLevel = "error"
)

// Event is one thing a device tells.
type Event struct {
	Identifier string
	Name       string
	Level      EventLevel
	Output     []Param
}

// Param is a service or event parameter, or a struct field.
type Param struct {
	Identifier string
	Name       string
	Type       DataType
}

// Kind is a data type's kind.
type Kind string

// Kinds. Values keep their Go types: int and enum are int64, float and
// double float64, bool bool, text string, date time.Time, struct
// map[string]any, array []any.
const (
	Int    Kind = "int"
	Float  Kind = "float"
	Double Kind = "double"
	Bool   Kind = "bool"
	Text   Kind = "text"
	Enum   Kind = "enum"
	Date   Kind = "date"
	Struct Kind = "struct"
	Array  Kind = "array"
)

// DataType is a value's type and its limits. Which fields apply depends on
// Kind.
type DataType struct {
	Kind Kind
	// Min and Max bound int, float and double values (nil: unbounded).
	Min, Max *float64
	// Step, when set, is the granularity of int values from Min (or 0).
	Step float64
	Unit string
	// MaxLength bounds text in bytes (0: 10,240, the TSL default).
	MaxLength int
	// Values are an enum's values by key, or a bool's labels (0, 1).
	Values map[int64]string
	// Item is an array's item type; Size its maximum length (0: 512).
	Item *DataType
	Size int
	// Fields are a struct's fields.
	Fields []Param
}

// Limits of the model.
const (
	DefaultMaxLength = 10240
	DefaultArraySize = 512
	maxDepth         = 8 // struct and array nesting
)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,49}$`)

// Check validates the model: identifiers (letters, digits and '_', not
// starting with a digit, at most 50, unique per section), kinds, limits.
func (m *Model) Check() error {
	seen := map[string]bool{}
	for i, p := range m.Properties {
		path := fmt.Sprintf("properties[%d]", i)
		if err := checkIdentifier(path, p.Identifier, seen); err != nil {
			return err
		}
		path = "properties." + p.Identifier
		if p.Access != ReadOnly && p.Access != ReadWrite {
			return fmt.Errorf("%w: %s.accessMode: %q, want r or rw", ErrInvalidModel, path, p.Access)
		}
		if err := p.Type.check(path, 0); err != nil {
			return err
		}
	}
	seen = map[string]bool{}
	for i, s := range m.Services {
		path := fmt.Sprintf("services[%d]", i)
		if err := checkIdentifier(path, s.Identifier, seen); err != nil {
			return err
		}
		path = "services." + s.Identifier
		if s.Call != Sync && s.Call != Async {
			return fmt.Errorf("%w: %s.callType: %q, want sync or async", ErrInvalidModel, path, s.Call)
		}
		if err := checkParams(path+".inputData", s.Input, 0); err != nil {
			return err
		}
		if err := checkParams(path+".outputData", s.Output, 0); err != nil {
			return err
		}
	}
	seen = map[string]bool{}
	for i, e := range m.Events {
		path := fmt.Sprintf("events[%d]", i)
		if err := checkIdentifier(path, e.Identifier, seen); err != nil {
			return err
		}
		path = "events." + e.Identifier
		if e.Level != Info && e.Level != Alert && e.Level != Error {
			return fmt.Errorf("%w: %s.type: %q, want info, alert or error", ErrInvalidModel, path, e.Level)
		}
		if err := checkParams(path+".outputData", e.Output, 0); err != nil {
			return err
		}
	}
	return nil
}

func checkIdentifier(path, id string, seen map[string]bool) error {
	if !identifier.MatchString(id) {
		return fmt.Errorf("%w: %s.identifier: %q, want letters, digits and '_', at most 50, not starting with a digit", ErrInvalidModel, path, id)
	}
	if seen[id] {
		return fmt.Errorf("%w: %s.identifier: %q appears twice", ErrInvalidModel, path, id)
	}
	seen[id] = true
	return nil
}

func checkParams(path string, ps []Param, depth int) error {
	seen := map[string]bool{}
	for i, p := range ps {
		if err := checkIdentifier(fmt.Sprintf("%s[%d]", path, i), p.Identifier, seen); err != nil {
			return err
		}
		if err := p.Type.check(path+"."+p.Identifier, depth); err != nil {
			return err
		}
	}
	return nil
}

func (t *DataType) check(path string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: %s: nested more than %d deep", ErrInvalidModel, path, maxDepth)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s.dataType: %s", ErrInvalidModel, path, fmt.Sprintf(format, args...))
	}
	switch t.Kind {
	case Int, Float, Double:
		if t.Min != nil && t.Max != nil && *t.Min > *t.Max {
			return bad("min %g above max %g", *t.Min, *t.Max)
		}
		if t.Step < 0 {
			return bad("step %g is negative", t.Step)
		}
	case Text:
		if t.MaxLength < 0 {
			return bad("length %d is negative", t.MaxLength)
		}
	case Enum:
		if len(t.Values) == 0 {
			return bad("an enum needs values")
		}
	case Bool, Date:
	case Array:
		if t.Item == nil {
			return bad("an array needs an item type")
		}
		if t.Size < 0 {
			return bad("size %d is negative", t.Size)
		}
		if t.Item.Kind == Array {
			return bad("arrays of arrays are not supported")
		}
		return t.Item.check(path+".item", depth+1)
	case Struct:
		if len(t.Fields) == 0 {
			return bad("a struct needs fields")
		}
		return checkParams(path, t.Fields, depth+1)
	default:
		return bad("type %q, want int, float, double, bool, text, enum, date, struct or array", t.Kind)
	}
	return nil
}

// Property returns the property with the identifier.
func (m *Model) Property(id string) (*Property, bool) {
	for i := range m.Properties {
		if m.Properties[i].Identifier == id {
			return &m.Properties[i], true
		}
	}
	return nil, false
}

// Service returns the service with the identifier.
func (m *Model) Service(id string) (*Service, bool) {
	for i := range m.Services {
		if m.Services[i].Identifier == id {
			return &m.Services[i], true
		}
	}
	return nil, false
}

// Event returns the event with the identifier.
func (m *Model) Event(id string) (*Event, bool) {
	for i := range m.Events {
		if m.Events[i].Identifier == id {
			return &m.Events[i], true
		}
	}
	return nil, false
}
