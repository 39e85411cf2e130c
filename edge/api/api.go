// Package api is the gateway's local HTTP API, as an http.Handler: the
// deployment's status and history, the apps, the functions (list, status,
// invoke through package trigger/httpcall, logs), the devices (list,
// shadow, get and set properties, call a service), the containers (status,
// logs, stats), Prometheus metrics, and health. docs/openapi.json describes
// every route; a test keeps the two the same.
//
// Every route but /healthz and /readyz takes the operator's bearer token
// (compared in constant time); a function's own token (httpcall.Tokens)
// reaches only the function calls. JSON in and out; request bodies are
// bounded. The gateway (package edge) serves it on loopback by default, on
// an http.Server with timeouts (httpcall.NewHTTPServer).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/fnapi"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/httpjson"
	"github.com/edgekit/edgekit/invoke"
	"github.com/edgekit/edgekit/trigger/httpcall"
)

// Options say what the API serves. Token, Functions and Deployments are
// required; a part left nil answers 404 on its routes.
type Options struct {
	// Token is the operator's bearer token: at least 16 characters.
	Token string
	// Callers holds the functions' own tokens (they may call functions).
	Callers *httpcall.Tokens
	// Functions is the function host.
	Functions *function.Host
	// Deployments is the reconciler; State its store (for history).
	Deployments *reconcile.Reconciler
	State       *state.Store
	// Devices and Containers are the device and container managers.
	Devices    *device.Manager
	Containers *container.Manager
	// Metrics is the registry /metrics serves.
	Metrics prometheus.Gatherer
	// Calls serves what functions ask of the gateway (package fnapi) on
	// POST /v1/calls/{method}, for functions that speak a runtime API
	// rather than the native protocol; the caller is the function its
	// token was issued to. Nil: the route answers 404.
	Calls function.CallHandler
	// Ready reports whether the gateway is ready (/readyz); nil: ready.
	Ready func() error
	// Logger receives the API's records; nil discards.
	Logger *slog.Logger
}

// API is the local HTTP API. It is safe for concurrent use; Close ends the
// asynchronous function calls.
type API struct {
	opts    Options
	log     *slog.Logger
	calls   *httpcall.Handler
	handler http.Handler
}

// maxBody bounds a request body other than a function call's.
const maxBody = 4 << 20

// route is one of the API's routes: docs/openapi.json lists the same.
type route struct {
	pattern string // "METHOD /path"
	public  bool   // no token needed
	callers bool   // a function's own token is enough
	// absent, when set, says the part the route serves is not there: the
	// route answers 404 with it, and the handler never sees a nil part.
	absent string
	handle http.HandlerFunc
}

// New returns the API.
func New(opts *Options) (*API, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Functions == nil || o.Deployments == nil {
		return nil, errors.New("api: Options.Functions and Options.Deployments are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	calls, err := httpcall.NewHandler(o.Functions, &httpcall.Options{Token: o.Token, Callers: o.Callers, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	a := &API{opts: o, log: o.Logger, calls: calls}
	mux := http.NewServeMux()
	operator := func(h http.Handler) http.Handler {
		return calls.Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, _ := httpcall.Caller(r.Context()); c != "operator" {
				httpjson.Error(w, http.StatusForbidden, "Forbidden", errors.New("this route takes the operator's token"))
				return
			}
			h.ServeHTTP(w, r)
		}))
	}
	for _, rt := range a.routes() {
		h := rt.handle
		if rt.absent != "" {
			why := errors.New(rt.absent)
			h = func(w http.ResponseWriter, _ *http.Request) { httpjson.Error(w, http.StatusNotFound, "NotFound", why) }
		}
		if rt.public || rt.callers { // httpcall's handler checks the callers' tokens itself
			mux.Handle(rt.pattern, h)
		} else {
			mux.Handle(rt.pattern, operator(h))
		}
	}
	a.handler = mux
	return a, nil
}

// routes is the API: each pattern once, as docs/openapi.json has it.
func (a *API) routes() []route {
	absent := func(missing bool, why string) string {
		if missing {
			return why
		}
		return ""
	}
	noMetrics := absent(a.opts.Metrics == nil, "no metrics registry")
	noState := absent(a.opts.State == nil, "no state store")
	noDevices := absent(a.opts.Devices == nil, "no device manager")
	noContainers := absent(a.opts.Containers == nil, "no container runtime")
	return []route{
		{pattern: "GET /healthz", public: true, handle: a.healthz},
		{pattern: "GET /readyz", public: true, handle: a.readyz},
		{pattern: "GET /metrics", absent: noMetrics, handle: a.metrics},
		{pattern: "GET /v1/deployment", handle: a.deployment},
		{pattern: "POST /v1/deployment", handle: a.submit},
		{pattern: "GET /v1/apps", handle: a.apps},
		{pattern: "GET /v1/apps/{name}/history", absent: noState, handle: a.history},
		{pattern: "GET /v1/functions", handle: a.functions},
		{pattern: "GET /v1/functions/{name}", handle: a.function},
		{pattern: "GET /v1/functions/{name}/logs", handle: a.functionLogs},
		{pattern: "POST /v1/functions/{name}/invoke", callers: true, handle: a.calls.ServeHTTP},
		{pattern: "GET /v1/invocations/{id}", callers: true, handle: a.calls.ServeHTTP},
		{pattern: "POST /v1/calls/{method}", callers: true, absent: absent(a.opts.Calls == nil, "no gateway API for functions"), handle: a.authorizedCall},
		{pattern: "GET /v1/devices", absent: noDevices, handle: a.devices},
		{pattern: "GET /v1/devices/{name}", absent: noDevices, handle: a.device},
		{pattern: "POST /v1/devices/{name}/get", absent: noDevices, handle: a.deviceGet},
		{pattern: "POST /v1/devices/{name}/set", absent: noDevices, handle: a.deviceSet},
		{pattern: "POST /v1/devices/{name}/services/{service}", absent: noDevices, handle: a.deviceCall},
		{pattern: "GET /v1/containers", absent: noContainers, handle: a.containers},
		{pattern: "GET /v1/containers/{name}/logs", absent: noContainers, handle: a.containerLogs},
		{pattern: "GET /v1/containers/{name}/stats", absent: noContainers, handle: a.containerStats},
	}
}

// ServeHTTP answers the API's routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

// Close ends the asynchronous function calls (bounded by ctx). It is safe
// to call twice.
func (a *API) Close(ctx context.Context) error { return a.calls.Close(ctx) }

// fail answers err with the status its sentinel says.
func fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, invoke.ErrNotFound), errors.Is(err, device.ErrUnknownDevice), errors.Is(err, container.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "NotFound", err)
	case errors.Is(err, device.ErrUnknownProperty), errors.Is(err, device.ErrUnknownService), errors.Is(err, device.ErrInvalidValue),
		errors.Is(err, device.ErrReadOnly), errors.Is(err, app.ErrInvalid), errors.Is(err, app.ErrSchema):
		httpjson.Error(w, http.StatusBadRequest, "BadRequest", err)
	case errors.Is(err, reconcile.ErrStale):
		httpjson.Error(w, http.StatusConflict, "Stale", err)
	case errors.Is(err, device.ErrOffline), errors.Is(err, container.ErrUnavailable):
		httpjson.Error(w, http.StatusServiceUnavailable, "Unavailable", err)
	case errors.Is(err, context.DeadlineExceeded):
		httpjson.Error(w, http.StatusGatewayTimeout, "Timeout", err)
	default:
		httpjson.Error(w, http.StatusInternalServerError, "Internal", err)
	}
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, _ *http.Request) {
	if a.opts.Ready != nil {
		if err := a.opts.Ready(); err != nil {
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
	}
	httpjson.Write(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(a.opts.Metrics, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (a *API) deployment(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, a.opts.Deployments.Status())
}

func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, app.MaxDocument))
	if err != nil {
		httpjson.Error(w, http.StatusRequestEntityTooLarge, "BadRequest", fmt.Errorf("body: %w", err))
		return
	}
	if err := a.opts.Deployments.SubmitDocument(b); err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusAccepted, a.opts.Deployments.Status())
}

func (a *API) apps(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, a.opts.Deployments.Status().Apps)
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	h, err := a.opts.State.History(r.PathValue("name"), max(limit, 0))
	if err != nil && len(h) == 0 {
		fail(w, err)
		return
	}
	if h == nil {
		h = []app.AppStatus{}
	}
	httpjson.Write(w, http.StatusOK, h)
}

func (a *API) functions(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, a.opts.Functions.List())
}

func (a *API) function(w http.ResponseWriter, r *http.Request) {
	st, err := a.opts.Functions.Status(r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}

func (a *API) functionLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := logstore.Query{Function: r.PathValue("name"), Contains: q.Get("contains"), RequestID: q.Get("request_id")}
	query.Limit, _ = strconv.Atoi(q.Get("limit"))
	for field, t := range map[string]*time.Time{"from": &query.From, "to": &query.To} {
		if v := q.Get(field); v != "" {
			var err error
			if *t, err = time.Parse(time.RFC3339, v); err != nil {
				httpjson.Error(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("%s: %w", field, err))
				return
			}
		}
	}
	recs, err := a.opts.Functions.Logs(query)
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, recs)
}

func (a *API) devices(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, a.opts.Devices.Devices())
}

func (a *API) device(w http.ResponseWriter, r *http.Request) {
	sh, err := a.opts.Devices.Shadow(r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, sh)
}

// readings is a Get's answer: values, and per property why it failed.
func readings(got map[string]device.Reading) map[string]any {
	values, errs := map[string]any{}, map[string]string{}
	for id, rd := range got {
		if rd.Err != nil {
			errs[id] = rd.Err.Error()
			continue
		}
		values[id] = rd.Value
	}
	return map[string]any{"properties": values, "errors": errs}
}

func (a *API) deviceGet(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Properties []string `json:"properties"`
	}
	if !httpjson.Decode(w, r, maxBody, &body) {
		return
	}
	got, err := a.opts.Devices.Get(r.Context(), r.PathValue("name"), body.Properties)
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, readings(got))
}

func (a *API) deviceSet(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Properties map[string]any `json:"properties"`
	}
	if !httpjson.Decode(w, r, maxBody, &body) {
		return
	}
	res, err := a.opts.Devices.Set(r.Context(), r.PathValue("name"), body.Properties)
	if err != nil {
		fail(w, err)
		return
	}
	out := map[string]any{}
	for id, e := range res {
		if e != nil {
			out[id] = e.Error()
		} else {
			out[id] = nil
		}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"results": out})
}

func (a *API) deviceCall(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if !httpjson.Decode(w, r, maxBody, &in) {
		return
	}
	out, err := a.opts.Devices.Call(r.Context(), r.PathValue("name"), r.PathValue("service"), in)
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"output": out})
}

func (a *API) containers(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, a.opts.Containers.Status())
}

func (a *API) containerLogs(w http.ResponseWriter, r *http.Request) {
	tail, _ := strconv.Atoi(r.URL.Query().Get("tail"))
	if tail <= 0 {
		tail = 100
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.opts.Containers.Logs(ctx, r.PathValue("name"), container.LogOptions{Tail: tail}, w); err != nil {
		fail(w, err)
	}
}

func (a *API) containerStats(w http.ResponseWriter, r *http.Request) {
	st, err := a.opts.Containers.Stats(r.Context(), r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}

// authorizedCall is call behind the callers' token check.
func (a *API) authorizedCall(w http.ResponseWriter, r *http.Request) {
	a.calls.Authorize(http.HandlerFunc(a.call)).ServeHTTP(w, r)
}

// call answers a function's call of the gateway: the body is
// {"args": {...}, "payload": "<base64>"}, the header Edgekit-Deadline-Ms
// the invocation's deadline (Unix ms); the answer is the call's payload,
// or an fnapi error {"errorType", "errorMessage"} with the status its
// type says.
func (a *API) call(w http.ResponseWriter, r *http.Request) {
	caller, _ := httpcall.Caller(r.Context())
	if caller == "operator" {
		writeCallError(w, fnapi.Errorf(fnapi.ErrForbidden, "the gateway API answers functions: call with a function's own token"))
		return
	}
	st, err := a.opts.Functions.Status(caller)
	if err != nil {
		writeCallError(w, fnapi.Errorf(fnapi.ErrUnavailable, "function %s is not deployed", caller))
		return
	}
	var body struct {
		Args    json.RawMessage `json:"args"`
		Payload []byte          `json:"payload"`
	}
	if !httpjson.Decode(w, r, 2*(fnapi.MaxArgs+fnapi.MaxPayload), &body) {
		return
	}
	method := r.PathValue("method")
	switch {
	case len(body.Args) > fnapi.MaxArgs:
		writeCallError(w, fnapi.Errorf(fnapi.ErrBadRequest, "%s: arguments of %d bytes, above the limit of %d", method, len(body.Args), fnapi.MaxArgs))
		return
	case len(body.Payload) > fnapi.MaxPayload:
		writeCallError(w, fnapi.Errorf(fnapi.ErrBadRequest, "%s: payload of %d bytes, above the limit of %d", method, len(body.Payload), fnapi.MaxPayload))
		return
	}
	deadline := time.Now().Add(time.Duration(st.Spec.Timeout))
	if ms, err := strconv.ParseInt(r.Header.Get("Edgekit-Deadline-Ms"), 10, 64); err == nil && ms > 0 {
		if d := time.UnixMilli(ms); d.Before(deadline) {
			deadline = d
		}
	}
	if !time.Now().Before(deadline) {
		writeCallError(w, fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline had passed when it arrived", method))
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	out, err := a.opts.Calls(ctx, &function.Call{Function: st.Spec, Method: method, Args: body.Args, Payload: body.Payload})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fnapi.Errorf(fnapi.ErrTimeout, "%s: the call's deadline passed: %v", method, err)
		}
		writeCallError(w, function.CallError(err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(out)
}

// callStatus is the HTTP status of a call's error type; a type that is
// none of the gateway's (an invoked function's own) is 502.
func callStatus(typ string) int {
	switch typ {
	case "Forbidden":
		return http.StatusForbidden
	case "BadRequest", "InvalidValue", "ReadOnly":
		return http.StatusBadRequest
	case "Timeout":
		return http.StatusGatewayTimeout
	case "Unavailable", "Offline":
		return http.StatusServiceUnavailable
	case "TooManyCalls", "Throttled":
		return http.StatusTooManyRequests
	case "UnknownFunction", "UnknownDevice", "UnknownProperty", "UnknownService":
		return http.StatusNotFound
	}
	return http.StatusBadGateway
}

// writeCallError answers a call's error as fnapi.Error's JSON.
func writeCallError(w http.ResponseWriter, e *fnapi.Error) { httpjson.Write(w, callStatus(e.Type), e) }
