// Package metrics exposes a function host's figures as Prometheus
// collectors, on a registry the caller passes (never the global one). It is
// its own package so that importing package function does not bring in the
// Prometheus client.
//
//	reg := prometheus.NewRegistry()
//	metrics.Register(reg, host)
//
// Every scrape reads host.List(): counters since each function was first
// deployed, the duration histogram, queue depth, instances by state, and
// each out-of-process instance's CPU time and resident memory from /proc.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgekit/edgekit/function"
)

// Register adds a collector for h to reg.
func Register(reg prometheus.Registerer, h *function.Host) error {
	return reg.Register(newCollector(h))
}

type collector struct {
	h                                                      *function.Host
	invocations, errors, throttles, timeouts, coldStarts   *prometheus.Desc
	duration, queue, instances, instanceCPU, instanceResid *prometheus.Desc
}

func newCollector(h *function.Host) *collector {
	fn := []string{"function"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("edgekit_function_"+name, help, labels, nil)
	}
	return &collector{
		h:             h,
		invocations:   d("invocations_total", "Invocations answered (a result, an error or a timeout).", fn...),
		errors:        d("errors_total", "Invocations the function answered with an error.", fn...),
		throttles:     d("throttles_total", "Invocations refused because the queue was full.", fn...),
		timeouts:      d("timeouts_total", "Invocations that passed their deadline.", fn...),
		coldStarts:    d("cold_starts_total", "Instances started.", fn...),
		duration:      d("duration_seconds", "Invocation durations.", fn...),
		queue:         d("queue_depth", "Invocations waiting for an instance.", fn...),
		instances:     d("instances", "Instances by state.", "function", "state"),
		instanceCPU:   d("instance_cpu_seconds_total", "CPU time of an out-of-process instance.", "function", "instance"),
		instanceResid: d("instance_resident_bytes", "Resident memory of an out-of-process instance.", "function", "instance"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.invocations, c.errors, c.throttles, c.timeouts, c.coldStarts, c.duration, c.queue, c.instances, c.instanceCPU, c.instanceResid} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.h.List() {
		name := st.Name
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), name)
		}
		counter(c.invocations, st.Stats.Invocations)
		counter(c.errors, st.Stats.Errors)
		counter(c.throttles, st.Stats.Throttles)
		counter(c.timeouts, st.Stats.Timeouts)
		counter(c.coldStarts, st.Stats.ColdStarts)

		h := st.Stats.Duration
		buckets := make(map[float64]uint64, len(h.Bounds))
		var cum uint64
		for i, ub := range h.Bounds {
			cum += h.Counts[i]
			buckets[ub] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.duration, h.Count, h.Sum.Seconds(), buckets, name)
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(st.QueueDepth), name)

		byState := map[function.InstanceState]int{function.InstanceIdle: 0, function.InstanceBusy: 0, function.InstanceStuck: 0}
		for _, i := range st.Instances {
			byState[i.State]++
			if i.PID != 0 {
				ch <- prometheus.MustNewConstMetric(c.instanceCPU, prometheus.CounterValue, i.CPU.Seconds(), name, i.ID)
				ch <- prometheus.MustNewConstMetric(c.instanceResid, prometheus.GaugeValue, float64(i.RSS), name, i.ID)
			}
		}
		for state, n := range byState {
			ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(n), name, string(state))
		}
	}
}
