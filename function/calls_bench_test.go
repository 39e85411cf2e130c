package function_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
)

// BenchmarkNativeCall: one call of the gateway API from a native Go
// function, answered at once by the host's CallHandler: the transport's
// own cost per call (one invocation making b.N calls in turn).
func BenchmarkNativeCall(b *testing.B) {
	h, err := function.New(&function.Options{Calls: func(context.Context, *function.Call) ([]byte, error) { return nil, nil }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close(context.Background()) })
	s := nativeSpec("api", "api")
	s.Timeout = function.Duration(time.Minute)
	if err := h.Deploy(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	call := func(n int) {
		if a := callAPI(b, h, "api", `{"call":"publish","topic":"outputs/api/x","repeat":`+strconv.Itoa(n)+`}`); a.Error != nil {
			b.Fatal(a.Error)
		}
	}
	call(1)
	b.ResetTimer()
	call(b.N)
}
