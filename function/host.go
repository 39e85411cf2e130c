package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgekit/edgekit/function/internal/bootstrap"
	"github.com/edgekit/edgekit/function/logstore"
	"github.com/edgekit/edgekit/internal/drain"
	"github.com/edgekit/edgekit/internal/safefile"
	"github.com/edgekit/edgekit/invoke"
)

// Sentinel errors of the host, beside those of package invoke (which
// Invoke returns: ErrNotFound, ErrThrottled, ErrTimeout, ErrFunction).
var (
	ErrClosed = errors.New("function host closed")
	// ErrUnknownHandler: a "go" Spec names a handler nobody registered.
	ErrUnknownHandler = errors.New("no handler registered under that name")
)

// Options configure a Host. A nil *Options means the defaults.
type Options struct {
	// DataDir is where the host keeps what it writes (the Node.js and
	// Python bootstraps); default a temporary directory removed on Close.
	DataDir string
	// LogBytesPerFunction bounds each function's stored log (Logs); default
	// 8 MiB.
	LogBytesPerFunction int64
	// MemoryLimiter picks how out-of-process instances are held to
	// Spec.MemoryLimitMB; the default takes the first that works here:
	// a cgroup v2 memory controller, a v1 one, else RLIMIT_DATA. Status
	// says which.
	MemoryLimiter MemoryLimiter
	// Env is added to every out-of-process instance's environment (a
	// Spec's Env wins): the gateway's local API address, say.
	Env map[string]string
	// EnvFor, when set, is asked at each start of an out-of-process
	// instance for variables of that function's own, added after Env (a
	// Spec's Env wins, but may not set EDGEKIT_*): a local API token of
	// the function's own, say (httpcall.Tokens).
	EnvFor func(Spec) map[string]string
	// FunctionUIDs is where an out-of-process function whose Spec names no
	// User gets a uid (and gid) of its own, one per function name, when the
	// host runs as root: so that no function reads another's environment
	// or files, nor reaches its runtime API from its own uid. Default
	// DefaultFunctionUIDFirst, DefaultFunctionUIDCount (90000–90999). A
	// function whose code, handler, interpreter or bootstrap that uid
	// cannot reach runs as the host's user instead, and Deploy logs why;
	// Status.User says which uid runs it.
	FunctionUIDs UIDRange
	// SharedUID runs out-of-process functions whose Spec names no User as
	// the host's user, as when the host is not root.
	SharedUID bool
	// CgroupParent is the cgroup v2 directory the host makes its own
	// cgroup in, e.g. one delegated to the gateway by its systemd unit
	// (Delegate=yes) that holds no processes itself. Default: the host's
	// own cgroup, which can hand out the memory controller only when it
	// is the root or holds no processes.
	CgroupParent string
	// Logger receives the host's records and every record a function
	// logs; nil discards.
	Logger *slog.Logger
	// QueueWait is how long Invoke waits for room in a full queue before
	// it returns invoke.ErrThrottled; default 0 (at once).
	QueueWait time.Duration
	// AsyncResults is how many InvokeAsync results are kept for
	// AsyncResult; default 1,000 (oldest dropped first).
	AsyncResults int
	// OnAsyncResult, if set, is called with every InvokeAsync result, on
	// the goroutine that waited for it.
	OnAsyncResult func(AsyncResult)
	// Calls, when set, serves what native-protocol functions ask of the
	// gateway (package fnapi's methods: publish, invoke, devices,
	// configuration), each call on a goroutine of its own; without it
	// every call is answered fnapi.ErrUnavailable.
	Calls CallHandler
	// OnChange, if set, receives a function's status after each change of
	// its version, phase or deploy error, and a Status with PhaseRemoved
	// (and only the name) when it goes (for the gateway to publish). It
	// is called from one goroutine of the host's, in order, with the
	// status as it is when called: changes in quick succession may come
	// as one. It may call the host.
	OnChange func(Status)
}

// Host deploys function versions and invokes them. It is safe for
// concurrent use. Close stops every instance.
type Host struct {
	opts     Options
	log      *slog.Logger
	hostID   string // names the host's cgroups
	ids      *requestIDs
	uids     *uidPool // nil: functions run as the host's user
	seq      atomic.Uint64
	lifetime context.Context
	stop     context.CancelFunc
	bg       sync.WaitGroup // async invocations and draining pools
	launch   launcher
	logs     *logstore.Store
	dataDir  string
	tempDir  bool     // dataDir was made by New and goes at Close
	lock     *os.File // held on a data directory of the caller's

	mu        sync.RWMutex
	closed    bool
	handlers  map[string]Handler
	functions map[string]*function

	resMu   sync.Mutex
	results map[string]AsyncResult
	order   []string

	apply   sync.Mutex // one Apply at a time
	changes changeQueue
}

var _ invoke.Invoker = (*Host)(nil)

// function is one name: its current version and its counters, which
// survive redeploys.
type function struct {
	host    *Host
	name    string
	current atomic.Pointer[pool]
	stats   counters

	errMu     sync.Mutex
	lastErr   string
	lastErrAt time.Time
	// deployErr is why the latest Deploy of this name failed ("" once one
	// succeeds); failed is the spec it failed with, while no version
	// serves.
	deployErr      string
	failed         *Spec
	metrics        map[string]float64 // latest value per name, from native metric frames
	metricsRefused bool               // a refusal was logged
}

type counters struct {
	invocations, errors, throttles, timeouts, coldStarts atomic.Uint64
	durations                                            histogram
}

// Bounds on the metrics a function may report: what it sends is kept in
// the host's memory and shown in Status, so its names are bounded in
// number and length.
const (
	maxMetricNames   = 64
	maxMetricNameLen = 128
)

// setMetric records a function's latest value for a metric name.
func (h *Host) setMetric(function, name string, v float64) {
	h.mu.RLock()
	fn := h.functions[function]
	h.mu.RUnlock()
	if fn == nil {
		return
	}
	fn.errMu.Lock()
	defer fn.errMu.Unlock()
	if fn.metrics == nil {
		fn.metrics = make(map[string]float64)
	}
	if _, ok := fn.metrics[name]; !ok && (len(fn.metrics) >= maxMetricNames || len(name) > maxMetricNameLen || name == "") {
		if !fn.metricsRefused {
			fn.metricsRefused = true
			h.log.Warn("function: metric refused: a function reports at most 64 metrics, with names of 1 to 128 bytes; further refusals are not logged",
				"function", function, "metrics", len(fn.metrics), "name_bytes", len(name))
		}
		return
	}
	fn.metrics[name] = v
}

func (f *function) setLastError(err error) {
	f.errMu.Lock()
	f.lastErr, f.lastErrAt = err.Error(), time.Now()
	f.errMu.Unlock()
}

// New returns an empty host.
func New(opts *Options) (*Host, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.AsyncResults <= 0 {
		o.AsyncResults = 1000
	}
	if o.QueueWait < 0 {
		return nil, errors.New("function: Options.QueueWait is negative")
	}
	h := &Host{
		opts: o, log: o.Logger, hostID: newHostID(),
		handlers: make(map[string]Handler), functions: make(map[string]*function),
		results: make(map[string]AsyncResult),
	}
	ids, err := newRequestIDs()
	if err != nil {
		return nil, fmt.Errorf("function: request id key: %w", err)
	}
	h.ids = ids
	if os.Geteuid() == 0 && !o.SharedUID {
		r := o.FunctionUIDs
		if r.Count == 0 {
			r = UIDRange{First: DefaultFunctionUIDFirst, Count: DefaultFunctionUIDCount}
		}
		h.uids = newUIDPool(r)
	}
	if err := h.prepareDataDir(); err != nil {
		return nil, err
	}
	if !h.tempDir {
		if h.hostID, h.lock, err = claimDataDir(h.dataDir); err != nil {
			return nil, err
		}
	}
	mem, skipped, err := newMemoryLimiter(o.MemoryLimiter, h.hostID, o.CgroupParent)
	if err != nil {
		h.unlock()
		return nil, err
	}
	if n := mem.reapLeftovers(); n > 0 {
		h.log.Warn("function: killed processes a previous host left behind (it was killed, or lost power)", "processes", n)
	}
	for _, err := range skipped {
		h.log.Info("function: a memory limiter is not available here", "err", err)
	}
	h.log.Info("function: memory limits through "+string(mem.kind), "limiter", mem.kind)
	h.logs, err = logstore.Open(filepath.Join(h.dataDir, "logs"), &logstore.Options{MaxBytes: o.LogBytesPerFunction})
	if err != nil {
		mem.close()
		h.unlock()
		return nil, fmt.Errorf("function: %w", err)
	}
	// Every record about a function (its output lines, its handler's
	// logging, the host's own) is also kept for Logs.
	h.log = slog.New(h.logs.Handler(o.Logger.Handler()))
	env := baseEnv()
	for _, k := range slices.Sorted(maps.Keys(o.Env)) {
		env = append(env, k+"="+o.Env[k])
	}
	h.launch = launcher{log: h.log, hostLog: o.Logger, logs: h.logs, env: env, envFor: o.EnvFor, bootstrapDir: h.bootstrapDir(), mem: mem, metric: h.setMetric, peerCheck: peerCheckAvailable(), calls: o.Calls}
	if !h.launch.peerCheck {
		h.log.Warn("function: neither sock_diag nor /proc/net/tcp is available: the runtime API checks its secret, not who connects")
	}
	h.lifetime, h.stop = context.WithCancel(context.Background())
	h.changes.start(h.opts.OnChange, h.changedStatus)
	return h, nil
}

// changedStatus is what OnChange gets for a name: its status, or that it
// is gone.
func (h *Host) changedStatus(name string) Status {
	h.mu.RLock()
	fn := h.functions[name]
	h.mu.RUnlock()
	if fn != nil {
		if st, ok := fn.status(); ok {
			return st
		}
	}
	return Status{Name: name, Phase: PhaseRemoved}
}

// Register makes an in-process handler deployable under name (a Spec with
// Runtime "go" and Handler name). Registering a name twice is an error.
func (h *Host) Register(name string, handler Handler) error {
	if name == "" || handler == nil {
		return errors.New("function: Register needs a name and a handler")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.handlers[name]; ok {
		return fmt.Errorf("function: handler %q already registered", name)
	}
	h.handlers[name] = handler
	return nil
}

// Deploy makes spec the function's current version. New invocations go to
// it at once; invocations already queued or running on the previous version
// finish there, then its instances stop. If the new version cannot be
// started the previous one keeps serving and Deploy returns why. Deploying
// the spec that already runs changes nothing.
func (h *Host) Deploy(ctx context.Context, spec Spec) error {
	s, err := spec.Resolve()
	if err != nil {
		return err
	}
	err = h.deploy(ctx, s)
	if !errors.Is(err, ErrClosed) {
		h.recordDeploy(s, err)
	}
	return err
}

// recordDeploy keeps the outcome of a deploy of s for Status and tells
// OnChange.
func (h *Host) recordDeploy(s Spec, err error) {
	h.mu.Lock()
	fn := h.functions[s.Name]
	if fn == nil && err != nil && !h.closed {
		fn = &function{host: h, name: s.Name}
		h.functions[s.Name] = fn
	}
	h.mu.Unlock()
	if fn == nil {
		return
	}
	fn.errMu.Lock()
	if err != nil {
		fn.deployErr = err.Error()
		if fn.current.Load() == nil {
			fn.failed = &s
		}
	} else {
		fn.deployErr, fn.failed = "", nil
	}
	fn.errMu.Unlock()
	h.changes.note(s.Name)
}

// deploy is Deploy of a resolved spec.
func (h *Host) deploy(ctx context.Context, s Spec) error {
	if s.Runtime != RuntimeGo && s.User == nil && h.uids != nil {
		u, err := ownUser(h.uids, s, h.bootstrapDir())
		if err != nil {
			h.log.Warn("function: runs as the host's user, not a uid of its own", "function", s.Name, "version", s.Version, "err", err)
		}
		s.User = u
	}
	h.mu.RLock()
	closed, handler := h.closed, h.handlers[s.Handler]
	var old *pool
	if fn := h.functions[s.Name]; fn != nil {
		old = fn.current.Load()
	}
	h.mu.RUnlock()
	if closed {
		return fmt.Errorf("function: deploy %s: %w", s.Name, ErrClosed)
	}
	if old != nil && !old.crashLooping() { // a crash-looping version deployed again starts afresh
		cur := old.currentSpec()
		if reflect.DeepEqual(cur, s) {
			return nil
		}
		if cur.Config = s.Config; old.live() && reflect.DeepEqual(cur, s) {
			// Only the configuration changed: the instances take it as
			// they run.
			old.reconfigure(s.Config)
			h.log.Info("function configuration changed", "function", s.Name, "version", s.Version)
			return nil
		}
	}
	config := newLiveConfig(s.Config)
	var newInst func(id string) (instance, error)
	var first instance
	switch s.Runtime {
	case RuntimeGo:
		if handler == nil {
			return fmt.Errorf("function: deploy %s version %s: %w: %q", s.Name, s.Version, ErrUnknownHandler, s.Handler)
		}
		newInst = func(string) (instance, error) { return handlerInstance{handler}, nil }
	default:
		newInst = func(id string) (instance, error) {
			now := s
			now.Config = config.load()
			return h.launch.start(h.lifetime, now, id, config.load)
		}
		// Prove the version starts before it takes traffic: if it does
		// not, the previous version keeps serving.
		pi, err := h.launch.start(ctx, s, s.Version+"-0", config.load)
		if err != nil {
			return fmt.Errorf("function: deploy %s version %s: %w", s.Name, s.Version, err)
		}
		first = pi
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		if first != nil {
			first.stop()
		}
		return fmt.Errorf("function: deploy %s: %w", s.Name, ErrClosed)
	}
	fn := h.functions[s.Name]
	if fn == nil {
		fn = &function{host: h, name: s.Name}
		h.functions[s.Name] = fn
	}
	old = fn.current.Swap(newPool(fn, s, config, newInst, first))
	if old != nil {
		h.retire(old)
	}
	h.log.Info("function deployed", "function", s.Name, "version", s.Version, "runtime", string(s.Runtime), "mode", string(s.Mode))
	return nil
}

// retire closes a replaced pool and lets it drain in the background.
func (h *Host) retire(p *pool) {
	p.close()
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		_ = p.wait(h.lifetime)
	}()
}

// Remove takes the function away: new invocations get invoke.ErrNotFound,
// queued and running ones finish. It waits for its instances to stop, or
// for ctx.
func (h *Host) Remove(ctx context.Context, name string) error {
	h.mu.Lock()
	fn := h.functions[name]
	delete(h.functions, name)
	h.mu.Unlock()
	if fn == nil {
		return fmt.Errorf("function: remove %s: %w", name, invoke.ErrNotFound)
	}
	h.changes.note(name)
	p := fn.current.Swap(nil)
	if p == nil {
		return nil
	}
	p.close()
	return p.wait(ctx)
}

// applyParallel bounds the deploys an Apply runs at once: each may start
// a process, and a gateway has few cores.
const applyParallel = 4

// Apply makes specs the host's whole set of functions: each is deployed
// (as Deploy: a version already running is left alone, a new one replaces
// it without dropping an invocation), and every function not among them
// is removed. Every spec is checked first: a wrong one, or a name twice,
// is refused, naming it, and nothing changes. A spec that then fails to
// deploy is PhaseFailed (or its previous version serves on) with the
// reason; the others are applied and the errors returned joined. It
// returns when every change is done, the removed functions' instances
// stopped (or ctx's end).
func (h *Host) Apply(ctx context.Context, specs []Spec) error {
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		r, err := s.Resolve()
		if err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("function: apply: %w %q: the name appears twice", ErrInvalidSpec, r.Name)
		}
		seen[r.Name] = true
	}
	h.apply.Lock()
	defer h.apply.Unlock()
	h.mu.RLock()
	closed := h.closed
	var gone []string
	for name := range h.functions {
		if !seen[name] {
			gone = append(gone, name)
		}
	}
	h.mu.RUnlock()
	if closed {
		return fmt.Errorf("function: apply: %w", ErrClosed)
	}
	errs := make([]error, len(specs)+len(gone))
	var wg sync.WaitGroup
	slots := make(chan struct{}, applyParallel)
	for i, s := range specs {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			errs[i] = h.Deploy(ctx, s)
		})
	}
	for i, name := range gone {
		wg.Go(func() {
			if err := h.Remove(ctx, name); !errors.Is(err, invoke.ErrNotFound) {
				errs[len(specs)+i] = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *Host) lookup(name string) (*function, error) {
	h.mu.RLock()
	fn, closed := h.functions[name], h.closed
	h.mu.RUnlock()
	if closed {
		return nil, fmt.Errorf("function %s: %w", name, ErrClosed)
	}
	if fn == nil {
		return nil, fmt.Errorf("function %s: %w", name, invoke.ErrNotFound)
	}
	return fn, nil
}

// submit queues req on the function's current version.
func (h *Host) submit(ctx context.Context, name string, req invoke.Request) (*pool, *job, error) {
	fn, err := h.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	seq := h.seq.Add(1)
	for {
		p := fn.current.Load()
		if p == nil {
			return nil, nil, fmt.Errorf("function %s: %w", name, invoke.ErrNotFound)
		}
		j, retry, err := p.submit(ctx, req, seq, h.opts.QueueWait)
		if retry {
			continue // a deploy replaced the version under us
		}
		return p, j, err
	}
}

// Invoke runs the function and waits for its response. Errors wrap
// invoke.ErrNotFound, ErrThrottled, ErrTimeout or ErrFunction (an
// *invoke.Error), or ctx's error.
func (h *Host) Invoke(ctx context.Context, name string, req invoke.Request) (invoke.Response, error) {
	p, j, err := h.submit(ctx, name, req)
	if err != nil {
		return invoke.Response{}, err
	}
	return p.await(ctx, j)
}

// AsyncResult is the outcome of an InvokeAsync.
type AsyncResult struct {
	ID       string
	Function string
	Response invoke.Response
	Err      error
	Finished time.Time
}

// InvokeAsync queues the invocation and returns its ID at once; a full
// queue is reported here (invoke.ErrThrottled). The result goes to
// Options.OnAsyncResult and to AsyncResult. The invocation keeps ctx's
// values but not its cancellation.
func (h *Host) InvokeAsync(ctx context.Context, name string, req invoke.Request) (string, error) {
	detached := context.WithoutCancel(ctx)
	p, j, err := h.submit(detached, name, req)
	if err != nil {
		return "", err
	}
	id := h.ids.id(j.seq)
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		resp, err := p.await(h.lifetime, j)
		h.report(AsyncResult{ID: id, Function: name, Response: resp, Err: err, Finished: time.Now()})
	}()
	return id, nil
}

func (h *Host) report(r AsyncResult) {
	h.resMu.Lock()
	h.results[r.ID] = r
	h.order = append(h.order, r.ID)
	if over := len(h.order) - h.opts.AsyncResults; over > 0 {
		for _, id := range h.order[:over] {
			delete(h.results, id)
		}
		h.order = slices.Clone(h.order[over:])
	}
	h.resMu.Unlock()
	if h.opts.OnAsyncResult != nil {
		h.opts.OnAsyncResult(r)
	}
}

// AsyncResult returns the result of an InvokeAsync, if it has finished and
// is still kept.
func (h *Host) AsyncResult(id string) (AsyncResult, bool) {
	h.resMu.Lock()
	defer h.resMu.Unlock()
	r, ok := h.results[id]
	return r, ok
}

// Logs returns a function's stored log records, newest first: its output
// lines, what its in-process handler logged, the host's records about it,
// and a REPORT record per out-of-process invocation (duration, max RSS).
func (h *Host) Logs(q logstore.Query) ([]logstore.Record, error) { return h.logs.Query(q) }

// Close stops taking invocations, lets queued and running ones finish, and
// waits for every instance and async invocation (or ctx). It is safe to call
// more than once.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var pools []*pool
	for _, fn := range h.functions {
		if p := fn.current.Swap(nil); p != nil {
			pools = append(pools, p)
		}
	}
	h.mu.Unlock()
	var errs []error
	for _, p := range pools {
		p.close()
	}
	for _, p := range pools {
		if err := p.wait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	h.stop()
	if err := drain.Wait(ctx, &h.bg, h.stop); err != nil {
		errs = append(errs, fmt.Errorf("function: close: async invocations and draining versions: %w", err))
	}
	h.launch.mem.close()
	errs = append(errs, h.changes.stop(ctx))
	errs = append(errs, h.logs.Close(ctx))
	if h.tempDir {
		errs = append(errs, os.RemoveAll(h.dataDir))
	}
	h.unlock()
	return errors.Join(errs...)
}

// unlock lets go of the data directory.
func (h *Host) unlock() {
	if h.lock != nil {
		h.lock.Close()
		h.lock = nil
	}
}

// baseEnv is what every function process inherits: the host's PATH, HOME,
// locale and time zone, not its secrets.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

func (h *Host) bootstrapDir() string { return filepath.Join(h.dataDir, "bootstrap") }

// nodeModules is where, under the bootstrap directory, the Node.js
// functions' modules from the host are (NODE_PATH).
const nodeModules = "node_modules"

// prepareDataDir makes the data directory and writes the bootstraps.
func (h *Host) prepareDataDir() error {
	h.dataDir = h.opts.DataDir
	if h.dataDir == "" {
		d, err := os.MkdirTemp("", "edgekit-functions-")
		if err != nil {
			return fmt.Errorf("function: data directory: %w", err)
		}
		h.dataDir, h.tempDir = d, true
		// Functions of their own uid pass through it to the bootstraps.
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("function: data directory: %w", err)
		}
	}
	dir := h.bootstrapDir()
	for name, content := range map[string]string{
		"bootstrap.js": bootstrap.Node, "bootstrap.py": bootstrap.Python,
		"native.js": bootstrap.NodeNative, "native.py": bootstrap.PythonNative,
		"edgekit_common.js": bootstrap.NodeCommon, "edgekit_bootstrap_common.py": bootstrap.PythonCommon,
		filepath.Join(nodeModules, "edgekit", "index.js"): bootstrap.NodeAPI, "edgekit.py": bootstrap.PythonAPI,
		filepath.Join(nodeModules, "linkedge-core-sdk", "index.js"): bootstrap.NodeLinkEdge, "lecoresdk.py": bootstrap.PythonLinkEdge,
		filepath.Join(nodeModules, "linkedge-thing-access-sdk", "index.js"): bootstrap.NodeThingAccess, "lethingaccesssdk.py": bootstrap.PythonThingAccess,
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			return fmt.Errorf("function: data directory: %w", err)
		}
		if err := safefile.Write(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("function: writing the %s bootstrap: %w", name, err)
		}
	}
	return nil
}
