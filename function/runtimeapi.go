package function

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/invoke"
)

// MaxResponseBytes is the largest response a runtime may post (Lambda's
// 6 MiB plus its 100 bytes of slack); larger ones get 413.
const MaxResponseBytes = 6<<20 + 100

// profile is what differs between the Lambda and FC runtime APIs.
type profile struct {
	envVar       string
	prefix       string
	postOK       int
	hdrRequestID string
	hdrDeadline  string
	hasInitError bool
}

var profiles = map[API]*profile{
	APILambda: {
		envVar: "AWS_LAMBDA_RUNTIME_API", prefix: "/2018-06-01/runtime", postOK: http.StatusAccepted,
		hdrRequestID: "Lambda-Runtime-Aws-Request-Id", hdrDeadline: "Lambda-Runtime-Deadline-Ms", hasInitError: true,
	},
	APIFC: {
		envVar: "FC_RUNTIME_API", prefix: "/2020-11-11/runtime", postOK: http.StatusOK,
		hdrRequestID: "x-fc-request-id", hdrDeadline: "x-fc-function-deadline",
	},
}

// call is one invocation handed to a runtime.
type call struct {
	id       string
	req      invoke.Request
	deadline time.Time
	result   chan callResult // receives once
}

type callResult struct {
	resp invoke.Response
	err  error
}

// runtimeAPI serves one instance's runtime API: one invocation per /next.
// A runtime may ask for the next invocation before it answers the current
// one, as fc-runtime-go-sdk does and as both services allow: the current
// invocation stays answerable by its id until it is answered or its
// deadline passes (which ends the process).
type runtimeAPI struct {
	p       *profile
	fn, ver string
	// static are the headers every /next carries for this instance
	// (Lambda: the function's ARN; FC: the function's name, handler,
	// memory and timeout, where it runs, and the credentials headers,
	// empty: the edge has no STS).
	static http.Header
	// secret is the first path segment of every request: the instance
	// has it in its address (AWS_LAMBDA_RUNTIME_API or FC_RUNTIME_API).
	secret []byte
	// peer, when set, checks a connection's client once, at its first
	// request (peer.go).
	peer  func(net.Conn) error
	log   *slog.Logger
	calls chan *call // run hands invocations to the /next long poll
	// polling counts the /next requests waiting for an invocation.
	polling atomic.Int32

	mu        sync.Mutex
	current   *call
	ready     chan struct{} // closed at the first /next
	readyOnce sync.Once
	initErr   chan error // receives an /init/error
}

func newRuntimeAPI(p *profile, spec Spec, secret string, peer func(net.Conn) error, log *slog.Logger) *runtimeAPI {
	static := http.Header{}
	if p == profiles[APILambda] {
		static.Set("Lambda-Runtime-Invoked-Function-Arn", functionARN(spec))
	}
	if p == profiles[APIFC] {
		// What Function Compute sends a custom runtime with every request
		// ("custom runtime specification: common request headers").
		// fc-runtime-go-sdk refuses an invocation without the timeout.
		// The region and account are the ones the Lambda ARN names.
		for k, v := range map[string]string{
			"x-fc-function-name": spec.Name, "x-fc-qualifier": spec.Version, "x-fc-service-name": spec.Name,
			"x-fc-function-handler": spec.Handler, "x-fc-function-memory": strconv.Itoa(spec.MemoryLimitMB),
			"x-fc-function-timeout": strconv.Itoa(int(time.Duration(spec.Timeout).Seconds())),
			"x-fc-region":           edgeRegion, "x-fc-account-id": edgeAccount, "x-fc-version-id": spec.Version,
			"x-fc-access-key-id": "", "x-fc-access-key-secret": "", "x-fc-security-token": "",
			// No initializer or lifecycle hooks, no log project: present
			// and empty, as FC sends them for a function without.
			"x-fc-function-initializer": "", "x-fc-initialization-timeout": "",
			"x-fc-instance-lifecycle-pre-stop-handler": "", "x-fc-instance-lifecycle-pre-freeze-handler": "",
			"x-fc-service-logproject": "", "x-fc-service-logstore": "",
			"x-fc-control-path": "/invoke", // an event invocation
		} {
			static[http.CanonicalHeaderKey(k)] = []string{v}
		}
	}
	return &runtimeAPI{p: p, fn: spec.Name, ver: spec.Version, static: static, secret: []byte(secret), peer: peer, log: log,
		calls: make(chan *call), ready: make(chan struct{}), initErr: make(chan error, 1)}
}

// functionARN is the Lambda ARN a function is told it has: its name and
// version in the edge's region and account.
func functionARN(spec Spec) string {
	return "arn:aws:lambda:" + edgeRegion + ":" + edgeAccount + ":function:" + spec.Name + ":" + spec.Version
}

// edgeRegion and edgeAccount stand for the cloud's region and account in
// what a function is told of where it runs (the Lambda ARN, FC's headers).
const (
	edgeRegion  = "edge"
	edgeAccount = "000000000000"
)

// connKey finds a connection's check in its requests' contexts.
type connKey struct{}

// connCheck is the outcome of one connection's peer check, made once.
type connCheck struct {
	conn net.Conn
	once sync.Once
	err  error
}

// connContext gives each connection its connCheck (http.Server.ConnContext).
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connCheck{conn: c})
}

// admit checks a request's secret and its connection's client, and
// returns the path after the secret, or why it is refused.
func (a *runtimeAPI) admit(r *http.Request) (string, error) {
	path := r.URL.Path
	n := len(a.secret)
	if len(path) < n+2 || path[0] != '/' || path[n+1] != '/' || subtle.ConstantTimeCompare([]byte(path[1:n+1]), a.secret) != 1 {
		return "", errors.New("the path does not start with the instance's secret")
	}
	if a.peer != nil {
		cc, _ := r.Context().Value(connKey{}).(*connCheck)
		if cc == nil {
			return "", errors.New("no connection to check")
		}
		cc.once.Do(func() { cc.err = a.peer(cc.conn) })
		if cc.err != nil {
			return "", cc.err
		}
	}
	return path[n+1:], nil
}

func (a *runtimeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, err := a.admit(r)
	if err != nil {
		// Refused before anything is read or changed; the path is not
		// logged, as it may carry a guess at the secret.
		a.log.Warn("runtime API request refused", "function", a.fn, "version", a.ver,
			"remote", r.RemoteAddr, "method", r.Method, "err", err)
		w.Header().Set("Connection", "close")
		apiError(w, http.StatusForbidden, "AccessDenied", "this runtime API belongs to another process")
		return
	}
	path, ok := strings.CutPrefix(rest, a.p.prefix)
	if !ok {
		apiError(w, http.StatusNotFound, "UnknownPath", "no such runtime API path: "+rest)
		return
	}
	switch {
	case path == "/invocation/next" && r.Method == http.MethodGet:
		a.next(w, r)
	case path == "/init/error" && r.Method == http.MethodPost && a.p.hasInitError:
		a.initError(w, r)
	case strings.HasPrefix(path, "/invocation/") && r.Method == http.MethodPost:
		rest := strings.TrimPrefix(path, "/invocation/")
		id, kind, _ := strings.Cut(rest, "/")
		switch kind {
		case "response":
			a.respond(w, r, id)
		case "error":
			a.fail(w, r, id)
		default:
			apiError(w, http.StatusNotFound, "UnknownPath", "no such runtime API path: "+rest)
		}
	default:
		apiError(w, http.StatusNotFound, "UnknownPath", fmt.Sprintf("no such runtime API endpoint: %s %s", r.Method, rest))
	}
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"errorType": typ, "errorMessage": msg})
}

func (a *runtimeAPI) next(w http.ResponseWriter, r *http.Request) {
	a.readyOnce.Do(func() { close(a.ready) })
	var c *call
	a.polling.Add(1)
	select {
	case c = <-a.calls:
		a.polling.Add(-1)
	case <-r.Context().Done():
		a.polling.Add(-1)
		return
	}
	a.mu.Lock()
	a.current = c
	a.mu.Unlock()
	h := w.Header()
	for k, v := range a.static {
		h[k] = v
	}
	h.Set(a.p.hdrRequestID, c.id)
	h.Set(a.p.hdrDeadline, strconv.FormatInt(c.deadline.UnixMilli(), 10))
	ct := c.req.ContentType
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	if a.p == profiles[APILambda] {
		// The caller's W3C trace context, in the X-Ray form the runtime
		// clients expect (aws-lambda-go sets _X_AMZN_TRACE_ID from it).
		if x := c.req.Trace.XRay(); x != "" {
			h.Set("Lambda-Runtime-Trace-Id", x)
		} else {
			h.Set("Lambda-Runtime-Trace-Id", "Root=1-"+c.id)
		}
		if len(c.req.Source) > 0 {
			cc, _ := json.Marshal(map[string]any{"custom": c.req.Source})
			h.Set("Lambda-Runtime-Client-Context", string(cc))
		}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(c.req.Payload)
}

// take returns the current invocation if id is its ID, and clears it.
func (a *runtimeAPI) take(w http.ResponseWriter, id string) *call {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.current
	if c == nil || c.id != id {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", fmt.Sprintf("%q is not the current invocation", id))
		return nil
	}
	a.current = nil
	return c
}

func (a *runtimeAPI) respond(w http.ResponseWriter, r *http.Request, id string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxResponseBytes+1))
	if err != nil {
		apiError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	c := a.take(w, id)
	if c == nil {
		return
	}
	if len(body) > MaxResponseBytes {
		c.result <- callResult{err: &invoke.Error{Function: a.fn, Version: a.ver, Type: "Function.ResponseSizeTooLarge",
			Message: fmt.Sprintf("response over %d bytes", MaxResponseBytes)}}
		apiError(w, http.StatusRequestEntityTooLarge, "Function.ResponseSizeTooLarge", fmt.Sprintf("response over %d bytes", MaxResponseBytes))
		return
	}
	c.result <- callResult{resp: invoke.Response{Payload: body, ContentType: r.Header.Get("Content-Type")}}
	a.ok(w)
}

func (a *runtimeAPI) ok(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.p.postOK)
	_, _ = io.WriteString(w, `{"status":"OK"}`)
}

func (a *runtimeAPI) parseError(r *http.Request) *invoke.Error {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	return functionError(a.fn, a.ver, body, r.Header.Get("Lambda-Runtime-Function-Error-Type"))
}

func (a *runtimeAPI) fail(w http.ResponseWriter, r *http.Request, id string) {
	fe := a.parseError(r)
	c := a.take(w, id)
	if c == nil {
		return
	}
	c.result <- callResult{err: fe}
	a.ok(w)
}

func (a *runtimeAPI) initError(w http.ResponseWriter, r *http.Request) {
	fe := a.parseError(r)
	select {
	case a.initErr <- fe:
	default:
	}
	a.ok(w)
}

var errNotReady = errors.New("runtime did not ask for its first invocation")

// errNotTaken marks an invocation an instance never handed to its process
// (it had died): the pool runs it on another instance.
var errNotTaken = errors.New("the instance's process was gone")
