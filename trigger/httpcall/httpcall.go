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
// {"error", "error_type"}, as the Lambda Invoke API does; the host's errors
// map to statuses: unknown function 404, throttled 429, timeout 504,
// unavailable 503. A missing or wrong token is 401, a body over the limit
// 413.
//
// Out-of-process functions reach the endpoint through the address and the
// token the gateway puts in their environment (function.Options.Env and
// EnvFor), so functions can call functions. Each function gets a token of
// its own from Options.Callers (Tokens.Issue), revoked when it goes; the
// operator's token (Options.Token) is never handed to functions.
package httpcall

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
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

// Server is the HTTP endpoint.
type Server struct {
	inv  invoke.Invoker
	opts Options
	ln   net.Listener
	srv  *http.Server
	ctx  context.Context // async calls; cancelled by Close when it gives up
	stop context.CancelFunc
	wg   sync.WaitGroup
	seq  atomic.Uint64

	mu          sync.Mutex
	closed      bool
	results     map[string]*result
	order       []string
	resultBytes int64 // of the results kept
	once        sync.Once
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

// Serve answers on ln (for example net.Listen("tcp", "127.0.0.1:0")) until
// Close, calling functions through inv.
func Serve(ln net.Listener, inv invoke.Invoker, opts *Options) (*Server, error) {
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
	s := &Server{inv: inv, opts: o, ln: ln, results: make(map[string]*result)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/functions/{name}/invoke", s.invoke)
	mux.HandleFunc("GET /v1/invocations/{id}", s.invocation)
	// A client has IdleTimeout to send a request (headers and body), and an
	// idle connection is closed after it: connections cost the gateway
	// memory, and whoever opens them need not hold a token.
	s.srv = &http.Server{Handler: s.authorized(mux), ReadHeaderTimeout: min(10*time.Second, o.IdleTimeout),
		ReadTimeout: o.IdleTimeout, IdleTimeout: o.IdleTimeout}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("httpcall: serving", "err", err)
		}
	}()
	return s, nil
}

// URL is the endpoint's base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// callerKey carries who made a request: "operator", or the name its
// token was issued to.
type callerKey struct{}

func (s *Server) authorized(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		caller := ""
		if subtle.ConstantTimeCompare([]byte(auth), want) == 1 {
			caller = "operator"
		} else if tok, ok := strings.CutPrefix(auth, "Bearer "); ok {
			caller, _ = s.opts.Callers.caller(tok)
		}
		if caller != "" {
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
			return
		}
		// The body is never read, and the connection ends with the answer
		// (the server would otherwise read the body to reuse it).
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusUnauthorized, "Unauthorized", errors.New("a bearer token is required in the Authorization header"))
	})
}

func writeError(w http.ResponseWriter, status int, typ string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error(), "error_type": typ})
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "BadRequest", fmt.Errorf("body: over the limit of %d bytes", s.opts.MaxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("body: %w", err))
		return
	}
	caller, _ := r.Context().Value(callerKey{}).(string)
	req := invoke.Request{Payload: body, ContentType: r.Header.Get("Content-Type"), Source: map[string]string{"type": "http", "path": r.URL.Path, "caller": caller}}
	if async := r.URL.Query().Get("async"); async == "1" || async == "true" {
		res, ok := s.startAsync(name, req)
		if !ok {
			writeError(w, http.StatusServiceUnavailable, "Unavailable", errors.New("the endpoint is closing"))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": res.ID})
		return
	}
	resp, err := s.inv.Invoke(r.Context(), name, req)
	if err != nil {
		s.writeInvokeError(w, err)
		return
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(resp.Payload)
}

// writeInvokeError answers a failed call.
func (s *Server) writeInvokeError(w http.ResponseWriter, err error) {
	typ := invoke.ErrorType(err)
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, invoke.ErrFunction):
		w.Header().Set("X-Edgekit-Function-Error", typ)
		status = http.StatusOK
	case errors.Is(err, invoke.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, invoke.ErrThrottled):
		status = http.StatusTooManyRequests
	case errors.Is(err, invoke.ErrTimeout):
		status = http.StatusGatewayTimeout
	case errors.Is(err, invoke.ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, typ, err)
}

// startAsync runs req in the background and keeps its result.
func (s *Server) startAsync(name string, req invoke.Request) (*result, bool) {
	res := &result{ID: "h-" + strconv.FormatUint(s.seq.Add(1), 36) + "-" + NewToken()[:8], Function: name, Status: "running", Started: time.Now()}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false
	}
	s.results[res.ID] = res
	s.order = append(s.order, res.ID)
	s.evictLocked()
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		resp, err := s.inv.Invoke(s.ctx, name, req)
		now := time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		res.Finished = &now
		if err != nil {
			res.Status, res.Error, res.Type = "failed", err.Error(), invoke.ErrorType(err)
			s.opts.Logger.Warn("httpcall: asynchronous call failed", "function", name, "id", res.ID, "err", err)
			return
		}
		res.Status = "succeeded"
		if json.Valid(resp.Payload) {
			res.Result = resp.Payload
		} else {
			res.Result, _ = json.Marshal(string(resp.Payload))
		}
		if n := int64(len(res.Result)); n > s.opts.AsyncResultBytes {
			res.Result = nil
			res.Error = fmt.Sprintf("the result of %d bytes is over the endpoint's bound of %d bytes for kept results; it was not kept", n, s.opts.AsyncResultBytes)
			res.Type = "ResultNotKept"
			return
		}
		if _, kept := s.results[res.ID]; kept {
			s.resultBytes += int64(len(res.Result))
			s.evictLocked()
		}
	}()
	return res, true
}

// evictLocked forgets the oldest results while more are kept than
// AsyncResults, or their bytes are over AsyncResultBytes; s.mu is held.
func (s *Server) evictLocked() {
	drop := 0
	for n := len(s.order); drop < n && (n-drop > s.opts.AsyncResults || s.resultBytes > s.opts.AsyncResultBytes); drop++ {
		id := s.order[drop]
		s.resultBytes -= int64(len(s.results[id].Result))
		delete(s.results, id)
	}
	if drop > 0 {
		s.order = append([]string(nil), s.order[drop:]...)
	}
}

func (s *Server) invocation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	res, ok := s.results[id]
	var body []byte
	if ok {
		body, _ = json.Marshal(res)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "NotFound", fmt.Errorf("invocation %q: unknown or no longer kept", id))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// Close stops the endpoint: it waits for the calls in flight and the
// asynchronous ones (or ctx, which then cancels them). It is safe to call
// twice.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if err = s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
		if werr := drain.Wait(ctx, &s.wg, s.stop); werr != nil {
			err = errors.Join(err, fmt.Errorf("httpcall: close: waiting for calls in flight: %w", werr))
		}
		s.stop()
	})
	return err
}
