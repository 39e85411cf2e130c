// Package httpcall lets local programs call functions over HTTP: the
// gateway's local endpoint, loopback by default, every request carrying
// the token ("Authorization: Bearer <token>").
//
//	POST /v1/functions/{name}/invoke          the body is the event; the answer is the result
//	POST /v1/functions/{name}/invoke?async=1  202 {"id": ...} at once
//	GET  /v1/invocations/{id}                 an asynchronous call's state and result
//
// A synchronous call answers 200 with the function's result (its content
// type, else application/json). A function's own error answers 200 with the
// header X-Edgekit-Function-Error naming its type and a JSON body
// {"error", "error_type"} with the function's own errorMessage, errorType
// and stackTrace, as the Lambda Invoke API does; the host's errors
// map to statuses: unknown function 404, throttled 429, timeout 504,
// unavailable 503. A missing or wrong token is 401, a body over the limit
// 413.
//
// Out-of-process functions reach the endpoint through the address and the
// token the gateway puts in their environment (function.Options.Env and
// EnvFor), so functions can call functions. Each function gets a token of
// its own from Options.Callers (Tokens.Issue), revoked when it goes; the
// operator's token (Options.Token) is never handed to functions.
//
// Serve runs the endpoint on a listener of its own. NewHandler gives it as
// an http.Handler instead, for a server that has other routes (the
// gateway's local API mounts it), and Handler.Authorize guards those routes
// with the same tokens.
package httpcall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/internal/httpjson"
	"github.com/edgekit/edgekit/invoke"
)

// Environment variables the gateway gives out-of-process functions.
const (
	EnvAddr  = "EDGEKIT_API"       // the endpoint's base URL
	EnvToken = "EDGEKIT_API_TOKEN" // the bearer token
)

// Options configure a Server.
type Options struct {
	// Token is the operator's bearer token; required, at least 16
	// characters. NewToken makes one.
	Token string
	// Callers, when set, holds the tokens of the other callers (one per
	// function); a request may carry one of them instead.
	Callers *Tokens
	// MaxBody bounds a request body; default 6 MiB (the Lambda limit).
	MaxBody int64
	// AsyncResults is how many asynchronous results are kept; default
	// 1,000 (the oldest go first).
	AsyncResults int
	// IdleTimeout closes a connection idle this long between requests;
	// default 30 s. A client has as long to send a request, headers and
	// body.
	IdleTimeout time.Duration
	// AsyncResultBytes bounds the bytes of the asynchronous results kept;
	// default 64 MiB (the oldest go first). A result larger than it alone
	// is not kept: its state says so.
	AsyncResultBytes int64
	// Logger receives the server's records; nil discards.
	Logger *slog.Logger
}

// NewToken returns a random token.
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Handler is the endpoint as an http.Handler, for a server of the caller's:
// the gateway's local API mounts it beside its own routes, on one listener
// and one token. It checks every request's token itself. It is safe for
// concurrent use; Close ends the asynchronous calls.
type Handler struct {
	inv     invoke.Invoker
	opts    Options
	handler http.Handler
	ctx     context.Context // async calls; cancelled by Close when it gives up
	stop    context.CancelFunc
	wg      sync.WaitGroup
	seq     atomic.Uint64

	mu          sync.Mutex
	closed      bool
	results     map[string]*result
	order       []string
	resultBytes int64 // of the results kept
	once        sync.Once
}

// Server is the endpoint on a listener of its own.
type Server struct {
	h    *Handler
	ln   net.Listener
	srv  *http.Server
	once sync.Once
	err  error
}

// result is an asynchronous call's state.
type result struct {
	ID       string          `json:"id"`
	Function string          `json:"function"`
	Status   string          `json:"status"` // running, succeeded, failed
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Type     string          `json:"error_type,omitempty"`
	Started  time.Time       `json:"started"`
	Finished *time.Time      `json:"finished,omitempty"`
}

// NewHandler returns the endpoint as a handler calling functions through
// inv. Options.IdleTimeout is for Serve's server; a caller's own server
// sets its own timeouts.
func NewHandler(inv invoke.Invoker, opts *Options) (*Handler, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if len(o.Token) < 16 {
		return nil, errors.New("httpcall: Options.Token: at least 16 characters required (NewToken makes one)")
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 6 << 20
	}
	if o.AsyncResults <= 0 {
		o.AsyncResults = 1000
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.AsyncResultBytes <= 0 {
		o.AsyncResultBytes = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{inv: inv, opts: o, results: make(map[string]*result)}
	h.ctx, h.stop = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/functions/{name}/invoke", h.invoke)
	mux.HandleFunc("GET /v1/invocations/{id}", h.invocation)
	h.handler = h.Authorize(mux)
	return h, nil
}

// ServeHTTP answers the endpoint's routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

// Serve answers on ln (for example net.Listen("tcp", "127.0.0.1:0")) until
// Close, calling functions through inv.
func Serve(ln net.Listener, inv invoke.Invoker, opts *Options) (*Server, error) {
	h, err := NewHandler(inv, opts)
	if err != nil {
		return nil, err
	}
	s := &Server{h: h, ln: ln, srv: NewHTTPServer(h, h.opts.IdleTimeout)}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.opts.Logger.Error("httpcall: serving", "err", err)
		}
	}()
	return s, nil
}

// NewHTTPServer returns a server for handler with the timeouts a gateway's
// endpoint wants: a client has idle (default 30 s) to send a request,
// headers and body, and an idle connection is closed after it, because
// connections cost the gateway memory and whoever opens them need not hold
// a token.
func NewHTTPServer(handler http.Handler, idle time.Duration) *http.Server {
	if idle <= 0 {
		idle = 30 * time.Second
	}
	return &http.Server{Handler: handler, ReadHeaderTimeout: min(10*time.Second, idle), ReadTimeout: idle, IdleTimeout: idle}
}

// URL is the endpoint's base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// callerKey carries who made a request: "operator", or the name its
// token was issued to.
type callerKey struct{}

// Caller returns who made the request whose context ctx is, as Authorize
// let it through: "operator" for Options.Token, else the name the caller's
// token was issued to.
func Caller(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(callerKey{}).(string)
	return c, ok
}

// Authorize wraps next with the handler's token check: a request carrying
// the operator's token or a caller's (Options.Callers) reaches next, with
// the caller in its context (Caller); any other is answered 401 without
// its body being read, and its connection closed. The token is compared
// in constant time.
func (h *Handler) Authorize(next http.Handler) http.Handler {
	want := httpjson.BearerHeader(h.opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller := ""
		if httpjson.Bearer(r, want) {
			caller = "operator"
		} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			caller, _ = h.opts.Callers.caller(tok)
		}
		if caller != "" {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
			return
		}
		httpjson.Unauthorized(w)
	})
}

func (h *Handler) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, "BadRequest", fmt.Errorf("body: over the limit of %d bytes", h.opts.MaxBody))
			return
		}
		httpjson.Error(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("body: %w", err))
		return
	}
	caller, _ := Caller(r.Context())
	req := invoke.Request{Payload: body, ContentType: r.Header.Get("Content-Type"), Source: map[string]string{"type": "http", "path": r.URL.Path, "caller": caller},
		Trace: invoke.ParseTrace(r.Header.Get(invoke.TraceParentKey), r.Header.Get(invoke.TraceStateKey))}
	if async := asyncParam(r); async == "1" || async == "true" {
		res, ok := h.startAsync(name, req)
		if !ok {
			httpjson.Error(w, http.StatusServiceUnavailable, "Unavailable", errors.New("the endpoint is closing"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": res.ID})
		return
	}
	resp, err := h.inv.Invoke(r.Context(), name, req)
	if err != nil {
		h.writeInvokeError(w, err)
		return
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(resp.Payload)
}

// asyncParam is the request's async query parameter; most calls have no
// query, which is then not parsed.
func asyncParam(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get("async")
}

// writeInvokeError answers a failed call.
func (h *Handler) writeInvokeError(w http.ResponseWriter, err error) {
	typ := invoke.ErrorType(err)
	status := http.StatusInternalServerError
	var fe *invoke.Error
	switch {
	case errors.As(err, &fe):
		// The function's own error, also in the shape Lambda's Invoke
		// answers it (what the runtime client posted), stack included.
		w.Header().Set("X-Edgekit-Function-Error", typ)
		stack := fe.Stack
		if stack == nil {
			stack = []string{}
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"error": err.Error(), "error_type": typ,
			"errorMessage": fe.Message, "errorType": fe.Type, "stackTrace": stack})
		return
	case errors.Is(err, invoke.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, invoke.ErrThrottled):
		status = http.StatusTooManyRequests
	case errors.Is(err, invoke.ErrTimeout):
		status = http.StatusGatewayTimeout
	case errors.Is(err, invoke.ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	httpjson.Error(w, status, typ, err)
}

// startAsync runs req in the background and keeps its result.
func (h *Handler) startAsync(name string, req invoke.Request) (*result, bool) {
	res := &result{ID: "h-" + strconv.FormatUint(h.seq.Add(1), 36) + "-" + NewToken()[:8], Function: name, Status: "running", Started: time.Now()}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, false
	}
	h.results[res.ID] = res
	h.order = append(h.order, res.ID)
	h.evictLocked()
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		resp, err := h.inv.Invoke(h.ctx, name, req)
		now := time.Now()
		h.mu.Lock()
		defer h.mu.Unlock()
		res.Finished = &now
		if err != nil {
			res.Status, res.Error, res.Type = "failed", err.Error(), invoke.ErrorType(err)
			h.opts.Logger.Warn("httpcall: asynchronous call failed", "function", name, "id", res.ID, "err", err)
			return
		}
		res.Status = "succeeded"
		if json.Valid(resp.Payload) {
			res.Result = resp.Payload
		} else {
			res.Result, _ = json.Marshal(string(resp.Payload))
		}
		if n := int64(len(res.Result)); n > h.opts.AsyncResultBytes {
			res.Result = nil
			res.Error = fmt.Sprintf("the result of %d bytes is over the endpoint's bound of %d bytes for kept results; it was not kept", n, h.opts.AsyncResultBytes)
			res.Type = "ResultNotKept"
			return
		}
		if _, kept := h.results[res.ID]; kept {
			h.resultBytes += int64(len(res.Result))
			h.evictLocked()
		}
	}()
	return res, true
}

// evictLocked forgets the oldest results while more are kept than
// AsyncResults, or their bytes are over AsyncResultBytes; h.mu is held.
func (h *Handler) evictLocked() {
	drop := 0
	for n := len(h.order); drop < n && (n-drop > h.opts.AsyncResults || h.resultBytes > h.opts.AsyncResultBytes); drop++ {
		id := h.order[drop]
		h.resultBytes -= int64(len(h.results[id].Result))
		delete(h.results, id)
	}
	if drop > 0 {
		h.order = append([]string(nil), h.order[drop:]...)
	}
}

func (h *Handler) invocation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.mu.Lock()
	res, ok := h.results[id]
	var body []byte
	if ok {
		body, _ = json.Marshal(res)
	}
	h.mu.Unlock()
	if !ok {
		httpjson.Error(w, http.StatusNotFound, "NotFound", fmt.Errorf("invocation %q: unknown or no longer kept", id))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// Close ends the handler's asynchronous calls: it refuses new ones and
// waits for those in flight (or ctx, which then cancels them). It is safe
// to call twice.
func (h *Handler) Close(ctx context.Context) error {
	var err error
	h.once.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		if werr := drain.Wait(ctx, &h.wg, h.stop); werr != nil {
			err = fmt.Errorf("httpcall: close: waiting for asynchronous calls: %w", werr)
		}
		h.stop()
	})
	return err
}

// Close stops the endpoint: it waits for the calls in flight and the
// asynchronous ones (or ctx, which then cancels them). It is safe to call
// twice.
func (s *Server) Close(ctx context.Context) error {
	s.once.Do(func() {
		s.h.mu.Lock()
		s.h.closed = true // no asynchronous call starts while the server drains
		s.h.mu.Unlock()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
			s.err = err
		}
		s.err = errors.Join(s.err, s.h.Close(ctx))
	})
	return s.err
}
