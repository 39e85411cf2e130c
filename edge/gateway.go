package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/edge/api"
	"github.com/edgekit/edgekit/edge/app"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fncall"
	"github.com/edgekit/edgekit/edge/fndriver"
	"github.com/edgekit/edgekit/edge/metrics"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/edge/state"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/function/codepkg"
	functionmetrics "github.com/edgekit/edgekit/function/metrics"
	"github.com/edgekit/edgekit/internal/safefile"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/mqttcall"
	"github.com/edgekit/edgekit/trigger/timer"
)

// ErrClosed is returned by Run after Close, and by Close before Run.
var ErrClosed = errors.New("gateway closed")

// Gateway is a gateway's parts composed: New checks the options, Run
// starts every part in order, serves until its context ends or Close, and
// stops them in reverse. Its methods are safe for concurrent use; the
// accessors return nil until Ready is closed.
type Gateway struct {
	opts Options
	log  *slog.Logger

	ready    chan struct{} // closed once every part has started
	done     chan struct{} // closed when Run has returned
	stopOnce sync.Once
	stop     chan struct{} // closed by Close

	mu      sync.Mutex
	running bool
	parts   parts
}

// parts are what Run starts, in that order.
type parts struct {
	bus        bus.Bus
	broker     *broker.Broker
	lan        *mqttbus.Client
	upstream   *mqttbus.Client
	bridges    map[string]*bridge.Bridge
	state      *state.Store
	packages   *codepkg.Store
	functions  *function.Host
	calls      *fncall.Server // what functions ask of the gateway
	fndrivers  *fndriver.Set  // the drivers functions serve
	scheduler  *timer.Scheduler
	triggers   *trigger.Set
	devices    *device.Manager
	containers *container.Manager
	reconciler *reconcile.Reconciler
	api        *api.API
	apiURL     string
}

// New checks opts and returns a gateway to Run.
func New(opts *Options) (*Gateway, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	switch {
	case o.DataDir == "":
		return nil, errors.New("edge: Options.DataDir is required")
	case !instanceRE.MatchString(o.Instance):
		return nil, fmt.Errorf("edge: Options.Instance %q: want 1-64 letters, digits, '.', '_' or '-'", o.Instance)
	case o.Upstream != nil && len(o.Upstream.Brokers) == 0:
		return nil, errors.New("edge: Options.Upstream.Brokers is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.DeploymentFile == "" {
		o.DeploymentFile = filepath.Join(o.DataDir, "deployment.json")
	}
	if o.API == nil {
		o.API = &APIOptions{}
	}
	api := *o.API
	if api.Address == "" {
		api.Address = "127.0.0.1:8780"
	}
	o.API = &api
	o.Builtins = slices.Clone(o.Builtins)
	o.BuiltinTriggers = slices.Clone(o.BuiltinTriggers)
	o.Drivers = slices.Clone(o.Drivers)
	o.TriggerTypes = maps.Clone(o.TriggerTypes)
	return &Gateway{opts: o, log: o.Logger, ready: make(chan struct{}), done: make(chan struct{}), stop: make(chan struct{})}, nil
}

// Ready is closed once every part has started.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Run starts the gateway's parts in order — the in-process bus, the local
// broker and its bridge, the upstream connection and its bridge, the state
// store, the package store, the function host, the triggers, the device
// manager, the container manager, the reconciler, the local API — and
// serves until ctx ends or Close is called; then it stops them in reverse
// (bounded by Options.StopTimeout) and returns. A part that fails to start
// stops those started before it, and Run returns why.
func (g *Gateway) Run(ctx context.Context) (err error) {
	g.mu.Lock()
	if g.running {
		g.mu.Unlock()
		return errors.New("edge: Run called twice")
	}
	g.running = true
	g.mu.Unlock()
	defer close(g.done)
	select {
	case <-g.stop:
		return ErrClosed
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	var stack stopper
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), g.opts.StopTimeout)
		defer cancel()
		err = errors.Join(err, stack.stopAll(sctx))
	}()
	var wg sync.WaitGroup // the long-running loops; stopped before the parts
	stack.push("the gateway's loops", func(context.Context) error {
		cancel()
		wg.Wait()
		return nil
	})
	if err := g.start(ctx, &stack, &wg); err != nil {
		return err
	}
	close(g.ready)
	g.log.Info("edge: gateway running", "instance", g.opts.Instance, "api", g.parts.apiURL)
	<-ctx.Done()
	g.log.Info("edge: gateway stopping", "instance", g.opts.Instance)
	return nil
}

// Close stops a running gateway and waits until Run has stopped its parts,
// or ctx ends. It is safe to call twice, and before Run (Run then returns
// ErrClosed at once).
func (g *Gateway) Close(ctx context.Context) error {
	g.stopOnce.Do(func() { close(g.stop) })
	g.mu.Lock()
	running := g.running
	g.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-g.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("edge: close: the parts are still stopping: %w", ctx.Err())
	}
}

// copyOf is *p, or the zero value for nil: a part's options, copied.
func copyOf[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

// stopper stops what was started, last first.
type stopper struct {
	names []string
	stops []func(context.Context) error
}

func (s *stopper) push(name string, stop func(context.Context) error) {
	s.names = append(s.names, name)
	s.stops = append(s.stops, stop)
}

func (s *stopper) stopAll(ctx context.Context) error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i](ctx); err != nil {
			errs = append(errs, fmt.Errorf("edge: stopping %s: %w", s.names[i], err))
		}
	}
	s.names, s.stops = nil, nil
	return errors.Join(errs...)
}

// start starts every part, pushing each one's stop.
func (g *Gateway) start(ctx context.Context, stack *stopper, loops *sync.WaitGroup) error {
	o := &g.opts
	p := &g.parts
	if err := PrepareDataDir(o.DataDir); err != nil {
		return err
	}
	// The in-process bus.
	p.bus = o.Bus
	if p.bus == nil {
		p.bus = membus.New(&membus.Options{Logger: o.Logger})
		stack.push("the in-process bus", p.bus.Close)
	}
	// The local broker and its bridge.
	if o.Broker != nil {
		if err := g.startBroker(ctx, stack); err != nil {
			return err
		}
	}
	// The upstream connection, its queue and its bridge.
	if o.Upstream != nil {
		if err := g.startUpstream(ctx, stack); err != nil {
			return err
		}
	}
	// The state store and the package store.
	var err error
	p.state = o.State
	if p.state == nil {
		if p.state, err = state.Open(filepath.Join(o.DataDir, "state.db"), &state.Options{Logger: o.Logger}); err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		stack.push("the state store", p.state.Close)
	}
	if p.packages, err = codepkg.Open(filepath.Join(o.DataDir, "packages"), o.Packages); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	// The function host, its callers and the triggers.
	apiLn, apiURL, err := g.listenAPI()
	if err != nil {
		return err
	}
	if apiLn != nil {
		stack.push("the local API's listener", func(context.Context) error { _ = apiLn.Close(); return nil })
	}
	callers := httpcall.NewTokens()
	if err := g.startFunctions(ctx, stack, apiURL, callers); err != nil {
		return err
	}
	if err := g.startTriggers(ctx, stack); err != nil {
		return err
	}
	// The devices.
	if err := g.startDevices(ctx, stack); err != nil {
		return err
	}
	// The containers.
	if o.ContainerRuntime != nil {
		p.containers = container.NewManager(o.ContainerRuntime, o.Containers)
		stack.push("the container manager", p.containers.Close)
		if _, err := o.ContainerRuntime.Info(ctx); err != nil {
			g.log.Warn("edge: the container runtime does not answer; container apps wait for it, everything else runs", "err", err)
		}
	}
	// The reconciler and its sources.
	if err := g.startReconciler(ctx, stack, loops); err != nil {
		return err
	}
	// The parts' metrics.
	if o.Metrics != nil {
		if err := functionmetrics.Register(o.Metrics, p.functions); err != nil {
			return fmt.Errorf("edge: metrics: %w", err)
		}
		if err := metrics.Register(o.Metrics, metrics.Parts{Bridges: p.bridges, Broker: p.broker, Triggers: p.triggers,
			Devices: p.devices, Containers: p.containers, Reconciler: p.reconciler}); err != nil {
			return fmt.Errorf("edge: metrics: %w", err)
		}
	}
	// The local API.
	return g.startAPI(ctx, stack, apiLn, apiURL, callers)
}

func (p *parts) addBridge(name string, br *bridge.Bridge) {
	if p.bridges == nil {
		p.bridges = map[string]*bridge.Bridge{}
	}
	p.bridges[name] = br
}

// PrepareDataDir makes the data directory, or checks the one there: the
// gateway's own and writable by no one else, its parents searchable. As
// root it is 0711, so that Mosquitto (which drops root) and functions of
// their own uids pass through it to their own directories, without
// listing it. Run calls it; firmware that keeps files there before Run (a
// password for Options.Broker, say) calls it first.
func PrepareDataDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("edge: data directory: %w", err)
	}
	if err := safefile.CheckPrivateDir(dir, 0o700); err != nil {
		return fmt.Errorf("edge: data directory: %w", err)
	}
	perm := os.FileMode(0o700)
	if os.Geteuid() == 0 {
		perm = 0o711
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("edge: data directory: %w", err)
	}
	return nil
}

// Secret reads a secret kept at path (a token, a password), or makes one
// and keeps it there, 0600. One that is not this user's and 0600 is
// refused: whoever could write it knows it.
func Secret(path string) (string, error) {
	s, err := safefile.Secret(path)
	if err != nil {
		return "", fmt.Errorf("edge: %w", err)
	}
	return s, nil
}

// gatewayUser is the local broker user the gateway connects as.
const gatewayUser = "edgekit-gateway"

func (g *Gateway) startBroker(ctx context.Context, stack *stopper) error {
	o := &g.opts
	bo := *o.Broker
	if bo.DataDir == "" {
		bo.DataDir = filepath.Join(o.DataDir, "broker")
	}
	if bo.Logger == nil {
		bo.Logger = o.Logger.With("part", "mosquitto")
	}
	password := httpcall.NewToken() // the broker's configuration is written anew at each start
	bo.Users = append(slices.Clone(bo.Users), broker.User{Name: gatewayUser, Password: password})
	if bo.ACL != nil {
		bo.ACL = append(slices.Clone(bo.ACL), broker.ACLRule{User: gatewayUser, Access: broker.ReadWrite, Topic: "#"})
	}
	brk, err := broker.New(&bo)
	if err != nil {
		return fmt.Errorf("edge: local broker: %w", err)
	}
	if err := brk.Start(ctx); err != nil {
		return fmt.Errorf("edge: local broker: %w", err)
	}
	g.parts.broker = brk
	stack.push("the local broker", brk.Close)
	lan, err := mqttbus.New(&mqttbus.Options{
		Brokers: []string{brk.URL().String()}, Username: gatewayUser, Password: password,
		ClientID: o.Instance + "-lan", QueueDir: filepath.Join(o.DataDir, "lan-queue"), Logger: o.Logger,
	})
	if err != nil {
		return fmt.Errorf("edge: local broker connection: %w", err)
	}
	g.parts.lan = lan
	stack.push("the local broker connection", lan.Close)
	if err := lan.AwaitConnection(ctx); err != nil {
		return fmt.Errorf("edge: local broker connection: %w", err)
	}
	routes := o.LocalRoutes
	if routes == nil {
		routes = DefaultLocalRoutes()
	}
	br, err := bridge.New(ctx, g.parts.bus, lan, &bridge.Options{Name: o.Instance + "-lan", Out: routes.Out, In: routes.In, Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("edge: local bridge: %w", err)
	}
	g.parts.addBridge("lan", br)
	stack.push("the local bridge", br.Close)
	return nil
}

// presence is the document on the presence topic.
func presence(instance string, online bool) []byte {
	b, _ := json.Marshal(app.Presence{Instance: instance, Online: online, Time: time.Now().UTC()})
	return b
}

func (g *Gateway) startUpstream(ctx context.Context, stack *stopper) error {
	o := &g.opts
	uo := *o.Upstream
	if uo.ClientID == "" {
		uo.ClientID = o.Instance
	}
	if uo.QueueDir == "" {
		uo.QueueDir = filepath.Join(o.DataDir, "uplink-queue")
	}
	if uo.Logger == nil {
		uo.Logger = o.Logger
	}
	topic := PresenceTopic(o.Instance)
	if uo.Will == nil {
		uo.Will = &bus.Message{Topic: topic, Payload: presence(o.Instance, false), QoS: bus.AtLeastOnce, Retain: true}
	}
	var up *mqttbus.Client
	announce := func() {
		// After a lost link the broker has published the Will: say
		// online again at each connection.
		err := up.Publish(context.Background(), &bus.Message{Topic: topic, Payload: presence(o.Instance, true), QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"})
		if err != nil {
			g.log.Warn("edge: publishing presence", "err", err)
		}
	}
	given := uo.OnConnect
	uo.OnConnect = func() {
		announce()
		if given != nil {
			given()
		}
	}
	var err error
	if up, err = mqttbus.New(&uo); err != nil {
		return fmt.Errorf("edge: upstream broker: %w", err)
	}
	g.parts.upstream = up
	stack.push("the upstream connection", func(ctx context.Context) error {
		// A clean stop says offline (the Will is only for a lost link).
		_ = up.Publish(ctx, &bus.Message{Topic: topic, Payload: presence(o.Instance, false), QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"})
		return up.Close(ctx)
	})
	// No wait for the connection: the gateway works offline, and the
	// queue holds what goes up until the link is there.
	routes := o.UpstreamRoutes
	if routes == nil {
		routes = DefaultUpstreamRoutes(o.Instance)
	}
	br, err := bridge.New(ctx, g.parts.bus, up, &bridge.Options{Name: o.Instance + "-uplink", Out: routes.Out, In: routes.In, Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("edge: upstream bridge: %w", err)
	}
	g.parts.addBridge("uplink", br)
	stack.push("the upstream bridge", br.Close)
	return nil
}

// listenAPI opens the local API's listener first, so that the function
// host can hand its address to functions.
func (g *Gateway) listenAPI() (net.Listener, string, error) {
	addr := g.opts.API.Address
	if addr == "-" {
		return nil, "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("edge: local API: %w", err)
	}
	return ln, "http://" + ln.Addr().String(), nil
}

func (g *Gateway) startFunctions(ctx context.Context, stack *stopper, apiURL string, callers *httpcall.Tokens) error {
	o := &g.opts
	fo := copyOf(o.Functions)
	if fo.DataDir == "" {
		fo.DataDir = filepath.Join(o.DataDir, "functions")
	}
	if fo.Logger == nil {
		fo.Logger = o.Logger
	}
	if apiURL != "" {
		fo.Env = maps.Clone(fo.Env)
		if fo.Env == nil {
			fo.Env = map[string]string{}
		}
		fo.Env[httpcall.EnvAddr] = apiURL
		given := fo.EnvFor
		fo.EnvFor = func(s function.Spec) map[string]string {
			env := map[string]string{}
			if given != nil {
				maps.Copy(env, given(s))
			}
			env[httpcall.EnvToken] = callers.Issue(s.Name)
			return env
		}
	}
	if fo.Calls == nil {
		// The server needs the host, which needs the handler: no
		// instance starts before the server is set below.
		fo.Calls = func(ctx context.Context, c *function.Call) ([]byte, error) { return g.parts.calls.Serve(ctx, c) }
	}
	host, err := function.New(&fo)
	if err != nil {
		return fmt.Errorf("edge: function host: %w", err)
	}
	g.parts.functions = host
	g.parts.fndrivers = fndriver.NewSet(host, o.Logger)
	g.parts.calls = fncall.New(g.parts.bus, host, &fncall.Options{Logger: o.Logger, Drivers: g.parts.fndrivers.Serve})
	stack.push("the function host", host.Close)
	calls, err := mqttcall.Serve(ctx, g.parts.bus, host, &mqttcall.Options{Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("edge: MQTT function calls: %w", err)
	}
	stack.push("the MQTT function calls", calls.Close)
	return nil
}

func (g *Gateway) startTriggers(ctx context.Context, stack *stopper) error {
	o := &g.opts
	to := copyOf(o.Timers)
	if to.StateDir == "" {
		to.StateDir = filepath.Join(o.DataDir, "triggers")
	}
	if to.Logger == nil {
		to.Logger = o.Logger
	}
	sched, err := timer.NewScheduler(&to)
	if err != nil {
		return fmt.Errorf("edge: timers: %w", err)
	}
	g.parts.scheduler = sched
	stack.push("the timers", sched.Close)
	mo := copyOf(o.Messages)
	if mo.Logger == nil {
		mo.Logger = o.Logger
	}
	types := map[string]trigger.Factory{timer.Type: sched.Factory(), message.Type: message.Factory(g.parts.bus, &mo)}
	maps.Copy(types, o.TriggerTypes)
	g.parts.triggers = trigger.NewSet(g.parts.functions, types, &trigger.Options{Logger: o.Logger})
	stack.push("the triggers", g.parts.triggers.Close)
	return nil
}

func (g *Gateway) startDevices(ctx context.Context, stack *stopper) error {
	o := &g.opts
	do := copyOf(o.Devices)
	if do.Publish == nil {
		do.Publish = devicebus.Publisher(g.parts.bus, "")
	}
	if do.Logger == nil {
		do.Logger = o.Logger
	}
	g.parts.devices = device.NewManager(&do)
	g.parts.calls.SetDevices(g.parts.devices)
	stack.push("the device manager", g.parts.devices.Close)
	srv, err := devicebus.Serve(ctx, g.parts.bus, g.parts.devices, &devicebus.Options{Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("edge: device requests: %w", err)
	}
	stack.push("the device requests", srv.Close)
	for _, d := range o.Drivers {
		if err := g.parts.devices.AddDriver(ctx, d.Name, d.Driver, d.Config); err != nil {
			return fmt.Errorf("edge: %w", err)
		}
	}
	g.attachRegistered(ctx)
	return nil
}

func (g *Gateway) startReconciler(ctx context.Context, stack *stopper, loops *sync.WaitGroup) error {
	o := &g.opts
	ro := reconcile.Options{
		Instance: o.Instance, Functions: withBuiltins{g.parts.functions, o.Builtins},
		Triggers: withBuiltinTriggers{g.parts.triggers, o.BuiltinTriggers},
		Packages: g.parts.packages, State: g.parts.state, Dir: filepath.Join(o.DataDir, "reconcile"),
		Probation: o.Probation, HostPaths: o.HostPaths, OnStep: o.OnDeployStep, Logger: o.Logger,
		Drivers: newDriverApps(g.parts.devices, g.parts.fndrivers),
	}
	if g.parts.containers != nil {
		ro.Containers = g.parts.containers
	}
	statuses := newLatest[app.Status]()
	ro.OnStatus = statuses.put
	rec, err := reconcile.New(&ro)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	g.parts.reconciler = rec
	sub, err := rec.Subscribe(ctx, g.parts.bus, DesiredTopic(o.Instance))
	if err != nil {
		return fmt.Errorf("edge: desired deployments: %w", err)
	}
	stack.push("the desired deployments' subscription", sub.Unsubscribe)
	logs, err := g.serveLogs(ctx)
	if err != nil {
		return fmt.Errorf("edge: logs requests: %w", err)
	}
	stack.push("the logs requests' server", logs.Close)
	run := func(f func()) {
		loops.Add(1)
		go func() {
			defer loops.Done()
			f()
		}()
	}
	run(func() {
		if err := rec.Run(ctx); err != nil {
			g.log.Error("edge: the reconciler stopped", "err", err)
		}
	})
	if o.DeploymentFile != "-" {
		run(func() { _ = rec.WatchFile(ctx, o.DeploymentFile, time.Second) })
	}
	// The status goes out as it changes, the newest one only when they
	// come faster than the bus takes them, and again after a jittered
	// StatusInterval without a change.
	interval := o.StatusInterval
	if interval == 0 {
		interval = 5 * time.Minute
	}
	run(func() {
		for {
			var beat time.Duration
			if interval > 0 {
				beat = interval*4/5 + rand.N(interval*2/5+1)
			}
			st, _, ok := statuses.takeWithin(ctx, beat)
			if !ok {
				if ctx.Err() != nil {
					return
				}
				continue // no status yet
			}
			b, _ := json.Marshal(st)
			if err := g.parts.bus.Publish(ctx, &bus.Message{Topic: StatusTopic(o.Instance), Payload: b, QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"}); err != nil && ctx.Err() == nil {
				g.log.Warn("edge: publishing the deployment status", "err", err)
			}
		}
	})
	return nil
}

func (g *Gateway) startAPI(ctx context.Context, stack *stopper, ln net.Listener, url string, callers *httpcall.Tokens) error {
	o := &g.opts
	if ln == nil && o.API.Socket == "" {
		return nil
	}
	token := o.API.Token
	if token == "" {
		var err error
		if token, err = Secret(filepath.Join(o.DataDir, "api-token")); err != nil {
			return err
		}
	}
	ao := api.Options{
		Token: token, Callers: callers, Functions: g.parts.functions, Deployments: g.parts.reconciler, State: g.parts.state,
		Devices: g.parts.devices, Containers: g.parts.containers, Ready: g.readiness, Logger: o.Logger,
		Calls: g.parts.calls.Serve,
	}
	if o.Functions != nil && o.Functions.Calls != nil {
		ao.Calls = o.Functions.Calls // the vendor's own, as the host has it
	}
	if o.Metrics != nil { // a nil *Registry is not a nil Gatherer
		ao.Metrics = o.Metrics
	}
	a, err := api.New(&ao)
	if err != nil {
		return fmt.Errorf("edge: local API: %w", err)
	}
	g.parts.api, g.parts.apiURL = a, url
	stack.push("the local API's calls", a.Close)
	if ln != nil {
		serveHTTP(stack, "the local API", a, ln)
	}
	if o.API.Socket != "" {
		_ = os.Remove(o.API.Socket)
		uln, err := net.Listen("unix", o.API.Socket)
		if err != nil {
			return fmt.Errorf("edge: local API socket: %w", err)
		}
		if err := os.Chmod(o.API.Socket, 0o600); err != nil {
			uln.Close()
			return fmt.Errorf("edge: local API socket: %w", err)
		}
		serveHTTP(stack, "the local API socket", a, uln)
	}
	return nil
}

// serveHTTP serves h on ln with the endpoint's timeouts, until the stack
// stops it.
func serveHTTP(stack *stopper, name string, h http.Handler, ln net.Listener) {
	srv := httpcall.NewHTTPServer(h, 0)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	stack.push(name, func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close()
		}
		<-served
		return err
	})
}

// readiness says whether every part is up: started, and the local broker
// running.
func (g *Gateway) readiness() error {
	select {
	case <-g.ready:
	default:
		return errors.New("starting")
	}
	if b := g.parts.broker; b != nil && b.Status().State != broker.StateRunning {
		return fmt.Errorf("the local broker is %s", b.Status().State)
	}
	return nil
}
