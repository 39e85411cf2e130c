package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgekit/edgekit/internal/backoff"
	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/internal/order"
)

// RestartPolicy says when the Manager restarts an application's container.
type RestartPolicy string

// Restart policies.
const (
	Always    RestartPolicy = "always"     // whatever the exit; never gives up
	OnFailure RestartPolicy = "on-failure" // after a non-zero exit
	Never     RestartPolicy = "never"
)

// Probe is a health check the Manager runs itself (podman schedules none
// without systemd): an HTTP GET answering 2xx or 3xx, a TCP connect, or a
// command exiting 0 in the container.
type Probe struct {
	HTTP     string        // URL
	TCP      string        // host:port
	Exec     []string      // command
	Interval time.Duration // default 2 s
	Timeout  time.Duration // default 1 s
	Retries  int           // failures in a row before unhealthy; default 3
}

// App is one application's desired state.
type App struct {
	Name    string
	Version string
	Spec    Spec // Name and the Manager's labels are set by the Manager
	// Pull has the credentials (and progress) for pulling Spec.Image when
	// it is missing; nil pulls anonymously.
	Pull    *PullOptions
	Restart RestartPolicy
	Health  *Probe
	// After names the apps (in the same Apply) that must be running, and
	// healthy when they have a probe, before this one's container is
	// created or started: the start order. Once started it does not wait
	// again, as its dependencies restart or upgrade. Apps an Apply leaves
	// out are removed in the reverse order.
	After []string
	// Probation bounds how long a new version has to become healthy
	// (running, without a probe) before an upgrade is rolled back;
	// default 30 s.
	Probation time.Duration
}

// Labels the Manager puts on its containers, to adopt them after a restart.
const (
	LabelApp     = "edgekit.app"
	LabelVersion = "edgekit.version"
	LabelSpec    = "edgekit.spec"
)

// AppState is an application's state in Status.
type AppState string

// Application states.
const (
	AppWaiting   AppState = "waiting" // for the apps in its After to run
	AppStarting  AppState = "starting"
	AppRunning   AppState = "running" // and healthy, when it has a probe
	AppUnhealthy AppState = "unhealthy"
	AppExited    AppState = "exited"
	AppBackoff   AppState = "backoff"    // waiting to restart
	AppCrashLoop AppState = "crash-loop" // restarted too often in a row; still restarting
	AppFailed    AppState = "failed"     // cannot be created or started (see LastError)
)

// Health is what an app's probe found last.
type Health string

// Health states; an app without a probe has none ("").
const (
	HealthStarting  Health = "starting" // not passed since the container started
	HealthHealthy   Health = "healthy"
	HealthUnhealthy Health = "unhealthy" // Retries probes failed in a row
)

// AppStatus is an application's state now.
type AppStatus struct {
	Name         string
	Version      string
	State        AppState
	Health       Health
	ContainerID  string
	Restarts     int
	LastExitCode int
	LastExitAt   time.Time // as the runtime reports it, else when seen
	// RestartDelay is the backoff waited out before the latest restart
	// (or the one coming, in state backoff or crash-loop).
	RestartDelay time.Duration
	OOMKilled    bool // the last exit was the OOM killer's
	// OOMKills counts the processes in the app's containers the OOM
	// killer has killed, as the runtime reads them from the cgroup (see
	// Container.OOMKills), also those the container outlived.
	OOMKills   int
	LastError  string
	RolledBack string // why the last upgrade was rolled back
}

// ManagerOptions configure a Manager. The zero value is usable.
type ManagerOptions struct {
	// RestartMin and RestartMax bound the backoff between restarts: the
	// first waits RestartMin (default 1 s), each next one twice the last
	// (±20%), up to RestartMax (default 1 min).
	RestartMin, RestartMax time.Duration
	// Stable is how long a container must run before its restart count
	// resets; default 1 min.
	Stable time.Duration
	// CrashLoop is how many restarts in a row (none stable) mark an app
	// crash-looping; default 5. It keeps being restarted.
	CrashLoop int
	// Poll is how often containers are inspected, as a backstop to the
	// runtime's events (or its Wait, when it has none or their stream is
	// down); default 5 s.
	Poll time.Duration
	// OnChange, when set, receives each application's status when its
	// state, health, version, rollback or OOM kills change (for the
	// gateway to publish); it must not block.
	OnChange func(AppStatus)
	// Logger receives the manager's records; nil discards.
	Logger *slog.Logger
}

// Manager keeps applications' containers as their desired state says:
// created, started, restarted with backoff, probed, upgraded with rollback,
// and adopted after a gateway restart.
type Manager struct {
	rt      Runtime
	opts    ManagerOptions
	backoff backoff.Policy
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup

	probes *http.Client // the HTTP probes'; its idle connections close with the Manager

	mu      sync.Mutex
	closed  bool
	apps    map[string]*supervisor
	leaving map[string]*supervisor // removed, their containers maybe not yet gone
	changed chan struct{}          // closed (and replaced) when an app's state changes
}

// NewManager returns a manager of containers on rt.
func NewManager(rt Runtime, opts *ManagerOptions) *Manager {
	var o ManagerOptions
	if opts != nil {
		o = *opts
	}
	if o.RestartMin <= 0 {
		o.RestartMin = time.Second
	}
	if o.RestartMax <= 0 {
		o.RestartMax = time.Minute
	}
	if o.Stable <= 0 {
		o.Stable = time.Minute
	}
	if o.CrashLoop <= 0 {
		o.CrashLoop = 5
	}
	if o.Poll <= 0 {
		o.Poll = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{rt: rt, opts: o, backoff: backoff.Policy{Min: o.RestartMin, Max: o.RestartMax}, apps: map[string]*supervisor{}, leaving: map[string]*supervisor{}, changed: make(chan struct{}),
		probes: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	m.ctx, m.stop = context.WithCancel(context.Background())
	m.wg.Add(1)
	go m.watchEvents()
	return m
}

// watchEvents follows the runtime's container events, when it has them,
// and has an app's supervisor look at its container when one of its
// containers dies, stops, is killed or removed: a kill or a removal from
// outside is noticed even when the supervisor's Wait is broken. A broken
// stream is opened again with backoff, and every supervisor then looks at
// its container, for what happened meanwhile.
func (m *Manager) watchEvents() {
	defer m.wg.Done()
	ctx := m.ctx
	for failures := 0; ; {
		if failures > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.backoff.Delay(failures - 1)):
			}
		}
		info, err := m.rt.Info(ctx)
		if err == nil && !info.Capabilities.Events {
			return // the supervisors wait on the runtime and poll
		}
		var events <-chan Event
		if err == nil {
			events, err = m.rt.Events(ctx, nil)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			continue
		}
		failures = 0
		m.nudge("")
		for ev := range events {
			switch ev.Action {
			case "die", "stop", "kill", "oom", "remove":
				if app := ev.Labels[LabelApp]; app != "" {
					m.nudge(app)
				}
			}
		}
		m.opts.Logger.Info("container: the runtime's event stream ended; opening it again")
		if ctx.Err() != nil {
			return
		}
		failures++
	}
}

// nudge has the app's supervisor (every one, for "") look at its container.
func (m *Manager) nudge(app string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, s := range m.apps {
		if app == "" || app == name {
			select {
			case s.nudged <- struct{}{}:
			default: // one pending look is enough
			}
		}
	}
}

// specHash identifies an app's desired container.
func specHash(a App) string {
	b, _ := json.Marshal(struct {
		V string
		S Spec
	}{a.Version, a.Spec})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Apply makes apps the desired state: new ones start, changed ones are
// upgraded, missing ones are stopped and removed. It returns once each
// change has been handed to its application's supervisor. An app added
// while its earlier removal is under way starts once that container is
// gone. After Close it returns ErrClosed.
func (m *Manager) Apply(ctx context.Context, apps []App) error {
	seen := map[string]bool{}
	for _, a := range apps {
		if a.Name == "" || strings.ContainsAny(a.Name, "/ ") {
			return fmt.Errorf("container: app %q: a name without spaces or slashes is required", a.Name)
		}
		if a.Spec.Image == "" {
			return fmt.Errorf("container: app %s: spec.image is empty", a.Name)
		}
		if seen[a.Name] {
			return fmt.Errorf("container: app %s appears twice", a.Name)
		}
		seen[a.Name] = true
		switch a.Restart {
		case "", Always, OnFailure, Never:
		default:
			return fmt.Errorf("container: app %s: restart %q, want always, on-failure or never", a.Name, a.Restart)
		}
	}
	if err := checkOrder(apps); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for name, s := range m.leaving {
		select {
		case <-s.done:
			delete(m.leaving, name)
		default:
		}
	}
	for _, a := range apps {
		if a.Restart == "" {
			a.Restart = Always
		}
		if a.Probation <= 0 {
			a.Probation = 30 * time.Second
		}
		if a.Pull != nil {
			pull := *a.Pull
			a.Pull = &pull
		}
		a.After = slices.Clone(a.After)
		s, ok := m.apps[a.Name]
		if !ok {
			s = &supervisor{m: m, name: a.Name, desired: make(chan App, 1), nudged: make(chan struct{}, 1), done: make(chan struct{}),
				status: AppStatus{Name: a.Name, Version: a.Version, State: AppStarting}}
			if prev, ok := m.leaving[a.Name]; ok {
				s.prev = prev.done
			}
			m.apps[a.Name] = s
			m.wg.Add(1)
			go s.run()
		}
		s.after = a.After
		s.want(a)
	}
	// Apps left out are removed, each after those of them that start
	// after it: the reverse of the start order.
	removed := map[string]*supervisor{}
	for name, s := range m.apps {
		if !seen[name] {
			removed[name] = s
		}
	}
	for name, s := range removed {
		var dependents []<-chan struct{}
		for _, other := range removed {
			if slices.Contains(other.after, name) {
				dependents = append(dependents, other.done)
			}
		}
		s.mu.Lock()
		s.removeAfter = dependents
		s.mu.Unlock()
		s.want(App{Name: name}) // no image: remove
		delete(m.apps, name)
		m.leaving[name] = s
	}
	return nil
}

// checkOrder refuses an After naming an app not in apps, or a cycle.
func checkOrder(apps []App) error {
	after := map[string][]string{}
	for _, a := range apps {
		after[a.Name] = a.After
	}
	for _, a := range apps {
		for _, d := range a.After {
			if _, ok := after[d]; !ok {
				return fmt.Errorf("container: app %s starts after %q, which is not among the apps", a.Name, d)
			}
		}
	}
	names := make([]string, len(apps))
	for i, a := range apps {
		names[i] = a.Name
	}
	if c := order.Cycle(names, after); c != nil {
		return fmt.Errorf("container: apps start after each other in a cycle: %s", strings.Join(c, " -> "))
	}
	return nil
}

// waitingFor returns the apps among names not running (and healthy), and
// a channel closed at the next change of any app's state.
func (m *Manager) waitingFor(names []string) ([]string, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, n := range names {
		if s, ok := m.apps[n]; !ok || s.snapshot().State != AppRunning {
			out = append(out, n)
		}
	}
	return out, m.changed
}

// stateChanged wakes those waiting in waitingFor.
func (m *Manager) stateChanged() {
	m.mu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// Status returns every application's state, by name.
func (m *Manager) Status() []AppStatus {
	m.mu.Lock()
	sups := slices.Collect(maps.Values(m.apps))
	m.mu.Unlock()
	out := make([]AppStatus, 0, len(sups))
	for _, s := range sups {
		out = append(out, s.snapshot())
	}
	slices.SortFunc(out, func(a, b AppStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Pull makes the image ref present on the runtime, pulling it (with opts'
// credentials and progress) unless the runtime has it already: what a
// deployment does before it stops anything, so that an image that cannot
// be had fails the deployment while the old version still runs.
func (m *Manager) Pull(ctx context.Context, ref string, opts *PullOptions) error {
	if m.ctx.Err() != nil {
		return ErrClosed
	}
	ok, err := m.rt.ImageExists(ctx, ref)
	if err != nil {
		return fmt.Errorf("container: image %s: %w", ref, err)
	}
	if ok {
		return nil
	}
	if err := m.rt.PullImage(ctx, ref, opts); err != nil {
		return fmt.Errorf("container: pulling %s: %w", ref, err)
	}
	return nil
}

// Logs writes the application's container log to w (see Runtime.Logs).
func (m *Manager) Logs(ctx context.Context, app string, opts LogOptions, w io.Writer) error {
	id, err := m.containerOf(app)
	if err != nil {
		return err
	}
	return m.rt.Logs(ctx, id, opts, w)
}

// Stats reads the application's container's resource use.
func (m *Manager) Stats(ctx context.Context, app string) (Stats, error) {
	id, err := m.containerOf(app)
	if err != nil {
		return Stats{}, err
	}
	return m.rt.Stats(ctx, id)
}

// containerOf is the application's current container.
func (m *Manager) containerOf(app string) (string, error) {
	m.mu.Lock()
	s, ok := m.apps[app]
	m.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("container: app %s: %w", app, ErrNotFound)
	}
	id := s.snapshot().ContainerID
	if id == "" {
		return "", fmt.Errorf("container: app %s has no container yet: %w", app, ErrNotFound)
	}
	return id, nil
}

// Close stops supervising; the containers keep running (a new Manager
// adopts them). It is safe to call twice.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.stop()
	if err := drain.Wait(ctx, &m.wg, m.stop); err != nil {
		return fmt.Errorf("container: close: the supervisors: %w", err)
	}
	m.probes.CloseIdleConnections()
	return nil
}

// supervisor keeps one application as desired.
type supervisor struct {
	m       *Manager
	name    string
	desired chan App        // capacity 1: the newest desired state
	nudged  chan struct{}   // an event for its containers: look
	done    chan struct{}   // closed when run returns
	prev    <-chan struct{} // the done of the app's removal under way, if any
	after   []string        // the last desired After; Manager.mu guards it

	mu          sync.Mutex
	status      AppStatus
	removeAfter []<-chan struct{} // removal waits for these supervisors to end
}

func (s *supervisor) want(a App) {
	select {
	case <-s.desired: // drop an older desired state not yet taken
	default:
	}
	s.desired <- a
}

func (s *supervisor) snapshot() AppStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *supervisor) set(f func(*AppStatus)) {
	s.mu.Lock()
	before := s.status
	f(&s.status)
	now := s.status
	s.mu.Unlock()
	if now.State != before.State {
		s.m.stateChanged()
	}
	changed := now.State != before.State || now.Health != before.Health || now.Version != before.Version ||
		now.RolledBack != before.RolledBack || now.OOMKills != before.OOMKills
	if changed && s.m.opts.OnChange != nil {
		s.m.opts.OnChange(now)
	}
}

func (s *supervisor) fail(err error) {
	s.m.opts.Logger.Warn("container: app", "app", s.name, "err", err)
	s.set(func(st *AppStatus) { st.State, st.LastError = AppFailed, err.Error() })
}

// run is the application's loop: take the desired state, make it so, keep
// it so until the next one.
func (s *supervisor) run() {
	defer s.m.wg.Done()
	defer close(s.done)
	ctx := s.m.ctx
	var app App
	var id string       // the current container
	var pending bool    // its start failed: the keep-alive retries it
	var rejected string // the spec hash of a version rolled back: not tried again
	if s.prev != nil {  // the container being removed is not to be adopted
		select {
		case <-s.prev:
		case <-ctx.Done():
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case next := <-s.desired:
			if next.Spec.Image == "" {
				s.mu.Lock()
				dependents := s.removeAfter
				s.mu.Unlock()
				for _, d := range dependents {
					select {
					case <-d:
					case <-ctx.Done():
						return
					}
				}
				s.remove(ctx, app, id)
				return
			}
			switch {
			case id == "":
				var gone bool
				if id, next, pending, gone = s.ensure(ctx, next); gone {
					return
				}
			case specHash(next) != specHash(app) && specHash(next) != rejected:
				nid, err := s.upgrade(ctx, app, next, id)
				switch {
				case errors.Is(err, errRolledBack):
					rejected, next = specHash(next), app // the old version serves on
				case errors.Is(err, errNotRestored):
					s.fail(err)
					next, pending = app, true
				case err != nil:
					s.fail(err)
					if nid == "" { // the old one is gone too: start over
						id = ""
						s.want(next)
						continue
					}
					next = app
				}
				id = nid
			}
			app = next
		}
		if id == "" {
			continue
		}
		// Keep it running until the desired state changes.
		next, gone := s.keep(ctx, app, &id, pending)
		if gone {
			return
		}
		pending = false
		if next != nil {
			s.want(*next)
		}
	}
}

// ensure adopts or creates the app's container, retrying with backoff while
// it fails (a missing image, the runtime down), until it succeeds, a new
// desired state comes (tried instead), or the manager closes (gone). A
// container created whose start failed (a host port taken, say) is
// returned pending: the keep-alive retries the start.
func (s *supervisor) ensure(ctx context.Context, a App) (id string, _ App, pending, gone bool) {
	for attempt := 0; ; attempt++ {
		if next, gone := s.awaitOrder(ctx, a); gone || (next != nil && next.Spec.Image == "") {
			return "", a, false, true
		} else if next != nil {
			a, attempt = *next, -1
			continue
		}
		id, err := s.adoptOrCreate(ctx, a)
		if err == nil {
			return id, a, false, false
		}
		s.fail(err)
		if id != "" {
			return id, a, true, false
		}
		select {
		case <-ctx.Done():
			return "", a, false, true
		case next := <-s.desired:
			if next.Spec.Image == "" {
				return "", a, false, true
			}
			a, attempt = next, -1
		case <-time.After(s.m.backoff.Delay(attempt)):
		}
	}
}

// awaitOrder waits until the apps in a.After run, unless a's container is
// already running as desired (adopted after a gateway restart), or until a
// new desired state comes (returned) or the manager closes (gone).
func (s *supervisor) awaitOrder(ctx context.Context, a App) (next *App, gone bool) {
	if len(a.After) == 0 {
		return nil, false
	}
	if list, err := s.m.rt.List(ctx, map[string]string{LabelApp: a.Name, LabelSpec: specHash(a)}); err == nil {
		for _, c := range list {
			if c.State == Running && c.Name == s.containerName() {
				return nil, false
			}
		}
	}
	for {
		waiting, changed := s.m.waitingFor(a.After)
		if len(waiting) == 0 {
			return nil, false
		}
		s.set(func(st *AppStatus) { st.State = AppWaiting })
		s.m.opts.Logger.Debug("container: waiting to start", "app", a.Name, "for", waiting)
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, true
		case n := <-s.desired:
			return &n, false
		}
	}
}

// names of the app's containers: the current one, and the previous
// version's during an upgrade.
func (s *supervisor) containerName() string { return "edgekit-" + s.name }

func (s *supervisor) labels(a App) map[string]string {
	l := maps.Clone(a.Spec.Labels)
	if l == nil {
		l = map[string]string{}
	}
	l[LabelApp], l[LabelVersion], l[LabelSpec] = a.Name, a.Version, specHash(a)
	return l
}

// adoptOrCreate takes over a container a previous manager left for this
// app (same spec: adopt; other: replace), or creates one; then starts it.
func (s *supervisor) adoptOrCreate(ctx context.Context, a App) (string, error) {
	rt := s.m.rt
	existing, err := rt.List(ctx, map[string]string{LabelApp: a.Name})
	if err != nil {
		return "", err
	}
	for _, c := range existing {
		if c.Labels[LabelSpec] == specHash(a) && c.Name == s.containerName() {
			s.m.opts.Logger.Info("container: adopted", "app", a.Name, "container", c.ID, "state", c.State)
			// What else the app has is what an upgrade cut short left (the
			// version it was replacing, renamed): removed, so that the
			// app has one container.
			for _, other := range existing {
				if other.ID != c.ID {
					s.m.opts.Logger.Info("container: removing what an interrupted upgrade left", "app", a.Name, "container", other.ID, "name", other.Name)
					_ = rt.Stop(ctx, other.ID, grace(a))
					_ = rt.Remove(ctx, other.ID, true)
				}
			}
			s.set(func(st *AppStatus) { st.ContainerID, st.Version = c.ID, a.Version })
			if c.State != Running {
				if err := rt.Start(ctx, c.ID); err != nil {
					return c.ID, fmt.Errorf("starting adopted container: %w", err)
				}
			}
			return c.ID, nil
		}
	}
	for _, c := range existing { // other versions: replaced
		_ = rt.Stop(ctx, c.ID, grace(a))
		_ = rt.Remove(ctx, c.ID, true)
	}
	id, err := s.create(ctx, a, s.containerName())
	if err != nil {
		return "", err
	}
	if err := rt.Start(ctx, id); err != nil {
		return id, fmt.Errorf("starting: %w", err)
	}
	s.set(func(st *AppStatus) { st.ContainerID, st.Version, st.State = id, a.Version, AppStarting })
	return id, nil
}

func grace(a App) time.Duration {
	if a.Spec.StopGrace > 0 {
		return a.Spec.StopGrace
	}
	return 10 * time.Second
}

// create creates the container, pulling its image first when it is
// missing.
func (s *supervisor) create(ctx context.Context, a App, name string) (string, error) {
	rt := s.m.rt
	spec := a.Spec
	spec.Name, spec.Labels = name, s.labels(a)
	id, err := rt.Create(ctx, spec)
	if !errors.Is(err, ErrImageNotFound) {
		return id, err
	}
	if err := rt.PullImage(ctx, a.Spec.Image, a.Pull); err != nil {
		return "", fmt.Errorf("pulling %s: %w", a.Spec.Image, err)
	}
	return rt.Create(ctx, spec)
}

// upgrade replaces the running version: the image is pulled before
// anything stops; the old container is renamed and stopped, the new one
// started; if it is not healthy within the probation, it is removed and
// the old one restored.
func (s *supervisor) upgrade(ctx context.Context, old, next App, oldID string) (string, error) {
	rt := s.m.rt
	if ok, err := rt.ImageExists(ctx, next.Spec.Image); err != nil || !ok {
		if err := rt.PullImage(ctx, next.Spec.Image, next.Pull); err != nil {
			return oldID, fmt.Errorf("upgrade to %s: pulling %s: %w (the old version keeps running)", next.Version, next.Spec.Image, err)
		}
	}
	prev := s.containerName() + "-previous"
	_ = rt.Remove(ctx, prev, true)
	if err := rt.Rename(ctx, oldID, prev); err != nil {
		return oldID, fmt.Errorf("upgrade to %s: renaming the old container: %w", next.Version, err)
	}
	newID, err := s.create(ctx, next, s.containerName())
	if err != nil {
		_ = rt.Rename(ctx, oldID, s.containerName())
		return oldID, fmt.Errorf("upgrade to %s: %w (the old version keeps running)", next.Version, err)
	}
	_ = rt.Stop(ctx, oldID, grace(old))
	healthy := rt.Start(ctx, newID) == nil && s.becomesHealthy(ctx, next, newID)
	if healthy {
		_ = rt.Remove(ctx, oldID, true)
		s.set(func(st *AppStatus) {
			st.ContainerID, st.Version, st.Restarts, st.RolledBack = newID, next.Version, 0, ""
		})
		s.m.opts.Logger.Info("container: upgraded", "app", next.Name, "from", old.Version, "to", next.Version)
		return newID, nil
	}
	why := fmt.Sprintf("version %s was not healthy within %v", next.Version, next.Probation)
	_ = rt.Stop(ctx, newID, grace(next))
	_ = rt.Remove(ctx, newID, true)
	if err := rt.Rename(ctx, oldID, s.containerName()); err != nil {
		return "", fmt.Errorf("rollback: renaming the old container back: %w", err)
	}
	if err := rt.Start(ctx, oldID); err != nil {
		return oldID, fmt.Errorf("%w: %s; starting it: %w", errNotRestored, why, err)
	}
	s.set(func(st *AppStatus) { st.ContainerID, st.Version, st.RolledBack = oldID, old.Version, why })
	s.m.opts.Logger.Warn("container: upgrade rolled back", "app", next.Name, "why", why)
	return oldID, errRolledBack
}

var (
	errRolledBack  = errors.New("upgrade rolled back")
	errNotRestored = errors.New("rollback: the old version could not be started again (retrying)")
)

// becomesHealthy waits, within the probation, for the container to run and
// pass its probe.
func (s *supervisor) becomesHealthy(ctx context.Context, a App, id string) bool {
	pctx, cancel := context.WithTimeout(ctx, a.Probation)
	defer cancel()
	if _, err := s.m.rt.Wait(pctx, id, WaitRunning); err != nil {
		return false
	}
	for {
		c, err := s.m.rt.Inspect(pctx, id)
		if err != nil || c.State != Running {
			return false
		}
		if a.Health == nil || s.probe(pctx, a, id) == nil {
			if a.Health == nil {
				// Running without a probe: stay up a moment to count.
				select {
				case <-time.After(min(a.Probation/4, 2*time.Second)):
				case <-pctx.Done():
					return false
				}
				c, err := s.m.rt.Inspect(ctx, id)
				return err == nil && c.State == Running
			}
			return true
		}
		select {
		case <-time.After(interval(a.Health)):
		case <-pctx.Done():
			return false
		}
	}
}

func interval(p *Probe) time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return 2 * time.Second
}

// probe runs the app's health check once.
func (s *supervisor) probe(ctx context.Context, a App, id string) error {
	p := a.Health
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTP != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.HTTP, nil)
		if err != nil {
			return err
		}
		resp, err := s.m.probes.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("health %s: status %d", p.HTTP, resp.StatusCode)
		}
		return nil
	case p.TCP != "":
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.TCP)
		if err != nil {
			return err
		}
		return c.Close()
	case len(p.Exec) > 0:
		res, err := s.m.rt.Exec(ctx, id, p.Exec)
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("health command exited %d", res.ExitCode)
		}
		return nil
	}
	return nil
}

// keep watches the running container: probes it, restarts it per the
// policy with backoff, until the desired state changes (returned) or the
// manager closes (gone). pending says the container's start failed and is
// to be retried first.
func (s *supervisor) keep(ctx context.Context, a App, id *string, pending bool) (next *App, gone bool) {
	rt := s.m.rt
	failures := 0          // exits and failed starts in a row, none after a stable run
	afterExit := false     // the pending start is a restart
	var wait time.Duration // the backoff chosen when the exit was seen; 0: choose at the start
	healthFails := 0
	var probeC <-chan time.Time
	if a.Health != nil {
		t := time.NewTicker(interval(a.Health))
		defer t.Stop()
		probeC = t.C
	}
	for {
		if pending {
			d := wait
			if d == 0 {
				d = s.m.backoff.Delay(failures)
			}
			wait = 0
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, true
			case n := <-s.desired:
				return &n, false
			}
			failures++
			if err := s.startAgain(ctx, a, id); err != nil {
				s.fail(fmt.Errorf("starting: %w", err))
				continue
			}
			pending = false
			if afterExit {
				s.set(func(st *AppStatus) { st.Restarts++ })
			}
		}
		exited := make(chan int, 2)
		// A cancelled Wait can take podman more than half a second to
		// end: it ends in the background, owned by the manager (Close
		// waits for it).
		wctx, stopWaiting := context.WithCancel(ctx)
		startedAt := time.Now()
		var oomSeen uint64 // the container's cgroup counter, new with each start
		// The exit comes from Wait or from the events the manager
		// follows, whichever is first (on podman each lags by up to a
		// quarter second), and from the inspect poll when both streams
		// are broken (the service restarting, say).
		s.m.wg.Add(1)
		go func(id string) {
			defer s.m.wg.Done()
			code, err := rt.Wait(wctx, id, WaitExited)
			if err == nil {
				exited <- code
			}
		}(*id)
		// look inspects the container: an exit, a removal, OOM kills.
		look := func() {
			c, err := rt.Inspect(ctx, *id)
			switch {
			case err == nil && (c.State == Exited || c.State == Created):
				select {
				case exited <- c.ExitCode:
				default:
				}
			case errors.Is(err, ErrNotFound):
				select {
				case exited <- -1: // removed from outside
				default:
				}
			case err == nil && c.OOMKills > oomSeen:
				kills := int(c.OOMKills - oomSeen)
				oomSeen = c.OOMKills
				s.set(func(st *AppStatus) { st.OOMKills += kills })
				s.m.opts.Logger.Warn("container: OOM kill in the app's container", "app", a.Name, "kills", kills)
			}
		}
		poll := time.NewTicker(s.m.opts.Poll)
		// With a probe, one at once: a container already serving (adopted,
		// or just proven in an upgrade's probation) is running now; a
		// failure here is not counted, the app may still be starting.
		healthFails = 0
		healthy := a.Health == nil || s.probe(ctx, a, *id) == nil
		s.set(func(st *AppStatus) {
			st.ContainerID = *id
			switch {
			case a.Health == nil:
				st.State, st.Health = AppRunning, ""
			case healthy:
				st.State, st.Health = AppRunning, HealthHealthy
			default:
				st.State, st.Health = AppStarting, HealthStarting
			}
		})
	watch:
		for {
			select {
			case <-ctx.Done():
				poll.Stop()
				stopWaiting()
				return nil, true
			case n := <-s.desired:
				poll.Stop()
				stopWaiting()
				return &n, false
			case <-poll.C:
				look()
			case <-s.nudged:
				look()
			case <-probeC:
				if err := s.probe(ctx, a, *id); err != nil {
					healthFails++
					retries := a.Health.Retries
					if retries <= 0 {
						retries = 3
					}
					if healthFails >= retries {
						s.set(func(st *AppStatus) { st.State, st.Health, st.LastError = AppUnhealthy, HealthUnhealthy, err.Error() })
					}
				} else {
					healthFails = 0
					s.set(func(st *AppStatus) { st.State, st.Health = AppRunning, HealthHealthy })
				}
			case code := <-exited:
				poll.Stop()
				stopWaiting()
				c, _ := rt.Inspect(ctx, *id)
				oom := c.OOMKilled || (code == 137 && (a.Spec.Resources.MemoryBytes > 0 || oomSeen > 0))
				exitAt := c.FinishedAt // the runtime's, when it has it for this run
				if exitAt.Before(startedAt.Add(-time.Second)) || exitAt.After(time.Now()) {
					exitAt = time.Now()
				}
				s.set(func(st *AppStatus) {
					st.State, st.LastExitCode, st.LastExitAt, st.OOMKilled = AppExited, code, exitAt, oom
				})
				s.m.opts.Logger.Info("container: exited", "app", a.Name, "code", code, "oom", oom)
				if a.Restart == Never || (a.Restart == OnFailure && code == 0) {
					// Stays exited until the desired state changes.
					select {
					case <-ctx.Done():
						return nil, true
					case n := <-s.desired:
						return &n, false
					}
				}
				if time.Since(startedAt) >= s.m.opts.Stable {
					failures = 0
				}
				state := AppBackoff
				if failures+1 >= s.m.opts.CrashLoop {
					state = AppCrashLoop
				}
				wait = s.m.backoff.Delay(failures)
				s.set(func(st *AppStatus) { st.State, st.RestartDelay = state, wait })
				pending, afterExit = true, true
				break watch
			}
		}
	}
}

// startAgain starts the app's container again, or makes a new one when it
// was removed from outside.
func (s *supervisor) startAgain(ctx context.Context, a App, id *string) error {
	err := s.m.rt.Start(ctx, *id)
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	nid, err := s.adoptOrCreate(ctx, a)
	if nid != "" {
		*id = nid
	}
	return err
}

// remove stops and removes the app's container.
func (s *supervisor) remove(ctx context.Context, a App, id string) {
	if id == "" {
		return
	}
	_ = s.m.rt.Stop(ctx, id, grace(a))
	if err := s.m.rt.Remove(ctx, id, true); err != nil {
		s.m.opts.Logger.Warn("container: removing", "app", s.name, "err", err)
	}
}
