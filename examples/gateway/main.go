// Command gateway is the example gateway firmware: what a vendor copies and
// grows. It is an edge.Gateway with the local MQTT broker (Mosquitto), the
// in-process bus, the function host, triggers, a device, the local HTTP
// API and, with -upstream, a cloud broker reached through an on-disk
// queue; its apps come from a deployment file.
//
// The apps: three functions written for AWS Lambda (Node.js, Python, and Go
// with aws-lambda-go), and, when podman answers (-podman), a container app
// (a web page on 127.0.0.1:8781, built from webapp/ and imported as a
// local image), from examples/gateway/deployment.json. Node.js runs
// on every report of the boiler (a message trigger on
// devices/+/properties), Python on a timer (every 30 s it reads the boiler
// itself through the gateway API and publishes an alarm when it is hot),
// Go on readings LAN devices send (devices/+/telemetry) and on calls.
// Node.js and Go publish their verdicts on outputs/alarms through their
// triggers, Python its alarms itself. Change a version or the
// Node.js function's threshold in that file and watch the gateway swap the
// app without a restart (its status is on
// edgekit/instances/{name}/status).
//
// A fourth app is a device driver written as a continuous Node.js function
// (examples/driver-node): the deployment binds the device
// hall-thermometer to it, which reports on
// devices/hall-thermometer/properties every 2 s and answers get, set and
// the service calibrate through the driver's callbacks.
//
// The device: a boiler, simulated (device/sim), or with -modbus
// tcp://host:port a Modbus one (examples/modbus-sim simulates one) through
// device/modbus, with the thing model in boiler.tsl.json: reports on
// devices/boiler/properties, state on devices/boiler/state, and get/set
// requests on devices/boiler/get and devices/boiler/set (docs/TOPICS.md).
//
// The local broker takes anonymous clients on loopback for what is safe to
// let anyone do there: read the gateway's status, the devices' reports and
// the alarms, send readings (devices/+/telemetry). Calling functions,
// device requests and reading replies take the user "app", whose password
// is in <data>/mqtt-password. The local API listens on -api with the token
// in <data>/api-token.
//
// The settings come from -config (a JSON file, examples/gateway/config.json
// shows every field), then the flags. The data directory defaults to
// /var/lib/edgekit as root, else edgekit in the user's state directory
// ($XDG_STATE_HOME, or ~/.local/state). examples/gateway/edgekit-gateway.service
// runs it under systemd.
//
// It is a module of its own (it links the podman backend); `make gateway`
// builds the Go function and the container app's binary and runs it from
// its directory; it prints what it runs and how to watch it. Built with
// -tags nopodman it has no container apps.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/device/modbus"
	"github.com/edgekit/edgekit/device/sim"
	"github.com/edgekit/edgekit/edge"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
)

// config is the example's settings.
type config struct {
	DataDir    string   `json:"data"`
	Listen     string   `json:"listen"`     // the local MQTT listener
	API        string   `json:"api"`        // the local HTTP API
	Upstream   string   `json:"upstream"`   // an upstream broker URL, or ""
	Name       string   `json:"name"`       // the instance id
	Modbus     string   `json:"modbus"`     // a Modbus TCP endpoint with a boiler, or "" for a simulated one
	Poll       duration `json:"poll"`       // how often the boiler is read
	Deployment string   `json:"deployment"` // the deployment file (see deployment.go)
	Podman     string   `json:"podman"`     // the podman service; container apps run when it answers
	WebApp     string   `json:"webapp"`     // the container app's binary (make gateway builds it)
}

// duration reads "1s" in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

//go:embed boiler.tsl.json
var boilerTSL []byte

func defaults() config {
	return config{DataDir: defaultDataDir(), Listen: "127.0.0.1:1883", API: "127.0.0.1:8780", Name: "gw1",
		Poll: duration(time.Second), Deployment: "deployment.json", Podman: "unix:///run/podman/podman.sock", WebApp: "webapp/web"}
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := settings(os.Args[1:])
	if err != nil {
		log.Error("reading the settings", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, os.Stdout); err != nil {
		log.Error("gateway stopped", "err", err)
		os.Exit(1)
	}
}

// settings reads the flags: -config names a file whose settings replace the
// defaults, and the other flags then override those. The flags are bound to
// the settings themselves, so the file's values are their defaults.
func settings(args []string) (config, error) {
	cfg := defaults()
	flags := func(c *config) (*flag.FlagSet, *string) {
		fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
		file := fs.String("config", "", "a JSON file of settings (see examples/gateway/config.json); flags override it")
		fs.StringVar(&c.DataDir, "data", c.DataDir, "data directory")
		fs.StringVar(&c.Listen, "listen", c.Listen, "local MQTT listener")
		fs.StringVar(&c.API, "api", c.API, "local HTTP API address")
		fs.StringVar(&c.Upstream, "upstream", c.Upstream, "optional upstream broker URL, e.g. mqtt://broker.example:1883")
		fs.StringVar(&c.Name, "name", c.Name, "the gateway's instance id")
		fs.StringVar(&c.Modbus, "modbus", c.Modbus, "Modbus TCP endpoint of a boiler, e.g. tcp://127.0.0.1:5020 (go run ./examples/modbus-sim); default a simulated boiler")
		fs.DurationVar((*time.Duration)(&c.Poll), "poll", time.Duration(c.Poll), "how often the boiler is read")
		fs.StringVar(&c.Deployment, "deployment", c.Deployment, "the deployment file")
		fs.StringVar(&c.Podman, "podman", c.Podman, "the podman service URL; container apps run when it answers")
		fs.StringVar(&c.WebApp, "webapp", c.WebApp, "the container app's binary")
		return fs, file
	}
	// A first look finds -config; the file's settings become the defaults
	// of the second, which the flags override.
	first, file := flags(&config{})
	first.SetOutput(io.Discard)
	if err := first.Parse(args); err != nil && !errors.Is(err, flag.ErrHelp) {
		return cfg, err
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err == nil {
			err = json.Unmarshal(b, &cfg)
		}
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", *file, err)
		}
	}
	second, _ := flags(&cfg)
	if err := second.Parse(args); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// run runs the gateway until ctx ends.
func run(ctx context.Context, cfg config, log *slog.Logger, out io.Writer) error {
	password, err := appPassword(cfg.DataDir)
	if err != nil {
		return err
	}
	o := &edge.Options{
		DataDir: cfg.DataDir, Instance: cfg.Name, Logger: log,
		Broker: &broker.Options{
			Listeners:         []broker.Listener{{Address: cfg.Listen}},
			Users:             []broker.User{{Name: "app", Password: password}},
			AnonymousLoopback: true,
			ACL:               lanACL(cfg.Name),
		},
		LocalRoutes: localRoutes(cfg.Name),
		API:         &edge.APIOptions{Address: cfg.API},
	}
	if cfg.Upstream != "" {
		o.Upstream = &mqttbus.Options{Brokers: []string{cfg.Upstream}}
	}
	boiler, err := boilerDriver(cfg)
	if err != nil {
		return err
	}
	o.Drivers = []edge.Driver{boiler}
	// Container apps, when podman answers.
	containers := "none: podman does not answer at " + cfg.Podman
	if rt, err := containerRuntime(ctx, cfg); err != nil {
		log.Info("no container apps", "err", err)
	} else {
		o.ContainerRuntime = rt
		containers = "podman at " + cfg.Podman
	}
	// The deployment file, rendered where the gateway watches for it.
	r := &renderer{template: cfg.Deployment, packages: filepath.Join(cfg.DataDir, "example-packages"),
		out: filepath.Join(cfg.DataDir, "deployment.json"), log: log, containers: o.ContainerRuntime != nil}
	g, err := edge.New(o)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	select {
	case <-g.Ready():
	case err := <-done:
		return err
	}
	if err := attachBoiler(ctx, g.Devices(), cfg, boiler.Name); err != nil {
		_ = g.Close(context.Background())
		<-done
		return err
	}
	if _, err := r.render(); err != nil {
		log.Warn("the example's deployment file is not rendered", "err", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watch(wctx)
	}()
	defer func() { stopWatch(); <-watched }()

	if abs, err := filepath.Abs(cfg.Deployment); err == nil {
		cfg.Deployment = abs
	}
	brk := g.Broker().Addrs()[0]
	h, p, _ := net.SplitHostPort(brk)
	dataDir := cfg.DataDir
	fmt.Fprintf(out, "edgekit gateway %q running; local MQTT broker on mqtt://%s, local API on %s\n", cfg.Name, brk, g.APIURL())
	fmt.Fprintf(out, "apps from %s; device boiler (%s); container apps: %s\n", cfg.Deployment, boiler.Name, containers)
	fmt.Fprintf(out, "watch:  mosquitto_sub -V 5 -h %s -p %s -t 'edgekit/instances/%s/status' -t 'devices/+/properties' -t 'outputs/#' -v\n", h, p, cfg.Name)
	fmt.Fprintf(out, "        curl -H \"Authorization: Bearer $(cat %s)\" %s/v1/deployment\n", filepath.Join(dataDir, "api-token"), g.APIURL())
	fmt.Fprintf(out, "call:   curl -H \"Authorization: Bearer $(cat %s)\" -d '{\"device\":\"boiler\",\"temperature\":91}' %s/v1/functions/temperature-alarm-go/invoke\n",
		filepath.Join(dataDir, "api-token"), g.APIURL())
	fmt.Fprintf(out, "        mosquitto_rr -V 5 -h %s -p %s -u app -P \"$(cat %s)\" -t functions/temperature-alarm-python/invoke -e replies/me -D PUBLISH correlation-data 1 -m '{\"device\":\"boiler\",\"temperature\":91}'\n",
		h, p, filepath.Join(dataDir, "mqtt-password"))
	fmt.Fprintf(out, "swap:   edit %s (a version, or the Node.js function's threshold) and watch the status\n", cfg.Deployment)
	err = <-done
	fmt.Fprintln(out, "gateway stopped")
	return err
}

// appPassword is the local broker's "app" user's password, kept in the
// data directory.
func appPassword(dataDir string) (string, error) {
	if err := edge.PrepareDataDir(dataDir); err != nil {
		return "", err
	}
	return edge.Secret(filepath.Join(dataDir, "mqtt-password"))
}

// boilerDriver is the boiler's driver: Modbus when an endpoint is given,
// else simulated.
func boilerDriver(cfg config) (edge.Driver, error) {
	if cfg.Modbus != "" {
		return edge.Driver{Name: "modbus", Driver: modbus.New()}, nil
	}
	return edge.Driver{Name: "sim", Driver: sim.New()}, nil
}

// attachBoiler attaches the boiler: the thing model in boiler.tsl.json,
// with the register map of examples/modbus-sim or a simulated drift.
func attachBoiler(ctx context.Context, devices *device.Manager, cfg config, driver string) error {
	model, err := device.ParseTSL(boilerTSL)
	if err != nil {
		return err
	}
	every := time.Duration(cfg.Poll)
	var devCfg []byte
	var poll []device.PollGroup
	if driver == "modbus" {
		devCfg, _ = json.Marshal(modbus.Config{Endpoint: cfg.Modbus, Unit: 1, Timeout: "1s", Properties: map[string]modbus.Register{
			"temperature": {Table: "input", Address: 0, Type: "int16", Scale: 0.1},
			"setpoint":    {Table: "holding", Address: 10},
			"burner":      {Table: "coil", Address: 0},
		}})
		poll = []device.PollGroup{{Properties: []string{"temperature", "setpoint", "burner"}, Every: every}}
	} else {
		devCfg, _ = json.Marshal(sim.Config{Interval: every.String(), Values: map[string]any{"temperature": 78.0, "setpoint": 60}})
	}
	if err := devices.Attach(ctx, driver, device.Device{Name: "boiler", Model: model, Config: devCfg}, poll); err != nil {
		return fmt.Errorf("the boiler: %w", err)
	}
	return nil
}

// localRoutes are the gateway's defaults, and its status out to the LAN.
func localRoutes(instance string) *edge.Routes {
	r := edge.DefaultLocalRoutes()
	r.Out = append(r.Out, bridge.Route{Filter: edge.StatusTopic(instance), QoS: bus.AtLeastOnce})
	r.In = append(r.In, bridge.Route{Filter: "devices/+/telemetry", QoS: bus.AtLeastOnce})
	return r
}

// lanACL is what each client of the local broker may do; anonymous
// clients (loopback only) may read the gateway's status, the devices'
// notices and the alarms, and send readings, nothing more.
func lanACL(instance string) []broker.ACLRule {
	return []broker.ACLRule{
		{Access: broker.Read, Topic: edge.StatusTopic(instance)},
		{Access: broker.Read, Topic: "devices/+/properties"},
		{Access: broker.Read, Topic: "devices/+/state"},
		{Access: broker.Read, Topic: "devices/+/events/#"},
		{Access: broker.Read, Topic: "outputs/#"},
		{Access: broker.Write, Topic: "devices/+/telemetry"},
		{User: "app", Access: broker.Read, Topic: edge.StatusTopic(instance)},
		{User: "app", Access: broker.Read, Topic: "outputs/#"},
		{User: "app", Access: broker.ReadWrite, Topic: "functions/#"},
		{User: "app", Access: broker.ReadWrite, Topic: "devices/#"},
		{User: "app", Access: broker.ReadWrite, Topic: "replies/#"},
	}
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
