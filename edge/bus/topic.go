package bus

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxTopicLength is the longest topic name or filter MQTT allows, in bytes.
const MaxTopicLength = 65535

const sharePrefix = "$share/"

// ValidateTopic checks a topic name as MQTT v5 section 4.7 says: at least
// one character, valid UTF-8 without U+0000, at most 65535 bytes, and no
// wildcard characters.
func ValidateTopic(topic string) error {
	if err := validateCommon(topic); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidTopic, clip(topic), err.Error())
	}
	if i := strings.IndexAny(topic, "+#"); i >= 0 {
		return fmt.Errorf("%w %q: wildcard %q at byte %d is not allowed in a topic name", ErrInvalidTopic, clip(topic), topic[i], i)
	}
	return nil
}

// ValidateFilter checks a topic filter, including the shared-subscription
// form "$share/{group}/{filter}": '#' only as the whole last level, '+' only
// as a whole level, and a group name without '/', '+' or '#'.
func ValidateFilter(filter string) error {
	if err := validateCommon(filter); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidFilter, clip(filter), err.Error())
	}
	_, inner, shared, err := splitShared(filter)
	if err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidFilter, clip(filter), err.Error())
	}
	if shared && inner == "" {
		return fmt.Errorf("%w %q: shared subscription has no filter after the group", ErrInvalidFilter, clip(filter))
	}
	start := 0
	for level := 0; ; level++ {
		end := strings.IndexByte(inner[start:], '/')
		last := end < 0
		if last {
			end = len(inner)
		} else {
			end += start
		}
		part := inner[start:end]
		if strings.ContainsRune(part, '#') && (part != "#" || !last) {
			return fmt.Errorf("%w %q: '#' must be the whole last level (level %d is %q)", ErrInvalidFilter, clip(filter), level+1, part)
		}
		if strings.ContainsRune(part, '+') && part != "+" {
			return fmt.Errorf("%w %q: '+' must be a whole level (level %d is %q)", ErrInvalidFilter, clip(filter), level+1, part)
		}
		if last {
			return nil
		}
		start = end + 1
	}
}

// SplitShared splits "$share/{group}/{filter}" into its group and filter.
// For a filter that is not shared it returns "", filter, false. It does not
// validate the filter.
func SplitShared(filter string) (group, inner string, shared bool) {
	g, in, sh, err := splitShared(filter)
	if err != nil {
		return "", filter, false
	}
	return g, in, sh
}

func splitShared(filter string) (group, inner string, shared bool, err error) {
	if !strings.HasPrefix(filter, sharePrefix) {
		return "", filter, false, nil
	}
	rest := filter[len(sharePrefix):]
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return "", "", true, fmt.Errorf("shared subscription needs $share/{group}/{filter}")
	}
	group = rest[:slash]
	if group == "" {
		return "", "", true, fmt.Errorf("shared subscription group name is empty")
	}
	if strings.ContainsAny(group, "+#") {
		return "", "", true, fmt.Errorf("shared subscription group name %q contains a wildcard", group)
	}
	return group, rest[slash+1:], true, nil
}

func validateCommon(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > MaxTopicLength {
		return fmt.Errorf("%d bytes, longer than %d", len(s), MaxTopicLength)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("U+0000 at byte %d", i)
	}
	return nil
}

// clip shortens a string for an error message.
func clip(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Match reports whether topic matches filter (without a $share prefix; use
// SplitShared first). Both are assumed valid.
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fEnd := strings.IndexByte(filter, '/')
		tEnd := strings.IndexByte(topic, '/')
		var fl, tl string
		if fEnd < 0 {
			fl = filter
		} else {
			fl = filter[:fEnd]
		}
		if fl == "#" {
			return true
		}
		if tEnd < 0 {
			tl = topic
		} else {
			tl = topic[:tEnd]
		}
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case fEnd < 0 && tEnd < 0:
			return true
		case tEnd < 0:
			// Topic ended; "a/#" still matches "a".
			return filter[fEnd+1:] == "#"
		case fEnd < 0:
			return false
		}
		filter = filter[fEnd+1:]
		topic = topic[tEnd+1:]
	}
}
