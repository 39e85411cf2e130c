// Command gateway is the example gateway firmware: what a vendor copies and
// grows. It runs the local MQTT broker (Mosquitto, through edge/broker), an
// in-process bus for the gateway's own flows, a bridge between the two, a
// function host with the example functions (Go with aws-lambda-go,
// Node.js, Python), triggers that start them (a timer, a message rule) and
// the callers (MQTT v5 request/response, a local HTTP endpoint); with
// -upstream it also bridges to a cloud broker through an on-disk queue, so
// uplink data survives outages.
//
// Topics:
//
//	gateway/status      retained status the gateway publishes every 10 s,
//	                    with each function's invocation counts
//	gateway/#           everything under it goes up to the upstream broker
//	gateway/alarms      results of the telemetry rule (a message trigger)
//	devices/{id}/telemetry
//	                    device readings in; the rule runs
//	                    temperature-alarm-node on each
//	commands/#          MQTT clients send commands in; the gateway logs them
//	commands/echo       request/response: the payload comes back on the
//	                    request's response topic with its correlation data
//	replies/#           response topics: forwarded out to MQTT clients
//	functions/{name}/invoke
//	                    MQTT v5 request/response (trigger/mqttcall)
//
// A timer trigger runs temperature-alarm-python every 30 s with a fixed
// self-test reading. The HTTP endpoint (trigger/httpcall) listens on
// -api; its token is in <data>/api-token.
//
// The local broker takes anonymous clients on loopback for what is safe to
// let anyone do there: read gateway/# and the devices' notices, send
// readings (devices/+/telemetry) and commands (commands/#). Calling
// functions, device requests, the echo command and reading replies take
// the user "app", whose password is in <data>/mqtt-password; the gateway
// itself connects as "gateway" with a password drawn at each start.
//
// The data directory (-data) defaults to /var/lib/edgekit when run as root,
// else to edgekit in the user's state directory ($XDG_STATE_HOME, or
// ~/.local/state). It is made 0700 (0711 as root: Mosquitto, which drops
// root, must pass through it to its own directory), and refused when it is
// owned by another user or writable by others; the token and password
// files are adopted only when they are this user's and 0600.
//
// With -modbus tcp://host:port the gateway also reads a Modbus boiler
// (examples/modbus-sim simulates one) through device/modbus, with the
// thing model in boiler.tsl.json: reports on devices/boiler/properties,
// state on devices/boiler/state, and get/set requests on
// devices/boiler/get and devices/boiler/set (docs/TOPICS.md).
//
// Run it with `make gateway` and try, from another terminal:
//
//	mosquitto_sub -V 5 -t 'gateway/#' -v
//	mosquitto_pub -V 5 -t devices/boiler/telemetry -m '{"device":"boiler","temperature":91}'
//	mosquitto_rr  -V 5 -u app -P "$(cat <data>/mqtt-password)" \
//	              -t functions/temperature-alarm-python/invoke -e replies/me \
//	              -D PUBLISH correlation-data 1 -m '{"device":"boiler","temperature":91}'
//	curl -H "Authorization: Bearer $(cat <data>/api-token)" \
//	     -d '{"device":"boiler","temperature":91}' \
//	     http://127.0.0.1:8780/v1/functions/temperature-alarm-go/invoke
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/devicebus"
	"github.com/edgekit/edgekit/device/modbus"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/internal/safefile"
	"github.com/edgekit/edgekit/trigger"
	"github.com/edgekit/edgekit/trigger/httpcall"
	"github.com/edgekit/edgekit/trigger/message"
	"github.com/edgekit/edgekit/trigger/mqttcall"
	"github.com/edgekit/edgekit/trigger/timer"
)

type config struct {
	dataDir   string
	listen    string
	api       string
	upstream  string
	name      string
	status    time.Duration
	functions []string // directories holding function.json and the code
	triggers  []trigger.Config
	modbus    string        // a Modbus TCP endpoint with a boiler, or ""
	poll      time.Duration // how often the boiler is read
}

//go:embed boiler.tsl.json
var boilerTSL []byte

// defaultTriggers start the example functions: a timer and a message rule.
var defaultTriggers = []trigger.Config{
	{Name: "self-test", Type: timer.Type, Function: "temperature-alarm-python",
		Params: json.RawMessage(`{"every": "30s", "event": {"device": "self-test", "temperature": 20}}`)},
	{Name: "telemetry-alarm", Type: message.Type, Function: "temperature-alarm-node",
		Params: json.RawMessage(`{"filter": "devices/+/telemetry", "output": "gateway/alarms"}`)},
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dataDir, "data", defaultDataDir(), "data directory (broker config and persistence, queues, tokens)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:1883", "local MQTT listener")
	flag.StringVar(&cfg.api, "api", "127.0.0.1:8780", "local HTTP endpoint for function calls")
	flag.StringVar(&cfg.modbus, "modbus", "", "Modbus TCP endpoint of a boiler to read, e.g. tcp://127.0.0.1:5020 (go run ./examples/modbus-sim)")
	flag.DurationVar(&cfg.poll, "poll", time.Second, "how often the Modbus boiler is read")
	flag.StringVar(&cfg.upstream, "upstream", "", "optional upstream broker URL, e.g. mqtt://broker.example:1883")
	flag.StringVar(&cfg.name, "name", "gw1", "gateway name (MQTT client ids, upstream topic prefix)")
	flag.DurationVar(&cfg.status, "status-every", 10*time.Second, "status publish interval")
	functions := flag.String("functions", "examples/function-go,examples/function-node,examples/function-python", "comma-separated function directories (each with a function.json) to deploy")
	flag.Parse()
	if *functions != "" {
		cfg.functions = strings.Split(*functions, ",")
	}
	cfg.triggers = defaultTriggers

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, cfg, log, os.Stdout); err != nil {
		log.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

// run starts the gateway and blocks until ctx ends, then shuts down.
func run(ctx context.Context, cfg config, log *slog.Logger, out io.Writer) (err error) {
	// Everything started is stopped on the way out, in reverse order.
	var closers []func(context.Context) error
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i](sctx))
		}
	}()

	if err := prepareDataDir(cfg.dataDir); err != nil {
		return err
	}
	appPassword, err := secret(filepath.Join(cfg.dataDir, "mqtt-password"))
	if err != nil {
		return err
	}
	gatewayPassword := httpcall.NewToken() // the broker's configuration is written anew at each start
	brk, err := broker.New(&broker.Options{
		DataDir:           filepath.Join(cfg.dataDir, "broker"),
		Listeners:         []broker.Listener{{Address: cfg.listen}},
		Users:             []broker.User{{Name: "gateway", Password: gatewayPassword}, {Name: "app", Password: appPassword}},
		AnonymousLoopback: true,
		ACL:               lanACL,
		Logger:            log.With("part", "mosquitto"),
	})
	if err != nil {
		return err
	}
	if err := brk.Start(ctx); err != nil {
		return err
	}
	closers = append(closers, brk.Close)

	local := membus.New(&membus.Options{Logger: log})
	closers = append(closers, local.Close)

	lan, err := mqttbus.New(&mqttbus.Options{
		Brokers:  []string{brk.URL().String()},
		Username: "gateway",
		Password: gatewayPassword,
		ClientID: cfg.name + "-lan",
		QueueDir: filepath.Join(cfg.dataDir, "lan-queue"),
		Logger:   log,
	})
	if err != nil {
		return err
	}
	closers = append(closers, lan.Close)
	if err := lan.AwaitConnection(ctx); err != nil {
		return err
	}
	lanBridge, err := bridge.New(ctx, local, lan, &bridge.Options{
		Name: cfg.name + "-lan",
		Out: []bridge.Route{{Filter: "gateway/#", QoS: bus.AtLeastOnce}, {Filter: "replies/#", QoS: bus.AtLeastOnce},
			{Filter: "devices/+/properties", QoS: bus.AtLeastOnce}, {Filter: "devices/+/state", QoS: bus.AtLeastOnce},
			{Filter: "devices/+/events/#", QoS: bus.AtLeastOnce}},
		In: []bridge.Route{{Filter: "commands/#", QoS: bus.AtLeastOnce}, {Filter: "functions/#", QoS: bus.AtLeastOnce},
			{Filter: "devices/#", QoS: bus.AtLeastOnce}},
		Logger: log,
	})
	if err != nil {
		return err
	}
	closers = append(closers, lanBridge.Close)

	if cfg.upstream != "" {
		up, err := mqttbus.New(&mqttbus.Options{
			Brokers:  []string{cfg.upstream},
			ClientID: cfg.name + "-uplink",
			QueueDir: filepath.Join(cfg.dataDir, "uplink-queue"),
			Logger:   log,
		})
		if err != nil {
			return err
		}
		closers = append(closers, up.Close)
		// No AwaitConnection: the gateway works offline and the queue
		// holds uplink data until the link is up.
		upBridge, err := bridge.New(ctx, local, up, &bridge.Options{
			Name:   cfg.name + "-uplink",
			Out:    []bridge.Route{{Filter: "gateway/#", QoS: bus.AtLeastOnce, AddPrefix: "gateways/" + cfg.name + "/"}},
			Logger: log,
		})
		if err != nil {
			return err
		}
		closers = append(closers, upBridge.Close)
	}

	// The HTTP endpoint's address and token go to every out-of-process
	// function, so functions can call functions.
	apiLn, err := net.Listen("tcp", cfg.api)
	if err != nil {
		return fmt.Errorf("HTTP endpoint: %w", err)
	}
	token, err := secret(filepath.Join(cfg.dataDir, "api-token"))
	if err != nil {
		apiLn.Close()
		return err
	}
	// Each function calls the endpoint with a token of its own, never the
	// operator's.
	callers := httpcall.NewTokens()
	host, err := function.New(&function.Options{DataDir: filepath.Join(cfg.dataDir, "functions"), Logger: log,
		Env: map[string]string{httpcall.EnvAddr: "http://" + apiLn.Addr().String()},
		EnvFor: func(s function.Spec) map[string]string {
			return map[string]string{httpcall.EnvToken: callers.Issue(s.Name)}
		}})
	if err != nil {
		apiLn.Close()
		return err
	}
	closers = append(closers, host.Close)
	api, err := httpcall.Serve(apiLn, host, &httpcall.Options{Token: token, Callers: callers, Logger: log})
	if err != nil {
		apiLn.Close()
		return err
	}
	closers = append(closers, api.Close)
	for _, dir := range cfg.functions {
		spec, err := deployDir(ctx, host, dir)
		if err != nil {
			// A function that cannot run (say, its runtime is not
			// installed) does not stop the gateway.
			log.Warn("function not deployed", "dir", dir, "err", err)
			continue
		}
		fmt.Fprintf(out, "function %s %s (%s) deployed from %s\n", spec.Name, spec.Version, spec.Runtime, dir)
	}
	calls, err := mqttcall.Serve(ctx, local, host, &mqttcall.Options{Logger: log})
	if err != nil {
		return err
	}
	closers = append(closers, calls.Close)

	sched, err := timer.NewScheduler(&timer.Options{StateDir: filepath.Join(cfg.dataDir, "triggers"), Logger: log})
	if err != nil {
		return err
	}
	closers = append(closers, sched.Close)
	triggers := trigger.NewSet(host, map[string]trigger.Factory{
		timer.Type:   sched.Factory(),
		message.Type: message.Factory(local, &message.Options{Logger: log}),
	}, &trigger.Options{Logger: log, Known: func(fn string) bool { _, err := host.Status(fn); return err == nil }})
	closers = append(closers, triggers.Close)
	for _, c := range cfg.triggers {
		if err := triggers.Put(ctx, c); err != nil {
			// A trigger for a function that did not deploy is left out.
			log.Warn("trigger not started", "trigger", c.Name, "err", err)
			continue
		}
		fmt.Fprintf(out, "trigger %s (%s) runs %s\n", c.Name, c.Type, c.Function)
	}

	if _, err := local.Subscribe(ctx, "commands/#", func(ctx context.Context, m *bus.Message) {
		if m.Topic == "commands/echo" {
			echo(ctx, local, log, m)
			return
		}
		log.Info("command received", "topic", m.Topic, "bytes", len(m.Payload)) // payloads are not logged: they may carry what a log should not
	}, nil); err != nil {
		return err
	}

	devices := device.NewManager(&device.ManagerOptions{Publish: devicebus.Publisher(local, ""), Logger: log})
	closers = append(closers, devices.Close)
	deviceAPI, err := devicebus.Serve(ctx, local, devices, &devicebus.Options{Logger: log})
	if err != nil {
		return err
	}
	closers = append(closers, deviceAPI.Close)
	if cfg.modbus != "" {
		if err := attachBoiler(ctx, devices, cfg.modbus, cfg.poll); err != nil {
			return err
		}
		fmt.Fprintf(out, "device boiler (modbus %s) attached\n", cfg.modbus)
	}

	fmt.Fprintf(out, "edgekit gateway %q running; local MQTT broker on %s\n", cfg.name, brk.URL())
	h, p, _ := net.SplitHostPort(brk.Addrs()[0])
	fmt.Fprintf(out, "try:  mosquitto_sub -V 5 -h %s -p %s -t 'gateway/#' -v\n", h, p)
	fmt.Fprintf(out, "      mosquitto_rr  -V 5 -h %s -p %s -u app -P \"$(cat %s)\" -t commands/echo -e replies/me -m ping\n", h, p,
		filepath.Join(cfg.dataDir, "mqtt-password"))
	fmt.Fprintf(out, "      curl -H \"Authorization: Bearer $(cat %s)\" -d '{\"device\":\"boiler\",\"temperature\":91}' %s/v1/functions/temperature-alarm-go/invoke\n",
		filepath.Join(cfg.dataDir, "api-token"), api.URL())

	started := time.Now()
	tick := time.NewTicker(cfg.status)
	defer tick.Stop()
	for {
		invocations := map[string]uint64{}
		for _, st := range host.List() {
			invocations[st.Name] = st.Stats.Invocations
		}
		status, _ := json.Marshal(map[string]any{
			"gateway":        cfg.name,
			"uptime_seconds": int(time.Since(started).Seconds()),
			"broker":         brk.Status().State,
			"uplink":         cfg.upstream != "",
			"invocations":    invocations,
		})
		if err := local.Publish(ctx, &bus.Message{Topic: "gateway/status", Payload: status, QoS: bus.AtLeastOnce, Retain: true, ContentType: "application/json"}); err != nil && ctx.Err() == nil {
			log.Warn("publishing status", "err", err)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(out, "shutting down")
			return nil
		case <-tick.C:
		}
	}
}

// deployDir deploys the function whose function.json is in dir.
func deployDir(ctx context.Context, host *function.Host, dir string) (function.Spec, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return function.Spec{}, err
	}
	b, err := os.ReadFile(filepath.Join(abs, "function.json"))
	if err != nil {
		return function.Spec{}, err
	}
	var spec function.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return function.Spec{}, fmt.Errorf("%s/function.json: %w", dir, err)
	}
	spec.CodeDir = abs
	return spec, host.Deploy(ctx, spec)
}

// attachBoiler reads the boiler of examples/modbus-sim at endpoint: the
// register map goes with the thing model in boiler.tsl.json.
func attachBoiler(ctx context.Context, devices *device.Manager, endpoint string, every time.Duration) error {
	model, err := device.ParseTSL(boilerTSL)
	if err != nil {
		return err
	}
	if err := devices.AddDriver(ctx, "modbus", modbus.New(), nil); err != nil {
		return err
	}
	cfg, _ := json.Marshal(modbus.Config{Endpoint: endpoint, Unit: 1, Timeout: "1s", Properties: map[string]modbus.Register{
		"temperature": {Table: "input", Address: 0, Type: "int16", Scale: 0.1},
		"setpoint":    {Table: "holding", Address: 10},
		"burner":      {Table: "coil", Address: 0},
	}})
	poll := []device.PollGroup{{Properties: []string{"temperature", "setpoint", "burner"}, Every: every}}
	return devices.Attach(ctx, "modbus", device.Device{Name: "boiler", Model: model, Config: cfg}, poll)
}

// lanACL is what each client of the local broker may do; anonymous
// clients (loopback only) may read the gateway's status and the devices'
// notices and send readings and commands, nothing more.
var lanACL = []broker.ACLRule{
	{Access: broker.Read, Topic: "gateway/#"},
	{Access: broker.Read, Topic: "devices/+/properties"},
	{Access: broker.Read, Topic: "devices/+/state"},
	{Access: broker.Read, Topic: "devices/+/events/#"},
	{Access: broker.Write, Topic: "devices/+/telemetry"},
	{Access: broker.Write, Topic: "commands/#"},
	{User: "gateway", Access: broker.ReadWrite, Topic: "#"},
	{User: "app", Access: broker.Read, Topic: "gateway/#"},
	{User: "app", Access: broker.ReadWrite, Topic: "functions/#"},
	{User: "app", Access: broker.ReadWrite, Topic: "devices/#"},
	{User: "app", Access: broker.ReadWrite, Topic: "commands/#"},
	{User: "app", Access: broker.ReadWrite, Topic: "replies/#"},
}

// defaultDataDir is /var/lib/edgekit for root, else edgekit in the user's
// state directory.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/edgekit"
	}
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "edgekit")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "edgekit")
	}
	return filepath.Join(os.TempDir(), "edgekit-"+strconv.Itoa(os.Getuid()))
}

// prepareDataDir makes the data directory, or checks the one there: it
// must be ours and writable by no one else. As root it is 0711: Mosquitto
// drops root and must pass through it to its own directory (it cannot list
// it).
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := safefile.CheckPrivateDir(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	perm := os.FileMode(0o700)
	if os.Geteuid() == 0 {
		perm = 0o711
	}
	return os.Chmod(dir, perm)
}

// secret reads a secret kept at path (the HTTP endpoint's token, the app
// user's MQTT password), or makes one and keeps it there, 0600. One that
// is not ours and 0600 is refused: whoever could write it knows it.
func secret(path string) (string, error) {
	b, err := safefile.ReadOwn(path, 1024)
	switch {
	case err == nil && len(bytes.TrimSpace(b)) >= 16:
		return string(bytes.TrimSpace(b)), nil
	case err == nil:
		return "", fmt.Errorf("%s holds no secret of 16 characters or more: remove it to have a new one made", path)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("not adopting %s: %w", path, err)
	}
	token := httpcall.NewToken()
	if err := safefile.Write(path, []byte(token+"\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// echo answers a request on its response topic.
func echo(ctx context.Context, b bus.Bus, log *slog.Logger, req *bus.Message) {
	if req.ResponseTopic == "" {
		log.Warn("echo request without a response topic", "topic", req.Topic)
		return
	}
	err := b.Publish(ctx, &bus.Message{
		Topic: req.ResponseTopic, Payload: req.Payload, QoS: bus.AtLeastOnce,
		CorrelationData: req.CorrelationData, ContentType: req.ContentType,
	})
	if err != nil {
		log.Warn("echo reply", "err", err)
	}
}
