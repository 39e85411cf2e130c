// Command gateway is the example gateway firmware: what a vendor copies and
// grows. It runs the local MQTT broker (Mosquitto, through edge/broker), an
// in-process bus for the gateway's own flows, a bridge between the two, and
// a function host with the example functions (Go with aws-lambda-go,
// Node.js, Python); with -upstream it also bridges to a cloud broker through
// an on-disk queue, so uplink data survives outages.
//
// Topics:
//
//	gateway/status      retained status the gateway publishes every 10 s
//	gateway/#           everything under it goes up to the upstream broker
//	commands/#          MQTT clients send commands in; the gateway logs them
//	commands/echo       request/response: the payload comes back on the
//	                    request's response topic with its correlation data
//	replies/#           response topics: forwarded out to MQTT clients
//	functions/{name}/invoke
//	                    MQTT v5 request/response: the payload is the event,
//	                    the function's result comes back on the response
//	                    topic (user property "error" on failure); without a
//	                    response topic the call is asynchronous
//
// Run it with `make gateway` and try, from another terminal:
//
//	mosquitto_sub -V 5 -t 'gateway/#' -v
//	mosquitto_pub -V 5 -t commands/hello -m 'hi'
//	mosquitto_rr  -V 5 -t commands/echo -e replies/me -m 'ping'
//	mosquitto_rr  -V 5 -t functions/temperature-alarm-python/invoke -e replies/me \
//	              -m '{"device":"boiler","temperature":91}'
package main

import (
	"bytes"
	"context"
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
	"strings"
	"syscall"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/function"
	"github.com/edgekit/edgekit/invoke"
)

type config struct {
	dataDir   string
	listen    string
	upstream  string
	name      string
	status    time.Duration
	functions []string // directories holding function.json and the code
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dataDir, "data", filepath.Join(os.TempDir(), "edgekit-gateway"), "data directory (broker config and persistence, uplink queue)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:1883", "local MQTT listener")
	flag.StringVar(&cfg.upstream, "upstream", "", "optional upstream broker URL, e.g. mqtt://broker.example:1883")
	flag.StringVar(&cfg.name, "name", "gw1", "gateway name (MQTT client ids, upstream topic prefix)")
	flag.DurationVar(&cfg.status, "status-every", 10*time.Second, "status publish interval")
	functions := flag.String("functions", "examples/function-go,examples/function-node,examples/function-python", "comma-separated function directories (each with a function.json) to deploy")
	flag.Parse()
	if *functions != "" {
		cfg.functions = strings.Split(*functions, ",")
	}

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

	brk, err := broker.New(&broker.Options{
		DataDir:   filepath.Join(cfg.dataDir, "broker"),
		Listeners: []broker.Listener{{Address: cfg.listen}},
		Logger:    log.With("part", "mosquitto"),
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
		Name:   cfg.name + "-lan",
		Out:    []bridge.Route{{Filter: "gateway/#", QoS: bus.AtLeastOnce}, {Filter: "replies/#", QoS: bus.AtLeastOnce}},
		In:     []bridge.Route{{Filter: "commands/#", QoS: bus.AtLeastOnce}, {Filter: "functions/#", QoS: bus.AtLeastOnce}},
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

	host, err := function.New(&function.Options{DataDir: filepath.Join(cfg.dataDir, "functions"), Logger: log})
	if err != nil {
		return err
	}
	closers = append(closers, host.Close)
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
	if _, err := local.Subscribe(ctx, "functions/+/invoke", func(ctx context.Context, m *bus.Message) {
		callFunction(ctx, local, host, log, m)
	}, nil); err != nil {
		return err
	}

	if _, err := local.Subscribe(ctx, "commands/#", func(ctx context.Context, m *bus.Message) {
		if m.Topic == "commands/echo" {
			echo(ctx, local, log, m)
			return
		}
		log.Info("command received", "topic", m.Topic, "payload", string(m.Payload))
	}, nil); err != nil {
		return err
	}

	fmt.Fprintf(out, "edgekit gateway %q running; local MQTT broker on %s\n", cfg.name, brk.URL())
	h, p, _ := net.SplitHostPort(brk.Addrs()[0])
	fmt.Fprintf(out, "try:  mosquitto_sub -V 5 -h %s -p %s -t 'gateway/#' -v\n", h, p)
	fmt.Fprintf(out, "      mosquitto_rr  -V 5 -h %s -p %s -t commands/echo -e replies/me -m ping\n", h, p)

	started := time.Now()
	tick := time.NewTicker(cfg.status)
	defer tick.Stop()
	for {
		status, _ := json.Marshal(map[string]any{
			"gateway":        cfg.name,
			"uptime_seconds": int(time.Since(started).Seconds()),
			"broker":         brk.Status().State,
			"uplink":         cfg.upstream != "",
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

// callFunction answers functions/{name}/invoke: the function's result goes
// to the response topic, with the request's correlation data.
func callFunction(ctx context.Context, b bus.Bus, host *function.Host, log *slog.Logger, req *bus.Message) {
	name := strings.Split(req.Topic, "/")[1]
	in := invoke.Request{Payload: req.Payload, ContentType: req.ContentType, Source: map[string]string{"type": "mqtt", "topic": req.Topic}}
	if req.ResponseTopic == "" {
		if _, err := host.InvokeAsync(ctx, name, in); err != nil {
			log.Warn("async invocation refused", "function", name, "err", err)
		}
		return
	}
	reply := &bus.Message{Topic: req.ResponseTopic, QoS: bus.AtLeastOnce, CorrelationData: req.CorrelationData, ContentType: "application/json"}
	resp, err := host.Invoke(ctx, name, in)
	if err != nil {
		reply.Payload, _ = json.Marshal(map[string]string{"error": err.Error()})
		reply.UserProperties = []bus.UserProperty{{Key: "error", Value: err.Error()}}
	} else {
		reply.Payload = resp.Payload
	}
	if err := b.Publish(ctx, reply); err != nil {
		log.Warn("function reply", "function", name, "err", err)
	}
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
