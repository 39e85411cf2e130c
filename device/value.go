package device

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Value checks v against t and returns it in its canonical Go type (see
// Kind), converting what JSON decoding gives (float64 for every number,
// json.Number, strings for dates). path names the value in errors, which
// wrap ErrInvalidValue: "properties.temperature: 130 above max 120".
func (t *DataType) Value(path string, v any) (any, error) {
	bad := func(format string, args ...any) (any, error) {
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalidValue, path, fmt.Sprintf(format, args...))
	}
	if v == nil {
		return bad("missing (null)")
	}
	switch t.Kind {
	case Int, Enum:
		n, ok := toInt(v)
		if !ok {
			return bad("%s, want an integer", describe(v))
		}
		if t.Kind == Enum {
			if _, ok := t.Values[n]; !ok {
				return bad("%d is not one of the enum's values %v", n, keys(t.Values))
			}
			return n, nil
		}
		if err := t.inRange(path, float64(n)); err != nil {
			return nil, err
		}
		if t.Step > 0 {
			base := 0.0
			if t.Min != nil {
				base = *t.Min
			}
			if q := (float64(n) - base) / t.Step; math.Abs(q-math.Round(q)) > 1e-9 {
				return bad("%d is not a multiple of step %g from %g", n, t.Step, base)
			}
		}
		return n, nil
	case Float, Double:
		f, ok := toFloat(v)
		if !ok {
			return bad("%s, want a number", describe(v))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return bad("%g is not a finite number", f)
		}
		if err := t.inRange(path, f); err != nil {
			return nil, err
		}
		return f, nil
	case Bool:
		switch b := v.(type) {
		case bool:
			return b, nil
		default:
			if n, ok := toInt(v); ok && (n == 0 || n == 1) {
				return n == 1, nil
			}
			return bad("%s, want true, false, 0 or 1", describe(v))
		}
	case Text:
		s, ok := v.(string)
		if !ok {
			return bad("%s, want text", describe(v))
		}
		limit := t.MaxLength
		if limit == 0 {
			limit = DefaultMaxLength
		}
		if len(s) > limit {
			return bad("%d bytes, over the length %d", len(s), limit)
		}
		if !utf8.ValidString(s) {
			return bad("text is not valid UTF-8")
		}
		return s, nil
	case Date:
		d, ok := toDate(v)
		if !ok {
			return bad("%s, want a time (milliseconds since 1970 or RFC 3339)", describe(v))
		}
		return d, nil
	case Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return bad("%s, want an object", describe(v))
		}
		return checkFields(path, t.Fields, m)
	case Array:
		items, ok := toSlice(v)
		if !ok {
			return bad("%s, want an array", describe(v))
		}
		limit := t.Size
		if limit == 0 {
			limit = DefaultArraySize
		}
		if len(items) > limit {
			return bad("%d items, over the size %d", len(items), limit)
		}
		out := make([]any, len(items))
		for i, item := range items {
			c, err := t.Item.Value(path+"["+strconv.Itoa(i)+"]", item)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	default:
		return bad("data type %q is unknown", t.Kind)
	}
}

// inRange checks f against Min and Max.
func (t *DataType) inRange(path string, f float64) error {
	if t.Min != nil && f < *t.Min {
		return fmt.Errorf("%w: %s: %g below min %g", ErrInvalidValue, path, f, *t.Min)
	}
	if t.Max != nil && f > *t.Max {
		return fmt.Errorf("%w: %s: %g above max %g", ErrInvalidValue, path, f, *t.Max)
	}
	return nil
}

// checkFields checks an object against params: each known one that is
// there, no unknown one.
func checkFields(path string, params []Param, in map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(in))
	for name, v := range in {
		var p *Param
		for i := range params {
			if params[i].Identifier == name {
				p = &params[i]
				break
			}
		}
		if p == nil {
			return nil, fmt.Errorf("%w: %s.%s: not in the model", ErrInvalidValue, path, name)
		}
		c, err := p.Type.Value(path+"."+name, v)
		if err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, nil
}

// PropertyValue checks a value of the property id.
func (m *Model) PropertyValue(id string, v any) (any, error) {
	p, ok := m.Property(id)
	if !ok {
		return nil, fmt.Errorf("%w: properties.%s: not in the model", ErrInvalidValue, id)
	}
	return p.Type.Value("properties."+id, v)
}

// ServiceInput checks a call's input parameters for the service id.
func (m *Model) ServiceInput(id string, in map[string]any) (map[string]any, error) {
	s, ok := m.Service(id)
	if !ok {
		return nil, fmt.Errorf("%w: services.%s: not in the model", ErrInvalidValue, id)
	}
	return checkFields("services."+id+".inputData", s.Input, in)
}

// ServiceOutput checks a service's answer.
func (m *Model) ServiceOutput(id string, out map[string]any) (map[string]any, error) {
	s, ok := m.Service(id)
	if !ok {
		return nil, fmt.Errorf("%w: services.%s: not in the model", ErrInvalidValue, id)
	}
	return checkFields("services."+id+".outputData", s.Output, out)
}

// EventOutput checks an event's parameters.
func (m *Model) EventOutput(id string, out map[string]any) (map[string]any, error) {
	e, ok := m.Event(id)
	if !ok {
		return nil, fmt.Errorf("%w: events.%s: not in the model", ErrInvalidValue, id)
	}
	return checkFields("events."+id+".outputData", e.Output, out)
}

func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		f, err := n.Float64()
		if err != nil {
			return 0, false
		}
		return toInt(f)
	case float64:
		if n != math.Trunc(n) || n < math.MinInt64 || n >= math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case float32:
		return toInt(float64(n))
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if rv.Uint() > math.MaxInt64 {
			return 0, false
		}
		return int64(rv.Uint()), true
	}
	return 0, false
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	if i, ok := toInt(v); ok {
		return float64(i), true
	}
	return 0, false
}

func toDate(v any) (time.Time, bool) {
	switch d := v.(type) {
	case time.Time:
		return d.UTC(), true
	case string:
		if ms, err := strconv.ParseInt(d, 10, 64); err == nil {
			return time.UnixMilli(ms).UTC(), true
		}
		t, err := time.Parse(time.RFC3339Nano, d)
		return t.UTC(), err == nil
	}
	if ms, ok := toInt(v); ok {
		return time.UnixMilli(ms).UTC(), true
	}
	return time.Time{}, false
}

func toSlice(v any) ([]any, bool) {
	if s, ok := v.([]any); ok {
		return s, true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	out := make([]any, rv.Len())
	for i := range out {
		out[i] = rv.Index(i).Interface()
	}
	return out, true
}

// describe names v's JSON kind for an error.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 32 {
			x = x[:32] + "…"
		}
		return "text " + strconv.Quote(x)
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	if f, ok := toFloat(v); ok {
		return "the number " + strconv.FormatFloat(f, 'g', -1, 64)
	}
	return fmt.Sprintf("a %T", v)
}

func keys(m map[int64]string) []int64 { return slices.Sorted(maps.Keys(m)) }
