package invoke

import "strings"

// Trace is W3C trace context (https://www.w3.org/TR/trace-context/) that
// came with an invocation's cause — the traceparent and tracestate of an
// HTTP call's headers or an MQTT v5 message's user properties — carried
// into the invocation and onto what the function's result is published
// as. edgekit passes it on unchanged; it makes no spans itself (an
// OpenTelemetry adapter can).
type Trace struct {
	Parent string // traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
	State  string // tracestate, as it came (at most 512 bytes)
}

// The names trace context travels under: HTTP headers, MQTT v5 user
// properties, and the native protocol's metadata.
const (
	TraceParentKey = "traceparent"
	TraceStateKey  = "tracestate"
)

// maxTraceState bounds a tracestate carried on (the W3C limit is 32
// entries of at most 256 characters; 512 bytes is what is propagated).
const maxTraceState = 512

// ParseTrace checks what a caller sent and returns it as a Trace, or the
// zero Trace when parent is not a valid traceparent: trace context from
// outside is never carried on malformed. A tracestate without a valid
// traceparent, or over 512 bytes, is dropped.
func ParseTrace(parent, state string) Trace {
	if !validTraceparent(parent) {
		return Trace{}
	}
	if len(state) > maxTraceState || strings.ContainsAny(state, "\r\n\x00") {
		state = ""
	}
	return Trace{Parent: parent, State: state}
}

// Valid reports whether t holds a traceparent.
func (t Trace) Valid() bool { return t.Parent != "" }

// TraceID is the 32 hex digits of the trace id ("" when not valid).
func (t Trace) TraceID() string {
	if !t.Valid() {
		return ""
	}
	return t.Parent[3:35]
}

// ParentID is the 16 hex digits of the parent id ("" when not valid).
func (t Trace) ParentID() string {
	if !t.Valid() {
		return ""
	}
	return t.Parent[36:52]
}

// Sampled reports the traceparent's sampled flag.
func (t Trace) Sampled() bool {
	return t.Valid() && (fromHex(t.Parent[54])&1) == 1
}

// XRay is the trace context as an AWS X-Ray trace header, which the Lambda
// runtime API hands functions (Lambda-Runtime-Trace-Id, _X_AMZN_TRACE_ID):
// "Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>", the same
// mapping OpenTelemetry's X-Ray propagator makes. "" when not valid.
func (t Trace) XRay() string {
	if !t.Valid() {
		return ""
	}
	id := t.TraceID()
	sampled := "0"
	if t.Sampled() {
		sampled = "1"
	}
	return "Root=1-" + id[:8] + "-" + id[8:] + ";Parent=" + t.ParentID() + ";Sampled=" + sampled
}

// validTraceparent checks version 00's format: lowercase hex, a trace id
// and parent id not all zero.
func validTraceparent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	if s[:2] != "00" {
		return false
	}
	for i, c := range []byte(s) {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return strings.Trim(s[3:35], "0") != "" && strings.Trim(s[36:52], "0") != ""
}

func fromHex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}
