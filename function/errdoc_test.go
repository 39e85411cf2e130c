package function

import (
	"slices"
	"testing"
)

// TestFunctionErrorShapes: each runtime client's error document keeps its
// stack: Python's stackTrace strings, aws-lambda-go's frame objects (they
// used to arrive as nothing), Lambda Node.js's trace (it used to be
// dropped).
func TestFunctionErrorShapes(t *testing.T) {
	for _, c := range []struct {
		name, body, header string
		typ, msg           string
		stack              []string
	}{
		{"python", `{"errorMessage":"boom","errorType":"ValueError","stackTrace":["  File \"/code/f.py\", line 3, in handler\n"]}`, "",
			"ValueError", "boom", []string{"  File \"/code/f.py\", line 3, in handler\n"}},
		{"aws-lambda-go panic", `{"errorMessage":"handler panicked","errorType":"string","stackTrace":[{"path":"github.com/x/main.go","line":42,"label":"main.main.func1"}],"shouldExit":true}`, "",
			"string", "handler panicked", []string{"main.main.func1 (github.com/x/main.go:42)"}},
		{"aws-lambda-ric", `{"errorType":"Error","errorMessage":"bad","trace":["Error: bad","    at Runtime.handler (file:///code/index.mjs:2:9)"]}`, "",
			"Error", "bad", []string{"Error: bad", "    at Runtime.handler (file:///code/index.mjs:2:9)"}},
		{"type from the header", `{"errorMessage":"m"}`, "Runtime.ImportModuleError", "Runtime.ImportModuleError", "m", nil},
		{"not JSON", "  plain words \n", "", "Unhandled", "plain words", nil},
		{"a message that is not a string", `{"errorMessage":{"code":7}}`, "", "Unhandled", `{"code":7}`, nil},
	} {
		e := functionError("f", "1", []byte(c.body), c.header)
		if e.Type != c.typ || e.Message != c.msg || !slices.Equal(e.Stack, c.stack) {
			t.Errorf("%s: got type %q message %q stack %q; want %q %q %q", c.name, e.Type, e.Message, e.Stack, c.typ, c.msg, c.stack)
		}
	}
}

// FuzzFunctionError: whatever a function posts as its error is read
// without a panic and always yields a type.
func FuzzFunctionError(f *testing.F) {
	f.Add([]byte(`{"errorMessage":"x","errorType":"E","stackTrace":[{"path":"p","line":1,"label":"l"},"s",3]}`), "")
	f.Add([]byte(`{"trace":"a\nb"}`), "T")
	f.Add([]byte(`[1,2]`), "")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		if e := functionError("f", "1", body, header); e.Type == "" {
			t.Fatalf("no type for %q", body)
		}
	})
}
