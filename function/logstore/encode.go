package logstore

import (
	"slices"
	"time"
	"unicode/utf8"
)

// appendRecord appends r as one JSON object, the form encoding/json gives
// Record (Query decodes it with encoding/json), at a fraction of the cost:
// the host stores a record for every invocation.
func appendRecord(b []byte, r *Record) []byte {
	b = append(b, `{"time":"`...)
	b = r.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b = appendString(b, r.Level.String())
	b = append(b, `,"msg":`...)
	b = appendString(b, r.Message)
	b = append(b, `,"function":`...)
	b = appendString(b, r.Function)
	for _, f := range [...]struct{ key, v string }{{"version", r.Version}, {"instance", r.Instance}, {"request_id", r.RequestID}} {
		if f.v != "" {
			b = append(append(append(b, `,"`...), f.key...), `":`...)
			b = appendString(b, f.v)
		}
	}
	if len(r.Attrs) > 0 {
		b = append(b, `,"attrs":{`...)
		// The keys sorted in place on the stack: a record has a few.
		var space [8]string
		keys := space[:0]
		for k := range r.Attrs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, k), ':')
			b = appendString(b, r.Attrs[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
