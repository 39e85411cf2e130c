package logstore

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// FuzzRecordEncoding: whatever a function logs, the stored line decodes
// (as Query reads it) to the same record, each invalid UTF-8 byte turned
// into U+FFFD as encoding/json would.
func FuzzRecordEncoding(f *testing.F) {
	f.Add("reading \"sensor\"\n\t\\ done", "request-1", "device", "boiler\x01\x7f")
	f.Add("\xff\xfe invalid", "", "k\u2028", "ünïcode ✓")
	f.Fuzz(func(t *testing.T, msg, requestID, key, value string) {
		r := Record{Time: time.Unix(1764072000, 123456789).UTC(), Level: slog.LevelWarn + 2, Message: msg,
			Function: "f", RequestID: requestID, Attrs: map[string]string{key: value, "other": msg}}
		var got Record
		if err := json.Unmarshal(appendRecord(nil, &r), &got); err != nil {
			t.Fatalf("stored line does not decode: %v\n%s", err, appendRecord(nil, &r))
		}
		want := r
		valid := func(s string) string { return string([]rune(s)) }
		want.Message, want.RequestID = valid(msg), valid(requestID)
		want.Attrs = map[string]string{}
		for k, v := range r.Attrs {
			want.Attrs[valid(k)] = valid(v)
		}
		if !got.Time.Equal(want.Time) || got.Level != want.Level || got.Message != want.Message || got.Function != want.Function ||
			got.RequestID != want.RequestID || len(got.Attrs) != len(want.Attrs) {
			t.Fatalf("decoded %+v, want %+v", got, want)
		}
		for k, v := range want.Attrs {
			if got.Attrs[k] != v {
				t.Fatalf("attr %q: %q, want %q", k, got.Attrs[k], v)
			}
		}
	})
}
