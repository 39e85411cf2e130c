// Command busbench runs the bus scenarios of package busbench in
// interleaved rounds against one Mosquitto it starts through edge/broker,
// and prints medians and ratios against the baselines measured in the same
// run: bare paho.golang for mqttbus, mqttbus for the bridge.
//
//	go run ./bench/busbench/cmd/busbench -rounds 7
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/edgekit/edgekit/bench/busbench"
	"github.com/edgekit/edgekit/edge/broker"
)

func main() {
	rounds := flag.Int("rounds", 5, "interleaved rounds")
	nLat := flag.Int("latency-n", 2000, "messages per latency sample")
	nThr := flag.Int("throughput-n", 20000, "messages per throughput sample")
	flag.Parse()
	if err := run(*rounds, *nLat, *nThr); err != nil {
		fmt.Fprintln(os.Stderr, "busbench:", err)
		os.Exit(1)
	}
}

type key struct{ metric, target string }

func run(rounds, nLat, nThr int) error {
	dir, err := os.MkdirTemp("", "busbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	brk, err := broker.New(&broker.Options{DataDir: dir, Listeners: []broker.Listener{{Address: "127.0.0.1:0"}}, DisablePersistence: true})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := brk.Start(ctx); err != nil {
		return err
	}
	defer brk.Close(ctx)
	u := brk.URL().String()
	targets := []busbench.Target{busbench.Paho(u), busbench.MQTTBus(u, dir+"/q1"), busbench.Bridged(u, dir+"/q2"), busbench.OneClient(u, dir+"/q3"), busbench.Membus()}

	samples := map[key][]float64{}
	add := func(metric, target string, v float64) { k := key{metric, target}; samples[k] = append(samples[k], v) }
	for r := range rounds {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", r+1, rounds)
		for _, t := range targets {
			for _, qos := range []byte{0, 1} {
				p50, p99, err := busbench.Latency(t, qos, nLat)
				if err != nil {
					return err
				}
				add(fmt.Sprintf("latency p50 µs qos%d", qos), t.Name, us(p50))
				add(fmt.Sprintf("latency p99 µs qos%d", qos), t.Name, us(p99))
				rate, delivered, err := busbench.Throughput(t, qos, nThr)
				if err != nil {
					return err
				}
				add(fmt.Sprintf("throughput msg/s qos%d", qos), t.Name, rate)
				add(fmt.Sprintf("delivered %% qos%d", qos), t.Name, delivered*100)
			}
		}
	}

	fmt.Printf("busbench: %d rounds, %d-byte messages, latency n=%d, throughput n=%d, %s\n\n", rounds, busbench.PayloadSize, nLat, nThr, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| metric | paho (baseline) | mqttbus | mqttbus / paho | bridged | bridged / mqttbus | one-client | membus |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	var metrics []string
	for k := range samples {
		if !slices.Contains(metrics, k.metric) {
			metrics = append(metrics, k.metric)
		}
	}
	slices.Sort(metrics)
	for _, m := range metrics {
		p, q, b, one, mem := median(samples[key{m, "paho"}]), median(samples[key{m, "mqttbus"}]), median(samples[key{m, "bridged"}]), median(samples[key{m, "one-client"}]), median(samples[key{m, "membus"}])
		fmt.Printf("| %s | %.1f | %.1f | %.2f× | %.1f | %.2f× | %.1f | %.1f |\n", m, p, q, q/p, b, b/q, one, mem)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
