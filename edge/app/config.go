package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxConfigDepth bounds how deeply configuration documents nest.
const MaxConfigDepth = 64

// Resolve returns the app's configuration on this gateway: the version's
// default (an empty object when it has none), with the assignment's
// overrides applied as an RFC 7396 merge patch, then each Reset pointer's
// value set back to the default's (or removed where the default has none).
// The result is a JSON object, its keys sorted. Validation against the
// version's ConfigSchema is the gateway's (package edge/reconcile).
func (a *Assignment) Resolve() (json.RawMessage, error) {
	def, err := decodeObject(a.Version.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: app %s: version.config: %v", ErrInvalid, a.App.Name, err)
	}
	doc := cloneJSON(def)
	if len(bytes.TrimSpace(a.Config.Overrides)) > 0 {
		patch, err := decode(a.Config.Overrides)
		if err != nil {
			return nil, fmt.Errorf("%w: app %s: config.overrides: %v", ErrInvalid, a.App.Name, err)
		}
		doc = MergePatch(doc, patch)
	}
	for i, p := range a.Config.Reset {
		tokens, err := parsePointer(p)
		if err != nil {
			return nil, fmt.Errorf("%w: app %s: config.reset[%d]: %v", ErrInvalid, a.App.Name, i, err)
		}
		doc = reset(doc, def, tokens)
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: app %s: config.overrides: the configuration must stay a JSON object", ErrInvalid, a.App.Name)
	}
	return json.Marshal(doc)
}

// MergePatch applies patch to target as RFC 7396 says and returns the
// result: a patch that is an object merges member by member (null removes
// a member), anything else replaces the target. target may be changed.
func MergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = MergePatch(t[k], v)
	}
	return t
}

// reset sets the value at tokens in doc to the one at the same place in
// def, or removes it where def has none. A path through a value that is
// not an object leaves doc as it is.
func reset(doc, def any, tokens []string) any {
	if len(tokens) == 0 {
		return cloneJSON(def)
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return doc
	}
	var below any
	if dm, ok := def.(map[string]any); ok {
		below = dm[tokens[0]]
	}
	if len(tokens) == 1 {
		if below == nil {
			delete(m, tokens[0])
		} else {
			m[tokens[0]] = cloneJSON(below)
		}
		return m
	}
	if child, ok := m[tokens[0]]; ok {
		m[tokens[0]] = reset(child, below, tokens[1:])
	}
	return m
}

// parsePointer splits an RFC 6901 JSON Pointer into its reference tokens;
// the whole document ("") may not be reset.
func parsePointer(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("%q: want a JSON Pointer such as /limits/max", p)
	}
	parts := strings.Split(p[1:], "/")
	if len(parts) > MaxConfigDepth {
		return nil, fmt.Errorf("%q: deeper than %d", p, MaxConfigDepth)
	}
	for i, t := range parts {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 == len(t) || (t[j+1] != '0' && t[j+1] != '1')) {
				return nil, fmt.Errorf("%q: '~' must be followed by 0 or 1", p)
			}
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

// decode reads a JSON document bounded in depth, numbers kept exact.
func decode(b []byte) (any, error) {
	if err := checkDepth(b); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the document")
	}
	return v, nil
}

// decodeObject reads a JSON object; an empty document is {}.
func decodeObject(b []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return map[string]any{}, nil
	}
	v, err := decode(b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("want a JSON object")
	}
	return m, nil
}

// checkDepth refuses documents nested more than MaxConfigDepth deep.
func checkDepth(b []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > MaxConfigDepth {
				return errors.New("nested deeper than " + strconv.Itoa(MaxConfigDepth))
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// cloneJSON copies a decoded document.
func cloneJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = cloneJSON(e)
		}
		return m
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = cloneJSON(e)
		}
		return s
	}
	return v
}

// DiffPatch returns an RFC 7396 merge patch that turns from into to
// (MergePatch(from, DiffPatch(from, to)) equals to): the members of to
// that differ, recursively for objects in both, and null for each member
// of from that to lacks. A null inside to cannot be written by a merge
// patch and is left out. Both are decoded JSON values (map[string]any,
// []any, string, float64, bool, nil).
func DiffPatch(from, to any) any {
	f, fok := from.(map[string]any)
	t, tok := to.(map[string]any)
	if !fok || !tok {
		return cloneJSON(to)
	}
	patch := map[string]any{}
	for k := range f {
		if _, ok := t[k]; !ok {
			patch[k] = nil
		}
	}
	for k, tv := range t {
		fv, ok := f[k]
		switch {
		case tv == nil && !ok:
		case ok && jsonEqual(fv, tv):
		default:
			_, fobj := fv.(map[string]any)
			_, tobj := tv.(map[string]any)
			if fobj && tobj {
				patch[k] = DiffPatch(fv, tv)
			} else {
				patch[k] = cloneJSON(tv)
			}
		}
	}
	return patch
}

func jsonEqual(a, b any) bool {
	ab, err1 := json.Marshal(a)
	bb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}
