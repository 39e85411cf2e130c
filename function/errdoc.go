package function

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/edgekit/edgekit/invoke"
)

// functionError reads the error document a function posts (the runtime
// APIs' /error and /init/error, the native protocol's E and I frames) in
// the shape each runtime client writes it: errorMessage and errorType,
// and the stack as stackTrace strings (Python, Java, edgekit's
// bootstraps), stackTrace frame objects {path, line, label}
// (aws-lambda-go) or trace strings (Lambda's Node.js runtime and
// aws-lambda-ric). A body that is not such a document is the message.
// typ, when the document names none, is the type (the runtime API's
// Lambda-Runtime-Function-Error-Type header), else Unhandled.
func functionError(fn, ver string, body []byte, typ string) *invoke.Error {
	var doc struct {
		Message    json.RawMessage `json:"errorMessage"`
		Type       string          `json:"errorType"`
		StackTrace json.RawMessage `json:"stackTrace"`
		Trace      json.RawMessage `json:"trace"`
	}
	e := &invoke.Error{Function: fn, Version: ver}
	if err := json.Unmarshal(body, &doc); err != nil {
		e.Message = strings.TrimSpace(string(body))
	} else {
		e.Type = doc.Type
		// errorMessage is a string from every client; keep anything else
		// as the JSON it is rather than lose it.
		if err := json.Unmarshal(doc.Message, &e.Message); err != nil && len(doc.Message) > 0 {
			e.Message = string(doc.Message)
		}
		e.Stack = stackFrames(doc.StackTrace)
		if len(e.Stack) == 0 {
			e.Stack = stackFrames(doc.Trace)
		}
	}
	if e.Type == "" {
		e.Type = typ
	}
	if e.Type == "" {
		e.Type = "Unhandled"
	}
	return e
}

// stackFrames reads a stack as strings or as aws-lambda-go's frame
// objects, which become "label (path:line)".
func stackFrames(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		var one string
		if json.Unmarshal(raw, &one) == nil && one != "" {
			return strings.Split(strings.TrimRight(one, "\n"), "\n")
		}
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			out = append(out, s)
			continue
		}
		var f struct {
			Path  string `json:"path"`
			Line  int    `json:"line"`
			Label string `json:"label"`
		}
		if json.Unmarshal(it, &f) == nil && (f.Path != "" || f.Label != "") {
			out = append(out, fmt.Sprintf("%s (%s:%d)", f.Label, f.Path, f.Line))
			continue
		}
		out = append(out, string(it))
	}
	return out
}
