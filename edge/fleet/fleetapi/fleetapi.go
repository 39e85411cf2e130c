// Package fleetapi is the fleet's HTTP API: JSON over HTTP with a bearer
// token, an http.Handler on a fleet.Fleet, described by
// docs/fleet-openapi.json (a test checks the two agree). The console
// (examples/console) is its client.
//
// Bodies are bounded (app.MaxDocument) and strict: an unknown field is an
// error. Errors are JSON, {"error": …, "error_type": …}, with the status
// the fleet's sentinel says: 400 invalid, 404 not found, 409 exists or
// not in that state, 401 without the token.
package fleetapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/internal/httpjson"
)

// Options configure the API. Token is required.
type Options struct {
	Token  string
	Logger *slog.Logger
}

// API is the fleet's HTTP API.
type API struct {
	f   *fleet.Fleet
	mux *http.ServeMux
	log *slog.Logger
}

type route struct {
	pattern string
	public  bool
	handle  http.HandlerFunc
}

// New returns the API of f.
func New(f *fleet.Fleet, opts *Options) (*API, error) {
	if f == nil || opts == nil || len(opts.Token) < 16 {
		return nil, fmt.Errorf("fleetapi: %w: a fleet and a token of at least 16 characters are required", fleet.ErrInvalid)
	}
	a := &API{f: f, mux: http.NewServeMux(), log: opts.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range a.routes() {
		h := r.handle
		if !strings.HasPrefix(r.pattern, "GET ") {
			h = a.audited(h)
		}
		if !r.public {
			h = httpjson.RequireBearer(opts.Token, h)
		}
		a.mux.Handle(r.pattern, h)
	}
	return a, nil
}

func (a *API) routes() []route {
	return []route{
		{pattern: "GET /healthz", public: true, handle: func(w http.ResponseWriter, _ *http.Request) {
			httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
		}},
		{pattern: "GET /v1/apps", handle: a.apps},
		{pattern: "POST /v1/apps", handle: a.createApp},
		{pattern: "GET /v1/apps/{app}", handle: a.app},
		{pattern: "GET /v1/apps/{app}/versions", handle: a.versions},
		{pattern: "POST /v1/apps/{app}/versions", handle: a.addVersion},
		{pattern: "PUT /v1/apps/{app}/config", handle: a.setConfig},
		{pattern: "GET /v1/groups", handle: a.groups},
		{pattern: "PUT /v1/groups/{name}", handle: a.setGroup},
		{pattern: "GET /v1/instances", handle: a.instances},
		{pattern: "GET /v1/instances/{id}", handle: a.instance},
		{pattern: "GET /v1/instances/{id}/logs", handle: a.logs},
		{pattern: "PUT /v1/instances/{id}", handle: a.registerInstance},
		{pattern: "GET /v1/deployments", handle: a.deployments},
		{pattern: "POST /v1/deployments", handle: a.deploy},
		{pattern: "GET /v1/deployments/{id}", handle: a.deployment},
		{pattern: "POST /v1/deployments/{id}/pause", handle: a.pause},
		{pattern: "POST /v1/deployments/{id}/resume", handle: a.resume},
		{pattern: "POST /v1/deployments/{id}/cancel", handle: a.cancel},
		{pattern: "GET /v1/users", handle: a.users},
		{pattern: "PUT /v1/users/{name}", handle: a.setUser},
		{pattern: "GET /v1/audit", handle: a.audit},
	}
}

// ServeHTTP answers the API's routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// fail answers err with the status its sentinel says.
func (a *API) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, app.ErrInvalid), errors.Is(err, app.ErrSchema):
		httpjson.Error(w, http.StatusBadRequest, "BadRequest", err)
	case errors.Is(err, fleet.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "NotFound", err)
	case errors.Is(err, fleet.ErrExists):
		httpjson.Error(w, http.StatusConflict, "Exists", err)
	case errors.Is(err, fleet.ErrState):
		httpjson.Error(w, http.StatusConflict, "State", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		httpjson.Error(w, http.StatusServiceUnavailable, "Unavailable", err)
	default:
		a.log.Error("fleetapi: a request failed", "err", err)
		httpjson.Error(w, http.StatusInternalServerError, "Internal", err)
	}
}

// answer writes v, or the error.
func (a *API) answer(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		a.fail(w, err)
		return
	}
	httpjson.Write(w, status, v)
}

func (a *API) apps(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Apps(r.Context())
	a.answer(w, http.StatusOK, nonNil(v), err)
}

func (a *API) createApp(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name        string   `json:"name"`
		Kind        app.Kind `json:"kind"`
		Description string   `json:"description,omitempty"`
	}
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.CreateApp(r.Context(), fleet.App{Name: body.Name, Kind: body.Kind, Description: body.Description})
	a.answer(w, http.StatusCreated, v, err)
}

func (a *API) app(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.App(r.Context(), r.PathValue("app"))
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Versions(r.Context(), r.PathValue("app"))
	a.answer(w, http.StatusOK, nonNil(v), err)
}

func (a *API) addVersion(w http.ResponseWriter, r *http.Request) {
	var body app.Version
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.AddVersion(r.Context(), r.PathValue("app"), body)
	a.answer(w, http.StatusCreated, v, err)
}

func (a *API) setConfig(w http.ResponseWriter, r *http.Request) {
	scope := fleet.Scope{Group: r.URL.Query().Get("group"), Instance: r.URL.Query().Get("instance")}
	var body json.RawMessage
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.SetConfig(r.Context(), r.PathValue("app"), scope, body)
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) groups(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Groups(r.Context())
	a.answer(w, http.StatusOK, nonNil(v), err)
}

func (a *API) setGroup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Selector string `json:"selector"`
	}
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.SetGroup(r.Context(), r.PathValue("name"), body.Selector)
	a.answer(w, http.StatusOK, v, err)
}

// instances answers the instances a query matches, in id order: the
// page as an array, the count of all that match in X-Matched, and the
// next page's address in a Link header (rel="next").
func (a *API) instances(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := fleet.InstanceQuery{Selector: q.Get("selector"), Presence: q.Get("presence"), Rollout: q.Get("rollout"), After: q.Get("after")}
	var err error
	if query.Limit, err = limitOf(q); err != nil {
		a.fail(w, err)
		return
	}
	page, err := a.f.QueryInstances(r.Context(), query)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("X-Matched", strconv.Itoa(page.Matched))
	if page.Next != "" {
		q.Set("after", page.Next)
		w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	httpjson.Write(w, http.StatusOK, page.Instances)
}

// limitOf reads the query's limit: a positive count, or 0 when absent.
func limitOf(q url.Values) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: limit %q: want a positive count", fleet.ErrInvalid, l)
	}
	return n, nil
}

// InstanceDetail is the answer of GET /v1/instances/{id}: the instance
// and its status history, newest first.
type InstanceDetail struct {
	Instance fleet.InstanceView `json:"instance"`
	History  []app.Status       `json:"history"`
}

func (a *API) instance(w http.ResponseWriter, r *http.Request) {
	in, err := a.f.Instance(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	h, err := a.f.StatusHistory(r.Context(), in.ID)
	a.answer(w, http.StatusOK, InstanceDetail{Instance: in, History: nonNil(h)}, err)
}

// logs asks a gateway for an app's recent log lines: 504 when it does
// not answer within fleet.LogsWait (offline).
func (a *API) logs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := app.LogsRequest{App: q.Get("app"), Contains: q.Get("contains")}
	var err error
	if req.Limit, err = limitOf(q); err != nil {
		a.fail(w, err)
		return
	}
	v, err := a.f.Logs(r.Context(), r.PathValue("id"), req)
	if errors.Is(err, fleet.ErrNoAnswer) {
		httpjson.Error(w, http.StatusGatewayTimeout, "NoAnswer", err)
		return
	}
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) users(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Users(r.Context())
	a.answer(w, http.StatusOK, nonNil(v), err)
}

func (a *API) setUser(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Password string     `json:"password"`
		Role     fleet.Role `json:"role"`
	}
	if !httpjson.Decode(w, r, 64<<10, &body) {
		return
	}
	v, err := a.f.SetUser(r.Context(), r.PathValue("name"), body.Password, body.Role)
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) audit(w http.ResponseWriter, r *http.Request) {
	day := a.f.Now()
	if d := r.URL.Query().Get("day"); d != "" {
		t, err := time.Parse(time.DateOnly, d)
		if err != nil {
			a.fail(w, fmt.Errorf("%w: day %q: want YYYY-MM-DD", fleet.ErrInvalid, d))
			return
		}
		day = t
	}
	v, err := a.f.AuditDay(r.Context(), day)
	a.answer(w, http.StatusOK, nonNil(v), err)
}

// audited records a change made with the token in the fleet's audit log:
// the route, what it named, and the status it was answered with.
func (a *API) audited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		e := fleet.AuditEntry{Actor: "token", Role: fleet.RoleOperator, Action: r.Method + " " + r.Pattern, Object: objectOf(r), Remote: r.RemoteAddr}
		if rec.status >= 300 {
			e.Error = fmt.Sprintf("answered %d %s", rec.status, http.StatusText(rec.status))
		}
		if err := a.f.Audit(context.WithoutCancel(r.Context()), e); err != nil {
			a.log.Error("fleetapi: writing the audit log", "action", e.Action, "err", err)
		}
	}
}

// objectOf is what a request names: its path's values.
func objectOf(r *http.Request) string {
	var parts []string
	for _, k := range []string{"app", "name", "id"} {
		if v := r.PathValue(k); v != "" {
			parts = append(parts, v)
		}
	}
	return strings.Join(parts, " ")
}

// statusRecorder keeps the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (a *API) registerInstance(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Labels map[string]string `json:"labels"`
	}
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.RegisterInstance(r.Context(), r.PathValue("id"), body.Labels)
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) deployments(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Deployments(r.Context())
	a.answer(w, http.StatusOK, nonNil(v), err)
}

// DeploymentRequest is the body of POST /v1/deployments.
type DeploymentRequest struct {
	ID       string             `json:"id"`
	Selector string             `json:"selector"`
	Priority int                `json:"priority"`
	Apps     []fleet.AppVersion `json:"apps"`
	Policy   fleet.Policy       `json:"policy"`
}

func (a *API) deploy(w http.ResponseWriter, r *http.Request) {
	var body DeploymentRequest
	if !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	v, err := a.f.Deploy(r.Context(), fleet.Deployment{ID: body.ID, Selector: body.Selector, Priority: body.Priority, Apps: body.Apps, Policy: body.Policy})
	a.answer(w, http.StatusCreated, v, err)
}

// DeploymentView is the answer of GET /v1/deployments/{id}: the
// deployment, its targets, and their count by state.
type DeploymentView struct {
	Deployment fleet.Deployment          `json:"deployment"`
	Counts     map[fleet.TargetState]int `json:"counts"`
	Targets    []fleet.Target            `json:"targets"`
}

func (a *API) deployment(w http.ResponseWriter, r *http.Request) {
	d, ts, err := a.f.Deployment(r.Context(), r.PathValue("id"))
	counts := map[fleet.TargetState]int{}
	for _, t := range ts {
		counts[t.State]++
	}
	a.answer(w, http.StatusOK, DeploymentView{Deployment: d, Counts: counts, Targets: nonNil(ts)}, err)
}

func (a *API) pause(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if r.ContentLength != 0 && !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	a.command(w, r, a.f.Pause(r.Context(), r.PathValue("id"), body.Reason))
}

func (a *API) resume(w http.ResponseWriter, r *http.Request) {
	a.command(w, r, a.f.Resume(r.Context(), r.PathValue("id")))
}

func (a *API) cancel(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Rollback bool `json:"rollback,omitempty"`
	}
	if r.ContentLength != 0 && !httpjson.Decode(w, r, app.MaxDocument, &body) {
		return
	}
	a.command(w, r, a.f.Cancel(r.Context(), r.PathValue("id"), body.Rollback))
}

// command answers with the deployment as it is after a command.
func (a *API) command(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		a.fail(w, err)
		return
	}
	d, _, err := a.f.Deployment(r.Context(), r.PathValue("id"))
	a.answer(w, http.StatusOK, d, err)
}

func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

// Routes lists the API's patterns (for the test that checks them against
// docs/fleet-openapi.json).
func (a *API) Routes() []string {
	var out []string
	for _, r := range a.routes() {
		out = append(out, r.pattern)
	}
	return out
}
