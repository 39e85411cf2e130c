package invoke_test

import (
	"strings"
	"testing"

	"github.com/edgekit/edgekit/invoke"
)

func TestParseTrace(t *testing.T) {
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tr := invoke.ParseTrace(good, "congo=t61rcWkgMzE")
	if !tr.Valid() || tr.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" || tr.ParentID() != "00f067aa0ba902b7" || !tr.Sampled() || tr.State != "congo=t61rcWkgMzE" {
		t.Errorf("good: %+v", tr)
	}
	if x := tr.XRay(); x != "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1" {
		t.Errorf("X-Ray header %q", x)
	}
	for _, bad := range []string{
		"",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",    // no flags
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // a version this reads no further than 00
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		"00-4bf92f3577b34da6a3ce929d0e0e4736\n00f067aa0ba902b7-01",
	} {
		if tr := invoke.ParseTrace(bad, "a=b"); tr.Valid() || tr.State != "" {
			t.Errorf("%q read as %+v", bad, tr)
		}
	}
	if tr := invoke.ParseTrace(good, strings.Repeat("x", 600)); tr.State != "" || !tr.Valid() {
		t.Errorf("a tracestate over 512 bytes kept: %+v", tr)
	}
	if tr := invoke.ParseTrace(good, "a=b\r\nEvil: 1"); tr.State != "" {
		t.Errorf("a tracestate with a line break kept: %q", tr.State)
	}
}

// FuzzParseTrace: whatever a caller sends, a Trace is valid only in the
// W3C format, and its X-Ray form is well formed.
func FuzzParseTrace(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=b")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "")
	f.Fuzz(func(t *testing.T, parent, state string) {
		tr := invoke.ParseTrace(parent, state)
		if !tr.Valid() {
			if tr.State != "" {
				t.Fatal("a tracestate kept without a traceparent")
			}
			return
		}
		if tr.Parent != parent || len(tr.XRay()) != len("Root=1-")+8+1+24+len(";Parent=")+16+len(";Sampled=")+1 {
			t.Fatalf("%q → %+v %q", parent, tr, tr.XRay())
		}
	})
}
