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
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/fleet"
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
	tok []byte
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
	a := &API{f: f, mux: http.NewServeMux(), tok: []byte("Bearer " + opts.Token), log: opts.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range a.routes() {
		h := r.handle
		if !r.public {
			h = a.authorize(h)
		}
		a.mux.Handle(r.pattern, h)
	}
	return a, nil
}

func (a *API) routes() []route {
	return []route{
		{pattern: "GET /healthz", public: true, handle: func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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
		{pattern: "PUT /v1/instances/{id}", handle: a.registerInstance},
		{pattern: "GET /v1/deployments", handle: a.deployments},
		{pattern: "POST /v1/deployments", handle: a.deploy},
		{pattern: "GET /v1/deployments/{id}", handle: a.deployment},
		{pattern: "POST /v1/deployments/{id}/pause", handle: a.pause},
		{pattern: "POST /v1/deployments/{id}/resume", handle: a.resume},
		{pattern: "POST /v1/deployments/{id}/cancel", handle: a.cancel},
	}
}

// ServeHTTP answers the API's routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) authorize(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), a.tok) != 1 {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusUnauthorized, "Unauthorized", errors.New("a bearer token is required in the Authorization header"))
			return
		}
		next(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ string, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error(), "error_type": typ})
}

// fail answers err with the status its sentinel says.
func (a *API) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, app.ErrInvalid), errors.Is(err, app.ErrSchema):
		writeError(w, http.StatusBadRequest, "BadRequest", err)
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, http.StatusNotFound, "NotFound", err)
	case errors.Is(err, fleet.ErrExists):
		writeError(w, http.StatusConflict, "Exists", err)
	case errors.Is(err, fleet.ErrState):
		writeError(w, http.StatusConflict, "State", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "Unavailable", err)
	default:
		a.log.Error("fleetapi: a request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "Internal", err)
	}
}

// decode reads a bounded, strict JSON body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, app.MaxDocument))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); !errors.Is(extra, io.EOF) {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "BadRequest", fmt.Errorf("body: over the limit of %d bytes", app.MaxDocument))
		} else {
			writeError(w, http.StatusBadRequest, "BadRequest", fmt.Errorf("body: %w", err))
		}
		return false
	}
	return true
}

// answer writes v, or the error.
func (a *API) answer(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, status, v)
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
	if !decode(w, r, &body) {
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
	if !decode(w, r, &body) {
		return
	}
	v, err := a.f.AddVersion(r.Context(), r.PathValue("app"), body)
	a.answer(w, http.StatusCreated, v, err)
}

func (a *API) setConfig(w http.ResponseWriter, r *http.Request) {
	scope := fleet.Scope{Group: r.URL.Query().Get("group"), Instance: r.URL.Query().Get("instance")}
	var body json.RawMessage
	if !decode(w, r, &body) {
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
	if !decode(w, r, &body) {
		return
	}
	v, err := a.f.SetGroup(r.Context(), r.PathValue("name"), body.Selector)
	a.answer(w, http.StatusOK, v, err)
}

func (a *API) instances(w http.ResponseWriter, r *http.Request) {
	v, err := a.f.Instances(r.Context())
	a.answer(w, http.StatusOK, nonNil(v), err)
}

func (a *API) registerInstance(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Labels map[string]string `json:"labels"`
	}
	if !decode(w, r, &body) {
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
	if !decode(w, r, &body) {
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
	if r.ContentLength != 0 && !decode(w, r, &body) {
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
	if r.ContentLength != 0 && !decode(w, r, &body) {
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
