// Package reconcile turns a desired deployment (package edge/app) into the
// gateway's functions, triggers and containers, and never leaves the
// gateway worse than before.
//
// A deployment goes through these steps, each written to the journal
// (package edge/state) before it starts, so that a restart resumes from it:
//
//  1. validate: the document's rules, the instance, every configuration
//     against its schema, every trigger's parameters, what container apps
//     may reach on the host; a deployment that fails is rejected with the
//     reason and nothing changes;
//  2. fetch: every artifact the deployment lacks, before anything stops —
//     function packages over HTTP(S) (resumed with Range requests after a
//     broken transfer) or from file URLs, verified by size, SHA-256 and,
//     when the package store has a key, signature; container images
//     pulled;
//  3. apply: removals first in reverse (triggers, functions, then
//     containers of apps that go), then containers in their start order,
//     functions (hot deploy: invocations in flight finish on the old
//     version), triggers last;
//  4. probation: each changed app must prove healthy within its probation
//     (a function: started and not crash-looping; a container: running on
//     the new version, its probe passing);
//  5. commit (the deployment becomes the last good one) or roll back every
//     app to the last good deployment, from what is on disk, without the
//     network.
//
// A newer revision supersedes one in progress (cancelled, reported). Every
// wait is bounded; a failed fetch retries with backoff a bounded number of
// times. On start Run applies the last good deployment from disk (the
// gateway works offline) and resumes a pending one from its step; a
// deployment whose apply was cut short three times is rolled back.
//
// The reconciler is written against small interfaces that function.Host,
// trigger.Set and container.Manager satisfy, so it is tested with the real
// ones. Its methods are safe for concurrent use; Run owns the work.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	"github.com/edgekit/edgekit/trigger"
)

// Functions is what the reconciler needs of the function host
// (function.Host). It must be safe for concurrent use.
type Functions interface {
	Apply(ctx context.Context, specs []function.Spec) error
	Status(name string) (function.Status, error)
}

// Triggers is what the reconciler needs of the trigger set (trigger.Set).
// It must be safe for concurrent use.
type Triggers interface {
	Check(cfgs []trigger.Config) error
	Apply(ctx context.Context, cfgs []trigger.Config) error
}

// Containers is what the reconciler needs of the container manager
// (container.Manager). It must be safe for concurrent use.
type Containers interface {
	Pull(ctx context.Context, ref string, opts *container.PullOptions) error
	Apply(ctx context.Context, apps []container.App) error
	Status() []container.AppStatus
}

// Drivers is what the reconciler needs of the gateway's device manager to
// bind devices to driver apps. It must be safe for concurrent use.
type Drivers interface {
	// Check refuses what Apply would (a thing model that does not parse),
	// naming the app and device.
	Check(drivers []Driver) error
	// Apply makes drivers the driver apps the device manager serves, with
	// their devices: those not named are detached and removed.
	Apply(ctx context.Context, drivers []Driver) error
}

// Driver is a driver app and the devices bound to it.
type Driver struct {
	Function string
	Devices  []app.Device
}

var (
	_ Functions  = (*function.Host)(nil)
	_ Triggers   = (*trigger.Set)(nil)
	_ Containers = (*container.Manager)(nil)
)

// Sentinel errors.
var (
	// ErrStale: a deployment's revision is not above the newest taken.
	ErrStale = errors.New("deployment revision already taken")
	// ErrClosed: Run has returned.
	ErrClosed = errors.New("reconciler stopped")
)

// Options configure a Reconciler. Instance, Functions, Triggers, Packages,
// State and Dir are required.
type Options struct {
	// Instance is the gateway's id; a deployment naming another is
	// rejected.
	Instance string
	// Functions, Triggers and Containers are the parts deployments drive.
	// Without Containers, container apps are refused (the runtime is not
	// available) and the rest runs.
	Functions  Functions
	Triggers   Triggers
	Containers Containers
	// Drivers binds devices to driver apps; without it, driver apps are
	// refused.
	Drivers Drivers
	// Packages holds function packages (its key, when set, makes
	// signatures mandatory).
	Packages *codepkg.Store
	// State keeps the journal and the apps' history.
	State *state.Store
	// Dir holds downloads in progress and container apps' configuration
	// files.
	Dir string
	// HTTPClient fetches artifacts; default a client whose dial, TLS and
	// response header each must answer within 30 s. Transfers are bounded
	// by StallTimeout, not by a whole-request timeout.
	HTTPClient *http.Client
	// Pull holds the registry credentials for container images.
	Pull *container.PullOptions
	// FetchAttempts bounds the tries of each artifact; default 5. Between
	// tries the wait grows from RetryMin (default 1 s) to RetryMax
	// (default 30 s).
	FetchAttempts      int
	RetryMin, RetryMax time.Duration
	// StallTimeout ends a try that receives no byte for this long;
	// default 30 s.
	StallTimeout time.Duration
	// Probation is a version's probation when it names none; default
	// 30 s.
	Probation time.Duration
	// HostPaths are the host paths (prefixes) container apps may bind
	// mount or use as devices; none by default.
	HostPaths []string
	// OnStatus receives the status after each change (for the gateway to
	// publish); it must not block.
	OnStatus func(app.Status)
	// OnStep, when set, is called each time the journal is written with a
	// step of a deployment under way ("fetching", "applying",
	// "probation", "rolling-back"), on the reconciler's goroutine: the
	// step is on disk when it is called, and the deployment waits for it
	// to return. For metrics and logs — and for tests that must act while
	// a step is under way (a power loss in the middle of a rollback).
	OnStep func(step string)
	// Logger receives the reconciler's records; nil discards.
	Logger *slog.Logger
}

// Reconciler applies deployments. Submit hands it one; Run does the work.
type Reconciler struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	desired *app.Deployment // the newest submitted, not yet taken
	seen    uint64          // the newest revision taken or submitted
	cancel  context.CancelCauseFunc
	stopped bool
	status  app.Status
	wake    chan struct{} // capacity 1

	// Run's goroutine only:
	applied sets              // what the parts were last given
	holds   map[string]func() // name/version → release of the package's hold
}

// errSuperseded cancels a deployment a newer revision replaces.
var errSuperseded = errors.New("superseded by a newer revision")

// New returns a reconciler; Run starts it.
func New(opts *Options) (*Reconciler, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Instance == "":
		return nil, errors.New("reconcile: Options.Instance is required")
	case o.Functions == nil || o.Triggers == nil:
		return nil, errors.New("reconcile: Options.Functions and Options.Triggers are required")
	case o.Packages == nil || o.State == nil:
		return nil, errors.New("reconcile: Options.Packages and Options.State are required")
	case o.Dir == "":
		return nil, errors.New("reconcile: Options.Dir is required")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = defaultClient()
	}
	if o.FetchAttempts <= 0 {
		o.FetchAttempts = 5
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.Probation <= 0 {
		o.Probation = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.HostPaths = slices.Clone(o.HostPaths)
	r := &Reconciler{opts: o, log: o.Logger, wake: make(chan struct{}, 1)}
	r.status = app.Status{Schema: app.SchemaVersion, Instance: o.Instance, Apps: []app.AppStatus{}}
	return r, nil
}

// Submit hands the reconciler a desired deployment. It returns at once:
// Run applies it, superseding one in progress. A document that breaks a
// rule is refused (app.ErrInvalid) and so is a revision not above the
// newest taken (ErrStale); either way what runs keeps running. The
// reconciler keeps d: the caller does not change it after.
func (r *Reconciler) Submit(d *app.Deployment) error {
	if d == nil {
		return fmt.Errorf("reconcile: %w: no deployment", app.ErrInvalid)
	}
	if err := d.Check(); err != nil {
		r.reject(app.Ref{Deployment: d.ID, Revision: d.Revision}, err)
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrClosed
	}
	if d.Revision <= r.seen {
		return fmt.Errorf("reconcile: deployment %s revision %d: %w (newest %d)", d.ID, d.Revision, ErrStale, r.seen)
	}
	r.seen = d.Revision
	r.desired = d
	if r.cancel != nil {
		r.cancel(errSuperseded)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// SubmitDocument reads a deployment document and submits it. One that
// does not read is refused, and the status says why (outcome rejected).
func (r *Reconciler) SubmitDocument(b []byte) error {
	d, err := app.ParseDeployment(b)
	if err != nil {
		r.reject(app.PeekRef(b), err)
		return err
	}
	return r.Submit(d)
}

// Status returns the latest status.
func (r *Reconciler) Status() app.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.Clone()
}

// Run resumes from the journal and applies deployments until ctx ends; it
// returns after the step under way has stopped. What runs keeps running.
func (r *Reconciler) Run(ctx context.Context) error {
	j, err := r.opts.State.Journal()
	if err != nil {
		// Both journal slots damaged: nothing is known to roll back to,
		// so nothing is removed; the next deployment starts afresh.
		r.log.Error("reconcile: the journal does not read; starting without a last good deployment", "err", err)
	}
	r.mu.Lock()
	r.seen = max(r.seen, j.Seen)
	if r.desired != nil && r.desired.Revision <= j.Seen {
		r.desired = nil // submitted before the journal was read, and taken before
	}
	if j.Status != nil {
		r.status = j.Status.Clone()
		r.status.Instance = r.opts.Instance
	}
	r.mu.Unlock()
	r.boot(ctx, j)
	defer func() {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
	}()
	for {
		r.mu.Lock()
		d := r.desired
		r.desired = nil
		r.mu.Unlock()
		if d != nil {
			r.deploy(ctx, d)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
	}
}
