// Command gateway is the example gateway firmware: what a vendor copies and
// grows. For now it runs the local MQTT broker (Mosquitto, through
// edge/broker), an in-process bus for the gateway's own flows, and a bridge
// between the two; with -upstream it also bridges to a cloud broker through
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
//
// Run it with `make gateway` and try, from another terminal:
//
//	mosquitto_sub -V 5 -t 'gateway/#' -v
//	mosquitto_pub -V 5 -t commands/hello -m 'hi'
//	mosquitto_rr  -V 5 -t commands/echo -e replies/me -m 'ping'
package main

import (
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
	"syscall"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/bus/membus"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
)

type config struct {
	dataDir  string
	listen   string
	upstream string
	name     string
	status   time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dataDir, "data", filepath.Join(os.TempDir(), "edgekit-gateway"), "data directory (broker config and persistence, uplink queue)")
	flag.StringVar(&cfg.listen, "listen", "127.0.0.1:1883", "local MQTT listener")
	flag.StringVar(&cfg.upstream, "upstream", "", "optional upstream broker URL, e.g. mqtt://broker.example:1883")
	flag.StringVar(&cfg.name, "name", "gw1", "gateway name (MQTT client ids, upstream topic prefix)")
	flag.DurationVar(&cfg.status, "status-every", 10*time.Second, "status publish interval")
	flag.Parse()

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
		In:     []bridge.Route{{Filter: "commands/#", QoS: bus.AtLeastOnce}},
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
