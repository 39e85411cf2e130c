// Package fleet is edgekit's central side: the catalogue of applications
// and their immutable versions, configuration overrides per group and per
// instance, the instances (gateways) with their labels, and deployments
// that roll app versions out to the instances a label selector matches —
// in waves, with bake times, success and failure thresholds, a rate limit,
// and an abort that puts the instances already updated back on what they
// ran before.
//
// The wire is the gateway's (package edge/app): a retained desired
// document per instance whose revision only grows, and the status and
// presence each gateway reports. The fleet never trusts the broker to have
// kept what it wrote: an instance reporting an older revision than its
// desired one is sent the document again.
//
// State lives in a store.Store (package edge/fleet/store: embedded bbolt,
// or PostgreSQL shared by several replicas). Every replica ingests reports
// through a shared subscription ($share) and serves the catalogue; one,
// holding the store's lease, runs the rollouts. A replica killed mid-rollout
// loses nothing: another takes the lease and goes on from the store.
//
// The fleet imports edge/app, edge/bus and its own packages only, never
// the gateway.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/function/spec"
)

// Options configure a Fleet. Store and Bus are required.
type Options struct {
	Store store.Store
	// Bus reaches the gateways' broker (an mqttbus client in production).
	// Give it no broker session (mqttbus SessionExpiry -1): a replica that
	// dies would otherwise keep its share of the reports queued for it.
	Bus bus.Bus
	// Replica names this process among those sharing the store; default
	// random.
	Replica string
	// ShareGroup is the $share group the replicas' subscriptions join;
	// default "edgekit-fleet".
	ShareGroup string
	// Tick is how often the lease holder steps the rollouts; default
	// 500 ms. LeaseTTL is how long a silent holder keeps the lease;
	// default 10 s.
	Tick, LeaseTTL time.Duration
	// RepublishAfter is how long after publishing an instance's document
	// the fleet waits for it to report that revision before it publishes
	// again; default 10 s.
	RepublishAfter time.Duration
	// IngestBatch and IngestDelay bound how many reports are written to
	// the store at once and how long one waits for the others; default
	// 512 and 50 ms.
	IngestBatch int
	IngestDelay time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Fleet is the central side. Its methods are safe for concurrent use.
type Fleet struct {
	opts Options
	st   store.Store
	bus  bus.Bus
	log  *slog.Logger
	now  func() time.Time

	ingest  *ingester
	holding bool // the lease was held at the last tick (Run's goroutine only)

	mu      sync.Mutex
	leader  *leader // nil while another replica holds the lease
	closed  bool
	cancel  context.CancelFunc // ends Run
	stopped chan struct{}      // closed when Run has returned
}

// New returns a fleet on opts' store and bus. Run starts its work.
func New(opts *Options) (*Fleet, error) {
	if opts == nil || opts.Store == nil || opts.Bus == nil {
		return nil, fmt.Errorf("fleet: %w: a store and a bus are required", ErrInvalid)
	}
	o := *opts
	if o.Replica == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		o.Replica = "fleet-" + hex.EncodeToString(b)
	}
	if o.ShareGroup == "" {
		o.ShareGroup = "edgekit-fleet"
	}
	if o.Tick <= 0 {
		o.Tick = 500 * time.Millisecond
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.RepublishAfter <= 0 {
		o.RepublishAfter = 10 * time.Second
	}
	if o.IngestBatch <= 0 {
		o.IngestBatch = 512
	}
	if o.IngestDelay <= 0 {
		o.IngestDelay = 50 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{opts: o, st: o.Store, bus: o.Bus, log: o.Logger.With("replica", o.Replica), now: o.Now, stopped: make(chan struct{})}
	f.ingest = newIngester(f)
	return f, nil
}

// bad reports a record that does not decode; it costs that record only.
func (f *Fleet) bad(r store.Record, err error) {
	f.log.Error("fleet: a damaged record is skipped", "collection", r.Collection, "key", r.Key, "err", err)
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

// CreateApp adds an app to the catalogue. An app of that name with the
// same kind is no error (the call is idempotent); another kind is
// ErrExists.
func (f *Fleet) CreateApp(ctx context.Context, a App) (App, error) {
	if !spec.ValidName(a.Name) {
		return App{}, fmt.Errorf("%w: app name %q: want 1-64 letters, digits, '.', '_' or '-'", ErrInvalid, a.Name)
	}
	if a.Kind != app.KindFunction && a.Kind != app.KindContainer {
		return App{}, fmt.Errorf("%w: app %s: kind %q: want function or container", ErrInvalid, a.Name, a.Kind)
	}
	a.Created = f.now().UTC()
	_, err := f.st.Apply(ctx, store.Create(collApps, a.Name, encode(a)))
	if errors.Is(err, store.ErrConflict) {
		old, gerr := get[App](ctx, f.st, collApps, a.Name)
		if gerr != nil {
			return App{}, gerr
		}
		if old.v.Kind != a.Kind {
			return App{}, fmt.Errorf("%w: app %s is a %s app", ErrExists, a.Name, old.v.Kind)
		}
		return old.v, nil
	}
	if err != nil {
		return App{}, fmt.Errorf("fleet: app %s: %w", a.Name, err)
	}
	return a, nil
}

// App returns an app of the catalogue.
func (f *Fleet) App(ctx context.Context, name string) (App, error) {
	r, err := get[App](ctx, f.st, collApps, name)
	return r.v, err
}

// Apps lists the catalogue's apps by name.
func (f *Fleet) Apps(ctx context.Context) ([]App, error) {
	return values(list[App](ctx, f.st, collApps, "", f.bad))
}

func values[T any](rs []record[T], err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	out := make([]T, len(rs))
	for i, r := range rs {
		out[i] = r.v
	}
	return out, nil
}

// AddVersion adds an immutable version of an app. The version is checked
// as a gateway will check it (package edge/app's rules, the kind the app
// has). Adding the same content again is no error; other content under a
// version already there is ErrExists.
func (f *Fleet) AddVersion(ctx context.Context, appName string, v app.Version) (Version, error) {
	a, err := get[App](ctx, f.st, collApps, appName)
	if err != nil {
		return Version{}, err
	}
	probe := app.Deployment{Schema: app.SchemaVersion, ID: "check", Revision: 1, Apps: []app.Assignment{{App: app.App{Name: a.v.Name, Kind: a.v.Kind}, Version: v}}}
	if err := probe.Check(); err != nil {
		return Version{}, fmt.Errorf("app %s version %q: %w", appName, v.Version, err)
	}
	if _, err := (&app.Assignment{App: probe.Apps[0].App, Version: v}).Resolve(); err != nil {
		return Version{}, fmt.Errorf("app %s version %s: %w", appName, v.Version, err)
	}
	rec := Version{App: appName, Version: v, Created: f.now().UTC()}
	key := appName + "/" + v.Version
	_, err = f.st.Apply(ctx, store.Create(collVersions, key, encode(rec)))
	if errors.Is(err, store.ErrConflict) {
		old, gerr := get[Version](ctx, f.st, collVersions, key)
		if gerr != nil {
			return Version{}, gerr
		}
		if !sameJSON(old.v.Version, v) {
			return Version{}, fmt.Errorf("%w: app %s version %s exists with other content (versions are immutable: add a new one)", ErrExists, appName, v.Version)
		}
		return old.v, nil
	}
	if err != nil {
		return Version{}, fmt.Errorf("fleet: app %s version %s: %w", appName, v.Version, err)
	}
	return rec, nil
}

func sameJSON(a, b any) bool {
	ab, _ := json.Marshal(a)
	bb, _ := json.Marshal(b)
	return string(ab) == string(bb)
}

// Versions lists an app's versions, in version name order.
func (f *Fleet) Versions(ctx context.Context, appName string) ([]Version, error) {
	if _, err := get[App](ctx, f.st, collApps, appName); err != nil {
		return nil, err
	}
	return values(list[Version](ctx, f.st, collVersions, appName+"/", f.bad))
}

// SetGroup creates or changes a group (a named selector).
func (f *Fleet) SetGroup(ctx context.Context, name, selector string) (Group, error) {
	if !spec.ValidName(name) {
		return Group{}, fmt.Errorf("%w: group name %q: want 1-64 letters, digits, '.', '_' or '-'", ErrInvalid, name)
	}
	sel, err := ParseSelector(selector)
	if err != nil {
		return Group{}, err
	}
	g := Group{Name: name, Selector: sel.String(), Updated: f.now().UTC()}
	if _, err := f.st.Apply(ctx, store.Put(collGroups, name, encode(g))); err != nil {
		return Group{}, fmt.Errorf("fleet: group %s: %w", name, err)
	}
	return g, nil
}

// Groups lists the groups by name.
func (f *Fleet) Groups(ctx context.Context) ([]Group, error) {
	return values(list[Group](ctx, f.st, collGroups, "", f.bad))
}

// SetConfig sets the configuration override of an app for a scope (a
// group or an instance, which must exist); the instances it reaches get a
// new revision of their document at once. An empty or null overrides
// removes the override.
func (f *Fleet) SetConfig(ctx context.Context, appName string, scope Scope, overrides json.RawMessage) (ConfigOverride, error) {
	if _, err := get[App](ctx, f.st, collApps, appName); err != nil {
		return ConfigOverride{}, err
	}
	switch {
	case (scope.Group == "") == (scope.Instance == ""):
		return ConfigOverride{}, fmt.Errorf("%w: configuration of %s: name a group or an instance, not both", ErrInvalid, appName)
	case scope.Group != "":
		if _, err := get[Group](ctx, f.st, collGroups, scope.Group); err != nil {
			return ConfigOverride{}, err
		}
	default:
		if _, err := get[Instance](ctx, f.st, collInstances, scope.Instance); err != nil {
			return ConfigOverride{}, err
		}
	}
	trimmed := strings.TrimSpace(string(overrides))
	if trimmed == "" || trimmed == "null" {
		overrides = nil
	} else {
		var obj map[string]any
		if err := json.Unmarshal(overrides, &obj); err != nil || obj == nil {
			return ConfigOverride{}, fmt.Errorf("%w: configuration of %s for %s: overrides must be a JSON object (a merge patch)", ErrInvalid, appName, scope.key())
		}
	}
	c := ConfigOverride{App: appName, Scope: scope, Overrides: overrides, Updated: f.now().UTC()}
	if _, err := f.st.Apply(ctx, store.Put(collConfigs, appName+"/"+scope.key(), encode(c))); err != nil {
		return ConfigOverride{}, fmt.Errorf("fleet: configuration of %s: %w", appName, err)
	}
	return c, nil
}

// RegisterInstance adds an instance or sets its labels (all of them:
// labels not given are removed).
func (f *Fleet) RegisterInstance(ctx context.Context, id string, labels map[string]string) (Instance, error) {
	if !ValidInstance(id) {
		return Instance{}, fmt.Errorf("%w: instance id %q: want 1-64 letters, digits, '.', '_' or '-'", ErrInvalid, id)
	}
	if err := CheckLabels(labels); err != nil {
		return Instance{}, fmt.Errorf("instance %s: %w", id, err)
	}
	for {
		old, err := get[Instance](ctx, f.st, collInstances, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Instance{}, err
		}
		in := Instance{ID: id, Labels: labels, Created: f.now().UTC()}
		if old.version != 0 {
			in.Created = old.v.Created
		}
		_, err = f.st.Apply(ctx, store.Replace(collInstances, id, encode(in), old.version))
		if errors.Is(err, store.ErrConflict) {
			continue // written meanwhile (its first report): read again
		}
		if err != nil {
			return Instance{}, fmt.Errorf("fleet: instance %s: %w", id, err)
		}
		return in, nil
	}
}

var instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidInstance reports whether id may name an instance (as the gateway
// allows: 1-64 letters, digits, '.', '_' or '-').
func ValidInstance(id string) bool { return instanceRE.MatchString(id) }

// InstanceView is an instance with what the fleet knows of it.
type InstanceView struct {
	Instance
	Report
	// State is what the fleet can vouch for: "unknown" unless the
	// instance is online and has reported the revision it was sent.
	Desired  uint64 `json:"desired"`
	Running  string `json:"running,omitempty"` // the deployment its apps run
	Current  bool   `json:"current"`           // it reported the desired revision
	Presence string `json:"presence"`          // online, offline or unknown
}

// Instances lists every instance with its report and desired revision.
func (f *Fleet) Instances(ctx context.Context) ([]InstanceView, error) {
	p, err := f.QueryInstances(ctx, InstanceQuery{})
	return p.Instances, err
}

// view is what the fleet knows of an instance, from its records.
func view(in Instance, rep Report, desired uint64) InstanceView {
	v := InstanceView{Instance: in, Report: rep, Desired: desired, Presence: "unknown"}
	if !v.PresenceTime.IsZero() {
		v.Presence = "offline"
		if v.Online {
			v.Presence = "online"
		}
	}
	if st := v.Status; st != nil {
		if st.Running != nil {
			v.Running = st.Running.Deployment
		}
		v.Current = st.Revision >= v.Desired && st.Outcome != app.OutcomeInProgress
	}
	return v
}

// Deploy creates a deployment; the lease holder rolls it out. Its apps and
// versions must be in the catalogue, and the selector must parse (a
// selector matching no instance is no error: the deployment reaches the
// instances that match it later).
func (f *Fleet) Deploy(ctx context.Context, d Deployment) (Deployment, error) {
	if !idRE.MatchString(d.ID) {
		return Deployment{}, fmt.Errorf("%w: deployment id %q: want 1-128 letters, digits, '.', '_', ':' or '-'", ErrInvalid, d.ID)
	}
	if _, err := ParseSelector(d.Selector); err != nil {
		return Deployment{}, fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	if err := d.Policy.check(); err != nil {
		return Deployment{}, fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	seen := map[string]bool{}
	for i, av := range d.Apps {
		if seen[av.App] {
			return Deployment{}, fmt.Errorf("%w: deployment %s: apps[%d]: app %s appears twice", ErrInvalid, d.ID, i, av.App)
		}
		seen[av.App] = true
		if _, err := get[Version](ctx, f.st, collVersions, av.App+"/"+av.Version); err != nil {
			return Deployment{}, fmt.Errorf("deployment %s: apps[%d]: %w", d.ID, i, err)
		}
	}
	// The document as a gateway will read it, with no override.
	if _, err := f.document(ctx, &catalogue{f: f, ctx: ctx}, d.ID, d.Apps, "check", 1); err != nil {
		return Deployment{}, fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	now := f.now().UTC()
	d.State, d.Reason, d.Wave, d.Waves, d.BakedAt, d.Started = DeploymentRunning, "", 0, nil, time.Time{}, nil
	d.Created, d.Updated = now, now
	_, err := f.st.Apply(ctx, store.Create(collDeployments, d.ID, encode(d)))
	if errors.Is(err, store.ErrConflict) {
		return Deployment{}, fmt.Errorf("%w: deployment %s", ErrExists, d.ID)
	}
	if err != nil {
		return Deployment{}, fmt.Errorf("fleet: deployment %s: %w", d.ID, err)
	}
	return d, nil
}

// Deployment returns a deployment and its targets, by instance.
func (f *Fleet) Deployment(ctx context.Context, id string) (Deployment, []Target, error) {
	d, err := get[Deployment](ctx, f.st, collDeployments, id)
	if err != nil {
		return Deployment{}, nil, err
	}
	ts, err := values(list[Target](ctx, f.st, collTargets, id+"/", f.bad))
	return d.v, ts, err
}

// Deployments lists the deployments by id.
func (f *Fleet) Deployments(ctx context.Context) ([]Deployment, error) {
	return values(list[Deployment](ctx, f.st, collDeployments, "", f.bad))
}

// Pause stops a running deployment's waves: no instance is sent the
// document until Resume.
func (f *Fleet) Pause(ctx context.Context, id, reason string) error {
	return f.command(ctx, id, func(d *Deployment) error {
		if d.State != DeploymentRunning {
			return fmt.Errorf("%w: deployment %s is %s", ErrState, id, d.State)
		}
		d.State, d.Reason = DeploymentPaused, "paused by the operator"
		if reason != "" {
			d.Reason += ": " + reason
		}
		return nil
	})
}

// Resume lets a paused deployment go on.
func (f *Fleet) Resume(ctx context.Context, id string) error {
	return f.command(ctx, id, func(d *Deployment) error {
		if d.State != DeploymentPaused {
			return fmt.Errorf("%w: deployment %s is %s", ErrState, id, d.State)
		}
		d.State, d.Reason = DeploymentRunning, ""
		return nil
	})
}

// Cancel ends a deployment: instances not yet sent it never are; those
// already on it stay, unless rollback puts them back on their previous
// deployment.
func (f *Fleet) Cancel(ctx context.Context, id string, rollback bool) error {
	return f.command(ctx, id, func(d *Deployment) error {
		if d.State.final() {
			return fmt.Errorf("%w: deployment %s is %s", ErrState, id, d.State)
		}
		if rollback {
			d.State, d.Reason = DeploymentAborted, "cancelled by the operator, with rollback"
		} else {
			d.State, d.Reason = DeploymentCancelled, "cancelled by the operator"
		}
		return nil
	})
}

// command changes a deployment's record where the lease holder will see
// it, retrying over the holder's own writes.
func (f *Fleet) command(ctx context.Context, id string, change func(*Deployment) error) error {
	for {
		r, err := get[Deployment](ctx, f.st, collDeployments, id)
		if err != nil {
			return err
		}
		d := r.v
		if err := change(&d); err != nil {
			return err
		}
		d.Updated = f.now().UTC()
		_, err = f.st.Apply(ctx, store.Update(collDeployments, id, encode(d), r.version))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fleet: deployment %s: %w", id, err)
		}
		return nil
	}
}

func (p *Policy) check() error {
	for i, w := range p.Waves {
		if (w.Count > 0) == (w.Percent > 0) || w.Count < 0 || w.Percent < 0 || w.Percent > 100 {
			return fmt.Errorf("%w: policy.waves[%d]: want a count above 0 or a percent in (0, 100]", ErrInvalid, i)
		}
	}
	if e := p.Exponential; e != nil && (e.First < 1 || e.Factor < 1.1 || e.Factor > 10) {
		return fmt.Errorf("%w: policy.exponential: want first ≥ 1 and a factor in [1.1, 10]", ErrInvalid)
	}
	for name, v := range map[string]float64{"successPercent": p.SuccessPercent, "failurePercent": p.FailurePercent} {
		if v < 0 || v > 100 {
			return fmt.Errorf("%w: policy.%s %v: want 0-100", ErrInvalid, name, v)
		}
	}
	if p.MinSample < 0 || p.MaxPerMinute < 0 || p.Bake < 0 || p.Timeout < 0 || p.ReportTimeout < 0 {
		return fmt.Errorf("%w: policy: negative values", ErrInvalid)
	}
	if p.OnFailure != "" && p.OnFailure != "abort" && p.OnFailure != "pause" {
		return fmt.Errorf("%w: policy.onFailure %q: want abort or pause", ErrInvalid, p.OnFailure)
	}
	return nil
}

// waveSizes splits n instances by the policy.
func (p *Policy) waveSizes(n int) []int {
	var sizes []int
	left := n
	add := func(k int) {
		k = min(max(k, 1), left)
		sizes = append(sizes, k)
		left -= k
	}
	switch {
	case len(p.Waves) > 0:
		for _, w := range p.Waves {
			if left == 0 {
				break
			}
			k := w.Count
			if w.Percent > 0 {
				k = int((w.Percent*float64(n) + 99.999999) / 100)
			}
			add(k)
		}
		if left > 0 {
			add(left)
		}
	case p.Exponential != nil:
		k := float64(p.Exponential.First)
		for left > 0 {
			add(int(k))
			k *= p.Exponential.Factor
		}
	case n > 0:
		add(n)
	}
	return sizes
}

func (p *Policy) successPercent() float64 {
	if p.SuccessPercent == 0 {
		return 100
	}
	return p.SuccessPercent
}

func (p *Policy) timeout() time.Duration {
	if p.Timeout == 0 {
		return 15 * time.Minute
	}
	return time.Duration(p.Timeout)
}

func (p *Policy) reportTimeout() time.Duration {
	if p.ReportTimeout == 0 {
		return 2 * time.Minute
	}
	return time.Duration(p.ReportTimeout)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
