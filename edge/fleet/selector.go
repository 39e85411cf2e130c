package fleet

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Selector picks instances by their labels: requirements joined by
// commas, all of which must hold —
//
//	site=plant-1       the label has that value
//	tier!=test         the label is absent or has another value
//	gpu                the label is present
//	!legacy            the label is absent
//
// The empty selector matches every instance.
type Selector struct {
	text string
	reqs []requirement
}

type requirement struct {
	key, value string
	op         byte // '=', '!' (not equal), 'e' (exists), 'a' (absent)
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})?$`)

// ValidLabel reports whether s may be a label's key or value: 1-63
// letters, digits, '.', '_', '/' or '-', starting with a letter or digit.
func ValidLabel(s string) bool { return labelRE.MatchString(s) }

// ParseSelector reads a selector; the error names the requirement that is
// wrong.
func ParseSelector(s string) (Selector, error) {
	sel := Selector{text: strings.TrimSpace(s)}
	if sel.text == "" {
		return sel, nil
	}
	for i, part := range strings.Split(sel.text, ",") {
		part = strings.TrimSpace(part)
		var r requirement
		switch {
		case strings.Contains(part, "!="):
			r.key, r.value, _ = strings.Cut(part, "!=")
			r.op = '!'
		case strings.Contains(part, "="):
			r.key, r.value, _ = strings.Cut(part, "=")
			r.op = '='
		case strings.HasPrefix(part, "!"):
			r.key, r.op = part[1:], 'a'
		default:
			r.key, r.op = part, 'e'
		}
		r.key, r.value = strings.TrimSpace(r.key), strings.TrimSpace(r.value)
		if !ValidLabel(r.key) {
			return Selector{}, fmt.Errorf("%w: selector %q: requirement %d (%q): label key %q: want 1-63 letters, digits, '.', '_', '/' or '-'", ErrInvalid, s, i+1, part, r.key)
		}
		if (r.op == '=' || r.op == '!') && !ValidLabel(r.value) {
			return Selector{}, fmt.Errorf("%w: selector %q: requirement %d (%q): label value %q: want 1-63 letters, digits, '.', '_', '/' or '-'", ErrInvalid, s, i+1, part, r.value)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.key]
		switch r.op {
		case '=':
			if !ok || v != r.value {
				return false
			}
		case '!':
			if ok && v == r.value {
				return false
			}
		case 'e':
			if !ok {
				return false
			}
		case 'a':
			if ok {
				return false
			}
		}
	}
	return true
}

// String returns the selector as it was parsed.
func (s Selector) String() string { return s.text }

// CheckLabels names the first label that breaks ValidLabel.
func CheckLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !ValidLabel(k) {
			return fmt.Errorf("%w: label key %q: want 1-63 letters, digits, '.', '_', '/' or '-'", ErrInvalid, k)
		}
		if !ValidLabel(labels[k]) {
			return fmt.Errorf("%w: label %s: value %q: want 1-63 letters, digits, '.', '_', '/' or '-'", ErrInvalid, k, labels[k])
		}
	}
	return nil
}
