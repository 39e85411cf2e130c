package main

// The Function Compute runtime client of this test function: the API and
// invoke loop of github.com/aliyun/fc-runtime-go-sdk as its documentation
// describes them (the module is not served by the proxy here): fc.Start
// with a handler func(context.Context, Event) (Result, error), the
// invocation's context from FromContext, the next invocation asked for
// before the current one is answered, and an invocation without
// x-fc-function-timeout refused.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Credentials are the role's temporary credentials (fccontext.Credentials).
type Credentials struct{ AccessKeyId, AccessKeySecret, SecurityToken string }

// FunctionMeta is the function (fccontext.FunctionMeta).
type FunctionMeta struct {
	Name, Handler   string
	Memory, Timeout int
}

// ServiceMeta is the service (fccontext.ServiceMeta).
type ServiceMeta struct{ ServiceName, LogProject, LogStore, Qualifier, VersionId string }

// FcContext is the invocation's context (fccontext.FcContext).
type FcContext struct {
	RequestID   string
	Credentials Credentials
	Function    FunctionMeta
	Service     ServiceMeta
	Region      string
	AccountId   string
	RetryCount  int
	// Headers are every x-fc-* header the invocation came with, for the
	// host's test.
	Headers map[string]string
}

type ctxKey struct{}

// FromContext returns the invocation's FcContext (fccontext.FromContext).
func FromContext(ctx context.Context) (*FcContext, bool) {
	c, ok := ctx.Value(ctxKey{}).(*FcContext)
	return c, ok
}

type next struct {
	resp  *http.Response
	event []byte
	err   error
}

// Start runs handler, a func(context.Context, E) (R, error), for every
// invocation (fc.Start).
func Start(handler any) {
	hv := reflect.ValueOf(handler)
	evType := hv.Type().In(1)
	base := "http://" + os.Getenv("FC_RUNTIME_API") + "/2020-11-11/runtime/invocation/"
	get := func() <-chan next {
		ch := make(chan next, 1)
		go func() {
			resp, err := http.Get(base + "next")
			if err != nil {
				ch <- next{err: err}
				return
			}
			event, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- next{resp: resp, event: event}
		}()
		return ch
	}
	pending := get()
	for {
		n := <-pending
		if n.err != nil {
			fmt.Fprintln(os.Stderr, "next:", n.err)
			os.Exit(1)
		}
		pending = get() // the next, asked for before this one is answered
		h := n.resp.Header
		id := h.Get("x-fc-request-id")
		kind, body := invoke(hv, evType, h, n.event)
		post, err := http.Post(base+id+"/"+kind, "application/json", bytes.NewReader(body))
		if err != nil || post.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "post:", err, post)
			os.Exit(1)
		}
		post.Body.Close()
	}
}

func errorBody(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"errorMessage": msg, "errorType": typ})
	return b
}

// invoke calls the handler for one invocation and returns "response" or
// "error" with the body to post.
func invoke(hv reflect.Value, evType reflect.Type, h http.Header, event []byte) (string, []byte) {
	timeout, err := strconv.Atoi(h.Get("x-fc-function-timeout"))
	if err != nil {
		return "error", errorBody("InvalidInvocation", "no x-fc-function-timeout")
	}
	memory, _ := strconv.Atoi(h.Get("x-fc-function-memory"))
	fc := &FcContext{
		RequestID:   h.Get("x-fc-request-id"),
		Credentials: Credentials{h.Get("x-fc-access-key-id"), h.Get("x-fc-access-key-secret"), h.Get("x-fc-security-token")},
		Function:    FunctionMeta{Name: h.Get("x-fc-function-name"), Handler: h.Get("x-fc-function-handler"), Memory: memory, Timeout: timeout},
		Service: ServiceMeta{ServiceName: h.Get("x-fc-service-name"), LogProject: h.Get("x-fc-service-logproject"), LogStore: h.Get("x-fc-service-logstore"),
			Qualifier: h.Get("x-fc-qualifier"), VersionId: h.Get("x-fc-version-id")},
		Region: h.Get("x-fc-region"), AccountId: h.Get("x-fc-account-id"), Headers: map[string]string{},
	}
	for k, v := range h {
		if k := strings.ToLower(k); strings.HasPrefix(k, "x-fc-") && k != "x-fc-request-id" && k != "x-fc-function-deadline" {
			fc.Headers[k] = v[0]
		}
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), ctxKey{}, fc), time.Duration(timeout)*time.Second)
	defer cancel()
	ev := reflect.New(evType)
	if err := json.Unmarshal(event, ev.Interface()); err != nil {
		return "error", errorBody("UnmarshalTypeError", err.Error())
	}
	out := hv.Call([]reflect.Value{reflect.ValueOf(ctx), ev.Elem()})
	if e, _ := out[1].Interface().(error); e != nil {
		return "error", errorBody(reflect.TypeOf(e).String(), e.Error())
	}
	body, err := json.Marshal(out[0].Interface())
	if err != nil {
		return "error", errorBody("MarshalError", err.Error())
	}
	return "response", body
}
