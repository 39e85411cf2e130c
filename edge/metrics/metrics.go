// Package metrics exposes the gateway's parts as Prometheus collectors on a
// registry the caller passes (never the global one): the bridges and their
// queues, the local broker, the triggers, the devices, the container apps
// and the deployments. Package function/metrics covers the function host.
// Every scrape reads the parts' status; nothing is counted twice.
//
// The gateway (package edge) registers them when Options.Metrics is set;
// firmware that composes parts itself calls Register with what it has.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgekit/edgekit/container"
	"github.com/edgekit/edgekit/device"
	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus/bridge"
	"github.com/edgekit/edgekit/edge/reconcile"
	"github.com/edgekit/edgekit/trigger"
)

// Parts are what the collectors read; nil parts are left out.
type Parts struct {
	// Bridges by name ("lan", "uplink").
	Bridges    map[string]*bridge.Bridge
	Broker     *broker.Broker
	Triggers   *trigger.Set
	Devices    *device.Manager
	Containers *container.Manager
	Reconciler *reconcile.Reconciler
}

// Register adds a collector of p to reg.
func Register(reg prometheus.Registerer, p Parts) error { return reg.Register(newCollector(p)) }

type collector struct {
	p     Parts
	descs map[string]*prometheus.Desc
}

func newCollector(p Parts) *collector {
	c := &collector{p: p, descs: map[string]*prometheus.Desc{}}
	d := func(name, help string, labels ...string) {
		c.descs[name] = prometheus.NewDesc("edgekit_"+name, help, labels, nil)
	}
	d("bridge_forwarded_total", "Messages a bridge forwarded.", "bridge", "direction")
	d("bridge_dropped_total", "Messages the far side refused.", "bridge", "direction")
	d("bridge_queued_messages", "Messages waiting in the far side's outbound queue.", "bridge", "direction")
	d("bridge_queue_damaged_total", "Stretches of the far side's queue found damaged.", "bridge", "direction")
	d("broker_up", "Whether the local broker runs (1) or not (0).")
	d("broker_restarts_total", "Restarts of the local broker after it died.")
	d("trigger_phase", "Each trigger's phase (1 for the one it is in).", "trigger", "phase")
	d("devices", "Attached devices by state.", "state")
	d("container_app_state", "Each container app's state (1 for the one it is in).", "app", "state")
	d("container_restarts_total", "Restarts of a container app.", "app")
	d("container_oom_kills_total", "Processes of a container app the OOM killer killed.", "app")
	d("deployment_revision", "The revision of the newest deployment taken.")
	d("deployment_running_revision", "The revision of the deployment the apps run.")
	d("deployment_outcome", "The newest deployment's outcome (1 for it).", "outcome")
	d("app_phase", "Each app's phase in the newest deployment (1 for the one it is in).", "app", "phase")
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	emit := func(name string, kind prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], kind, v, labels...)
	}
	gauge := func(name string, v float64, labels ...string) { emit(name, prometheus.GaugeValue, v, labels...) }
	counter := func(name string, v float64, labels ...string) { emit(name, prometheus.CounterValue, v, labels...) }
	for name, br := range c.p.Bridges {
		st := br.Stats()
		for dir, s := range map[string]bridge.DirectionStats{"out": st.Out, "in": st.In} {
			counter("bridge_forwarded_total", float64(s.Forwarded), name, dir)
			counter("bridge_dropped_total", float64(s.Dropped), name, dir)
			gauge("bridge_queued_messages", float64(s.Queued), name, dir)
			counter("bridge_queue_damaged_total", float64(s.QueueDamaged), name, dir)
		}
	}
	if b := c.p.Broker; b != nil {
		st := b.Status()
		up := 0.0
		if st.State == broker.StateRunning {
			up = 1
		}
		gauge("broker_up", up)
		counter("broker_restarts_total", float64(st.Restarts))
	}
	if t := c.p.Triggers; t != nil {
		for _, st := range t.Status() {
			gauge("trigger_phase", 1, st.Config.Name, string(st.Phase))
		}
	}
	if m := c.p.Devices; m != nil {
		byState := map[device.State]int{device.Online: 0, device.Offline: 0}
		for _, name := range m.Devices() {
			if sh, err := m.Shadow(name); err == nil {
				byState[sh.State]++
			}
		}
		for s, n := range byState {
			gauge("devices", float64(n), string(s))
		}
	}
	if m := c.p.Containers; m != nil {
		for _, st := range m.Status() {
			gauge("container_app_state", 1, st.Name, string(st.State))
			counter("container_restarts_total", float64(st.Restarts), st.Name)
			counter("container_oom_kills_total", float64(st.OOMKills), st.Name)
		}
	}
	if r := c.p.Reconciler; r != nil {
		st := r.Status()
		gauge("deployment_revision", float64(st.Revision))
		running := 0.0
		if st.Running != nil {
			running = float64(st.Running.Revision)
		}
		gauge("deployment_running_revision", running)
		if st.Outcome != "" {
			gauge("deployment_outcome", 1, string(st.Outcome))
		}
		for _, a := range st.Apps {
			gauge("app_phase", 1, a.App, string(a.Phase))
		}
	}
}
