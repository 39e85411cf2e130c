package function_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/invoke"
)

// apiAnswer is what the test function's api behaviour answers.
type apiAnswer struct {
	Answer json.RawMessage `json:"answer"`
	Error  *struct {
		Type, Message, Is string
		Stack             []string
	} `json:"error"`
}

func callAPI(t testing.TB, h *function.Host, fn, event string) apiAnswer {
	t.Helper()
	resp, err := h.Invoke(context.Background(), fn, invoke.Request{Payload: []byte(event)})
	if err != nil {
		t.Fatalf("%s: %v", event, err)
	}
	var a apiAnswer
	if err := json.Unmarshal(resp.Payload, &a); err != nil {
		t.Fatalf("%s: answer %q: %v", event, resp.Payload, err)
	}
	return a
}

// TestNativeCalls: a native function's calls of the gateway reach the
// host's CallHandler with the caller's own spec, whatever the function
// claims, and the handler's answers and errors travel back whole.
func TestNativeCalls(t *testing.T) {
	calls := make(chan *function.Call, 10)
	h := newHost(t, &function.Options{Calls: func(ctx context.Context, c *function.Call) ([]byte, error) {
		calls <- c
		switch c.Method {
		case fnapi.Publish:
			var a fnapi.PublishArgs
			if err := json.Unmarshal(c.Args, &a); err != nil {
				return nil, fnapi.Errorf(fnapi.ErrBadRequest, "%v", err)
			}
			if strings.HasPrefix(a.Topic, "edgekit/") {
				return nil, fnapi.Errorf(fnapi.ErrForbidden, "publish on %s: the gateway's own topic", a.Topic)
			}
			return nil, nil
		case fnapi.Invoke:
			return nil, &invoke.Error{Type: "ValueError", Message: "bad reading", Stack: []string{"at f (index.js:3)"}}
		case fnapi.ConfigGet:
			return c.Function.Config, nil
		}
		return nil, fnapi.Errorf(fnapi.ErrBadRequest, "unknown method %s", c.Method)
	}})
	s := nativeSpec("api", "api")
	s.Config = json.RawMessage(`{"threshold":30}`)
	deploy(t, h, s)

	if a := callAPI(t, h, "api", `{"call":"publish","topic":"outputs/api/x","payload":"21.5","qos":1}`); a.Error != nil {
		t.Fatalf("publish: %+v", a.Error)
	}
	c := <-calls
	var args fnapi.PublishArgs
	if err := json.Unmarshal(c.Args, &args); err != nil || c.Function.Name != "api" || c.Method != fnapi.Publish ||
		args.Topic != "outputs/api/x" || args.QoS != 1 || len(args.UserProperties) != 1 || string(c.Payload) != "21.5" {
		t.Errorf("publish reached the handler as %s %s %s %q (%v)", c.Function.Name, c.Method, c.Args, c.Payload, err)
	}

	if a := callAPI(t, h, "api", `{"call":"publish","topic":"edgekit/instances/gw/status"}`); a.Error == nil || a.Error.Is != "Forbidden" || !strings.Contains(a.Error.Message, "edgekit/instances/gw/status") {
		t.Errorf("forbidden publish: %+v", a.Error)
	}
	<-calls

	if a := callAPI(t, h, "api", `{"call":"invoke","function":"other"}`); a.Error == nil || a.Error.Type != "ValueError" || a.Error.Message != "bad reading" || len(a.Error.Stack) != 1 {
		t.Errorf("invoke error: %+v", a.Error)
	}
	<-calls

	if a := callAPI(t, h, "api", `{"call":"config"}`); a.Error != nil || string(a.Answer) != `{"threshold":30}` {
		t.Errorf("config: %s %+v", a.Answer, a.Error)
	}
	<-calls

	// A call made after its deadline never reaches the handler.
	if a := callAPI(t, h, "api", `{"call":"late","topic":"outputs/api/x"}`); a.Error == nil || a.Error.Is != "Timeout" {
		t.Errorf("late call: %+v", a.Error)
	}
	select {
	case c := <-calls:
		t.Errorf("a call past its deadline reached the handler: %s %s", c.Method, c.Args)
	default:
	}
}

// TestNativeCallsConcurrent: calls made at once from several goroutines
// of a function, answered out of order and some slowly, each get their
// own answer (the callers take turns reading the answers).
func TestNativeCallsConcurrent(t *testing.T) {
	var n atomic.Int64
	h := newHost(t, &function.Options{Calls: func(ctx context.Context, c *function.Call) ([]byte, error) {
		if n.Add(1)%7 == 0 {
			select { // some calls wait for later ones to be answered first
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
			}
		}
		return nil, nil
	}})
	deploy(t, h, nativeSpec("api", "api"))
	if a := callAPI(t, h, "api", `{"call":"concurrent","topic":"outputs/api/x","repeat":50}`); a.Error != nil {
		t.Fatalf("concurrent calls: %+v", a.Error)
	}
	if got := n.Load(); got != 400 {
		t.Errorf("%d calls reached the handler, want 400", got)
	}
}

// TestNativeCallsWithoutHandler: a host that serves no gateway API
// refuses each call as Unavailable, and the function goes on.
func TestNativeCallsWithoutHandler(t *testing.T) {
	h := newHost(t, nil)
	deploy(t, h, nativeSpec("api", "api"))
	for range 2 {
		if a := callAPI(t, h, "api", `{"call":"publish","topic":"outputs/api/x"}`); a.Error == nil || a.Error.Is != "Unavailable" {
			t.Errorf("publish without a handler: %+v", a.Error)
		}
	}
}
